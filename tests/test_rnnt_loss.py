"""scripts/rnnt_loss.py against every alignment summed by brute force, and its gradient."""

from __future__ import annotations

import itertools

import torch

from scripts.rnnt_loss import rnnt_loss


def brute_force(log_probs: torch.Tensor, targets: list[int], frames: int, blank: int) -> float:
    """-log of the summed probability of every alignment: T blanks and U labels in any
    order, ending with a blank at the last frame (each blank advances t, a label u)."""
    labels = len(targets)
    total = []
    for emit_positions in itertools.combinations(range(frames - 1 + labels), labels):
        t = u = 0
        score = 0.0
        for step in range(frames - 1 + labels):
            if step in emit_positions:
                score += float(log_probs[t, u, targets[u]])
                u += 1
            else:
                score += float(log_probs[t, u, blank])
                t += 1
        score += float(log_probs[frames - 1, labels, blank])
        total.append(score)
    return -float(torch.logsumexp(torch.tensor(total, dtype=torch.float64), dim=0))


def test_matches_the_sum_over_all_alignments_with_padding() -> None:
    generator = torch.Generator().manual_seed(0)
    batch, frames, labels, vocab, blank = 3, 5, 3, 4, 3
    logits = torch.randn(batch, frames, labels + 1, vocab, generator=generator, dtype=torch.float64)
    log_probs = logits.log_softmax(-1)
    targets = torch.tensor([[0, 1, 2], [2, 2, 0], [1, 0, 0]])
    frame_lengths = torch.tensor([5, 4, 2])
    target_lengths = torch.tensor([3, 2, 1])
    ours = rnnt_loss(log_probs, targets, frame_lengths, target_lengths, blank)
    for row in range(batch):
        t, u = int(frame_lengths[row]), int(target_lengths[row])
        expected = brute_force(log_probs[row], targets[row, :u].tolist(), t, blank)
        assert abs(float(ours[row]) - expected) < 1e-9


def test_gradient_is_the_analytic_one() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 3, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2], [3, 0]])

    def loss(x: torch.Tensor) -> torch.Tensor:
        lengths = torch.tensor([4, 3]), torch.tensor([2, 1])
        return rnnt_loss(x.log_softmax(-1), targets, *lengths, blank=4).sum()

    assert torch.autograd.gradcheck(loss, (logits,))
