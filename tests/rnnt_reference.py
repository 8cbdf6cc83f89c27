"""Upstream's greedy RNN-T decoding, written again for the tests from its description.

It follows GigaAM's ``RNNTGreedyDecoding.decode`` step by step, on a checkpoint's own
tensors with torch.nn.functional (its LSTM cell written out: gates i, f, g, o), not through
export/transducer.py: a sample with no state yet is "fresh" and its prediction network
sees a zero vector and no state; every step recomputes the prediction from (last label,
state before it); a blank moves to the next frame; at most ``max_symbols`` tokens a frame.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor


class UpstreamRnnt:
    """A state_dict's RNN-T head under ``prefix`` (GigaAM: ``head.``), keys renamed to
    upstream's module layout by ``names``."""

    def __init__(self, sd: Mapping[str, Tensor], names: Mapping[str, str], layers: int):
        self.sd = {role: sd[key].double() for role, key in names.items() if key in sd}
        self.layers = layers
        self.hidden = self.sd["embed"].shape[1]
        self.blank = self.sd["embed"].shape[0] - 1

    def lstm(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor, Tensor]:
        h = (
            torch.zeros(self.layers, self.hidden, dtype=torch.float64)
            if state is None
            else state[0]
        )
        c = torch.zeros_like(h) if state is None else state[1]
        h_out, c_out = [], []
        for layer in range(self.layers):
            gates = (
                self.sd[f"w_ih{layer}"] @ x + self.sd[f"b_ih{layer}"]
                + self.sd[f"w_hh{layer}"] @ h[layer] + self.sd[f"b_hh{layer}"]
            )  # fmt: skip
            i, f, g, o = gates.chunk(4)
            cell = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g)
            x = torch.sigmoid(o) * torch.tanh(cell)
            h_out.append(x)
            c_out.append(cell)
        return x, torch.stack(h_out), torch.stack(c_out)

    def predict(
        self, label: int | None, state: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if label is None:
            embedded = torch.zeros(self.hidden, dtype=torch.float64)
        else:
            embedded = F.embedding(torch.tensor(label), self.sd["embed"])
        output, h, c = self.lstm(embedded, state)
        return output, (h, c)

    def joint(self, frame: Tensor, prediction: Tensor, activation: str = "relu") -> Tensor:
        hidden = F.linear(frame, self.sd["enc_w"], self.sd["enc_b"])
        hidden = hidden + F.linear(prediction, self.sd["pred_w"], self.sd["pred_b"])
        hidden = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[activation](
            hidden
        )
        return torch.log_softmax(F.linear(hidden, self.sd["out_w"], self.sd["out_b"]), dim=-1)

    def greedy(
        self, encoded: Tensor, max_symbols: int, activation: str = "relu"
    ) -> tuple[list[int], list[int]]:
        """encoded [T, D] → (tokens, their frames)."""
        tokens: list[int] = []
        frames: list[int] = []
        last_label: int | None = None
        state: tuple[Tensor, Tensor] | None = None
        for t in range(encoded.shape[0]):
            frame = encoded[t].double()
            for _ in range(max_symbols):
                prediction, hidden = self.predict(last_label, state)
                best = int(self.joint(frame, prediction, activation).argmax())
                if best == self.blank:
                    break
                tokens.append(best)
                frames.append(t)
                last_label, state = best, hidden
        return tokens, frames


def gigaam_names(layers: int) -> dict[str, str]:
    names = {
        "embed": "head.decoder.embed.weight",
        "enc_w": "head.joint.enc.weight",
        "enc_b": "head.joint.enc.bias",
        "pred_w": "head.joint.pred.weight",
        "pred_b": "head.joint.pred.bias",
        "out_w": "head.joint.joint_net.1.weight",
        "out_b": "head.joint.joint_net.1.bias",
    }
    return names | _lstm_names("head.decoder.lstm.", layers)


def nemo_names(layers: int, joint_dropout: bool) -> dict[str, str]:
    out = f"joint.joint_net.{2 if joint_dropout else 1}."
    names = {
        "embed": "decoder.prediction.embed.weight",
        "enc_w": "joint.enc.weight",
        "enc_b": "joint.enc.bias",
        "pred_w": "joint.pred.weight",
        "pred_b": "joint.pred.bias",
        "out_w": out + "weight",
        "out_b": out + "bias",
    }
    return names | _lstm_names("decoder.prediction.dec_rnn.lstm.", layers)


def _lstm_names(prefix: str, layers: int) -> dict[str, str]:
    names = {}
    for layer in range(layers):
        for kind in ("ih", "hh"):
            names[f"w_{kind}{layer}"] = f"{prefix}weight_{kind}_l{layer}"
            names[f"b_{kind}{layer}"] = f"{prefix}bias_{kind}_l{layer}"
    return names
