"""The RNN-T loss (Graves 2012) in plain PyTorch, for training the demo transducer.

torchaudio's ``rnnt_loss`` cannot be installed here and torch has none, so the forward
variable is computed with autograd ops. With ``blank[t, u]`` and ``emit[t, u]`` the joint's
log-probs of the blank and of label ``u + 1`` at lattice node (t, u):

    alpha[0, 0] = 0
    alpha[t, u] = logaddexp(alpha[t-1, u] + blank[t-1, u], alpha[t, u-1] + emit[t, u-1])
    loss = -(alpha[T-1, U] + blank[T-1, U])

For a fixed u the recursion over t is linear in the log semiring, so with
``B[t] = sum_{s<t} blank[s, u]`` it has the closed form
``alpha[t, u] = B[t] + logcumsumexp_t(e[t] - B[t])`` (``e[t]`` the term from u - 1): one
``logcumsumexp`` per label position, each vectorised over the batch and time.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rnnt_loss(
    log_probs: Tensor,
    targets: Tensor,
    frame_lengths: Tensor,
    target_lengths: Tensor,
    blank: int,
) -> Tensor:
    """Per-utterance negative log-likelihood [B].

    log_probs [B, T, U + 1, V] (log-softmax over V); targets [B, U] (padded with any valid
    label); frame_lengths, target_lengths [B]. Padding beyond an utterance's lengths never
    reaches its result: the recursion only moves forward in t and u.
    """
    batch, frames, nodes, _ = log_probs.shape
    blank_lp = log_probs[..., blank]  # [B, T, U + 1]
    emit_lp = log_probs[:, :, :-1].gather(
        -1, targets[:, None, :, None].expand(batch, frames, nodes - 1, 1)
    )[..., 0]  # [B, T, U]
    # B[t] for every u: the exclusive cumulative sum over time of the blank log-probs.
    blank_prefix = torch.cumsum(blank_lp, dim=1) - blank_lp
    columns = []
    column = blank_prefix[:, :, 0]  # alpha[t, 0]: blanks only
    columns.append(column)
    for u in range(1, nodes):
        arriving = column + emit_lp[:, :, u - 1]  # alpha[t, u-1] + emit[t, u-1]
        prefix = blank_prefix[:, :, u]
        column = prefix + torch.logcumsumexp(arriving - prefix, dim=1)
        columns.append(column)
    alpha = torch.stack(columns, dim=2)  # [B, T, U + 1]
    rows = torch.arange(batch)
    last_t, last_u = frame_lengths - 1, target_lengths
    return -(alpha[rows, last_t, last_u] + blank_lp[rows, last_t, last_u])
