"""Conformer CTC in plain PyTorch, in the state_dict layout GigaAM and NeMo share.

GigaAM's encoder descends from NeMo's, so one set of module names loads both
(``load_state_dict(strict=True)`` after the loaders rename the CTC head):

- ``encoder.pre_encode.conv.<i>`` / ``encoder.pre_encode.out`` — strided subsampling;
- ``encoder.layers.<n>.{norm_feed_forward1, feed_forward1.linear1|linear2, norm_self_att,
  self_attn.linear_q|k|v|out[, linear_pos, pos_bias_u, pos_bias_v], norm_conv,
  conv.pointwise_conv1|depthwise_conv|batch_norm|pointwise_conv2, norm_feed_forward2,
  feed_forward2.*, norm_out}`` — macaron FF/2 → self-attention → conv → FF/2 → LayerNorm;
- ``decoder.decoder_layers.0`` — 1x1 conv to the vocabulary + blank, then log-softmax.

Where the two upstreams differ the spec says which: the subsampling stack, rotary
(GigaAM) or relative-position (NeMo, GigaAM v1) attention, and NeMo's xscaling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .quartznet import CheckpointError

Subsampling = Literal["conv1d", "conv2d", "striding", "dw_striding"]


@dataclass(frozen=True)
class ConformerSpec:
    feat_in: int
    n_layers: int
    d_model: int
    n_heads: int
    num_classes: int  # vocabulary + blank
    ff_expansion_factor: int = 4
    conv_kernel_size: int = 31
    conv_norm: Literal["batch_norm", "layer_norm"] = "batch_norm"
    attention: Literal["rotary", "rel_pos"] = "rotary"
    # NeMo scales the subsampled input by sqrt(d_model) before the layers.
    xscaling: bool = False
    # conv1d / conv2d: GigaAM's StridingSubsampling; striding / dw_striding: NeMo's.
    subsampling: Subsampling = "conv2d"
    subsampling_factor: int = 4
    subsampling_kernel: int = 3
    subsampling_channels: int = -1  # -1: d_model
    pos_emb_max_len: int = 5000

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise CheckpointError(f"d_model {self.d_model} is not divisible by {self.n_heads}")
        if self.subsampling_factor not in (2, 4, 8, 16):
            raise CheckpointError(f"subsampling factor {self.subsampling_factor} is unsupported")
        if self.conv_kernel_size % 2 == 0:
            raise CheckpointError("only odd (symmetric, non-causal) conv kernels are supported")

    @property
    def channels(self) -> int:
        return (
            self.d_model if self.subsampling_channels in (-1, None) else self.subsampling_channels
        )


class StridedSubsampling(nn.Module):
    """Stride-2 convolutions with ReLU, ``log2(factor)`` times; lengths follow each stage.

    conv1d (GigaAM v3): Conv1d over time with the mel bins as channels.
    conv2d (GigaAM v1/v2) and striding (NeMo): Conv2d stack, then Linear(channels * freq).
    dw_striding (NeMo FastConformer): Conv2d, then depthwise + pointwise Conv2d pairs.
    Frames past each length are zeroed before every convolution, as current GigaAM does,
    so a padded batch gives each clip its unbatched result.
    """

    def __init__(self, spec: ConformerSpec) -> None:
        super().__init__()
        self.kind = spec.subsampling
        self.kernel = spec.subsampling_kernel
        self.padding = (self.kernel - 1) // 2
        self.stages = int(math.log2(spec.subsampling_factor))
        channels = spec.channels
        layers: list[nn.Module] = []
        if self.kind == "conv1d":
            in_channels = spec.feat_in
            for _ in range(self.stages):
                layers += [nn.Conv1d(in_channels, channels, self.kernel, 2, self.padding)]
                layers += [nn.ReLU()]
                in_channels = channels
        elif self.kind in ("conv2d", "striding"):
            in_channels = 1
            for _ in range(self.stages):
                layers += [nn.Conv2d(in_channels, channels, self.kernel, 2, self.padding)]
                layers += [nn.ReLU()]
                in_channels = channels
        else:  # dw_striding
            layers += [nn.Conv2d(1, channels, self.kernel, 2, self.padding), nn.ReLU()]
            for _ in range(self.stages - 1):
                layers += [
                    nn.Conv2d(channels, channels, self.kernel, 2, self.padding, groups=channels),
                    nn.Conv2d(channels, channels, 1),
                    nn.ReLU(),
                ]
        self.conv = nn.Sequential(*layers)
        if self.kind != "conv1d":
            freq = spec.feat_in
            for _ in range(self.stages):
                freq = self.stage_length(freq)
            self.out = nn.Linear(channels * freq, spec.d_model)

    def stage_length(self, length: int) -> int:
        return (length + 2 * self.padding - self.kernel) // 2 + 1

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for _ in range(self.stages):
            lengths = self._stage_lengths(lengths)
        return lengths

    def _stage_lengths(self, lengths: Tensor) -> Tensor:
        reduced = torch.div(lengths + 2 * self.padding - self.kernel, 2, rounding_mode="floor")
        return reduced + 1

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """features [B, T, F] → [B, T', d_model]."""
        x = features.transpose(1, 2) if self.kind == "conv1d" else features.unsqueeze(1)
        current = lengths
        x = _zero_past(x, current)
        for module in self.conv:
            x = module(x)
            if isinstance(module, nn.Conv1d | nn.Conv2d) and module.stride[0] == 2:
                current = self._stage_lengths(current)
            # After every module, not only the strided ones: dw_striding's pointwise conv
            # writes its bias into the padded frames, which NeMo (MaskedConvSequential)
            # zeroes again before the next depthwise conv reads them.
            x = _zero_past(x, current)
        if self.kind == "conv1d":
            return x.transpose(1, 2), current
        batch, _, frames, _ = x.shape
        return self.out(x.transpose(1, 2).reshape(batch, frames, -1)), current


def _zero_past(x: Tensor, lengths: Tensor) -> Tensor:
    """Zero the time steps (axis 2) at or beyond each item's length."""
    steps = torch.arange(x.shape[2], device=x.device)
    pad = steps[None, :] >= lengths[:, None]
    shape = [pad.shape[0], 1, pad.shape[1]] + [1] * (x.dim() - 3)
    return x.masked_fill(pad.reshape(shape), 0.0)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.activation = nn.SiLU()
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.linear2(self.activation(self.linear1(x)))
        return out


class ConvModule(nn.Module):
    """Pointwise → GLU → depthwise → norm → SiLU → pointwise, padded frames zeroed.

    The 1x1 convolutions keep upstream's Conv1d parameters but run as matrix products on
    [B, T, C] (the same maths): in ONNX they become MatMul, which int8 kernels serve well,
    and two transposes disappear.
    """

    def __init__(self, spec: ConformerSpec) -> None:
        super().__init__()
        d_model, kernel = spec.d_model, spec.conv_kernel_size
        self.pointwise_conv1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise_conv = nn.Conv1d(
            d_model, d_model, kernel, padding=(kernel - 1) // 2, groups=d_model
        )
        self.layer_norm = spec.conv_norm == "layer_norm"
        self.batch_norm: nn.Module = (
            nn.LayerNorm(d_model) if self.layer_norm else nn.BatchNorm1d(d_model)
        )
        self.activation = nn.SiLU()
        self.pointwise_conv2 = nn.Conv1d(d_model, d_model, 1)

    def forward(self, x: Tensor, pad_mask: Tensor) -> Tensor:
        x = nn.functional.glu(_pointwise(self.pointwise_conv1, x), dim=-1)
        x = self.depthwise_conv(x.masked_fill(pad_mask[:, :, None], 0.0).transpose(1, 2))
        if self.layer_norm:
            x = self.batch_norm(x.transpose(1, 2))
        else:
            x = self.batch_norm(x).transpose(1, 2)
        return _pointwise(self.pointwise_conv2, self.activation(x))


def _pointwise(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """A kernel-1 Conv1d applied to [B, T, C_in] as a matrix product → [B, T, C_out]."""
    return nn.functional.linear(x, conv.weight.squeeze(-1), conv.bias)


class SelfAttention(nn.Module):
    """Multi-head self-attention with rotary or Transformer-XL relative positions.

    Rotary (GigaAM): the rotation is applied to the layer input, per head-sized chunk,
    *before* the q/k projections (RotaryPositionMultiHeadAttention), not to q and k.
    Relative (NeMo RelPositionMultiHeadAttention): scores = ((q+u)·k + shift((q+v)·p)) / √d_k.
    Masked scores are set to -10000 and their weights to 0 after the softmax, as upstream.
    """

    def __init__(self, spec: ConformerSpec) -> None:
        super().__init__()
        d_model = spec.d_model
        self.heads = spec.n_heads
        self.d_k = d_model // spec.n_heads
        self.rotary = spec.attention == "rotary"
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        if not self.rotary:
            self.linear_pos = nn.Linear(d_model, d_model, bias=False)
            self.pos_bias_u = nn.Parameter(torch.zeros(self.heads, self.d_k))
            self.pos_bias_v = nn.Parameter(torch.zeros(self.heads, self.d_k))

    def _heads(self, x: Tensor) -> Tensor:
        """[B, T, d_model] → [B, H, T, d_k]."""
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.d_k).transpose(1, 2)

    def forward(self, x: Tensor, pos_emb: Tensor, mask: Tensor) -> Tensor:
        if self.rotary:
            cos, sin = pos_emb[0], pos_emb[1]  # [T, d_k] each
            rotated = _rotate(self._heads(x), cos, sin)
            merged = rotated.transpose(1, 2).reshape(x.shape)
            q = self._heads(self.linear_q(merged))
            k = self._heads(self.linear_k(merged))
            scores = torch.matmul(q, k.transpose(-2, -1) / math.sqrt(self.d_k))
        else:
            q = self._heads(self.linear_q(x))
            k = self._heads(self.linear_k(x))
            p = self._heads(self.linear_pos(pos_emb))  # [1, H, 2T-1, d_k]
            content = torch.matmul(q + self.pos_bias_u[:, None, :], k.transpose(-2, -1))
            position = torch.matmul(q + self.pos_bias_v[:, None, :], p.transpose(-2, -1))
            position = _rel_shift(position)[..., : content.shape[-1]]
            scores = (content + position) / math.sqrt(self.d_k)
        v = self._heads(self.linear_v(x))
        scores = scores.masked_fill(mask[:, None], -10000.0)
        weights = torch.softmax(scores, dim=-1).masked_fill(mask[:, None], 0.0)
        merged_heads = torch.matmul(weights, v).transpose(1, 2).reshape(x.shape)
        out: Tensor = self.linear_out(merged_heads)
        return out


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated_half = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated_half * sin


def _rel_shift(x: Tensor) -> Tensor:
    """Transformer-XL shift: row i of [B, H, T, 2T-1] moves left by T-1-i."""
    batch, heads, rows, cols = x.shape
    x = nn.functional.pad(x, (1, 0))
    return x.reshape(batch, heads, cols + 1, rows)[:, :, 1:].reshape(batch, heads, rows, cols)


class ConformerLayer(nn.Module):
    def __init__(self, spec: ConformerSpec) -> None:
        super().__init__()
        d_model, d_ff = spec.d_model, spec.d_model * spec.ff_expansion_factor
        self.norm_feed_forward1 = nn.LayerNorm(d_model)
        self.feed_forward1 = FeedForward(d_model, d_ff)
        self.norm_self_att = nn.LayerNorm(d_model)
        self.self_attn = SelfAttention(spec)
        self.norm_conv = nn.LayerNorm(d_model)
        self.conv = ConvModule(spec)
        self.norm_feed_forward2 = nn.LayerNorm(d_model)
        self.feed_forward2 = FeedForward(d_model, d_ff)
        self.norm_out = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, pos_emb: Tensor, att_mask: Tensor, pad_mask: Tensor) -> Tensor:
        x = x + 0.5 * self.feed_forward1(self.norm_feed_forward1(x))
        x = x + self.self_attn(self.norm_self_att(x), pos_emb, att_mask)
        x = x + self.conv(self.norm_conv(x), pad_mask)
        x = x + 0.5 * self.feed_forward2(self.norm_feed_forward2(x))
        out: Tensor = self.norm_out(x)
        return out


class ConformerEncoder(nn.Module):
    def __init__(self, spec: ConformerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.pre_encode = StridedSubsampling(spec)
        self.layers = nn.ModuleList(ConformerLayer(spec) for _ in range(spec.n_layers))
        # Upstream precomputes a pos_emb_max_len table (not saved in checkpoints); computing
        # the few rows one input needs keeps a 5000-row constant (30 MB at d_model 768 for
        # rel_pos) out of the ONNX graph and lifts the length limit. Same float32 maths.
        self.register_buffer("frequencies", self._frequencies(spec), persistent=False)

    @staticmethod
    def _frequencies(spec: ConformerSpec) -> Tensor:
        if spec.attention == "rotary":
            # GigaAM: RotaryPositionalEmbedding(d_model // n_heads, base=pos_emb_max_len).
            dim = spec.d_model // spec.n_heads
            return 1.0 / (spec.pos_emb_max_len ** (torch.arange(0, dim, 2).float() / dim))
        exponents = torch.arange(0, spec.d_model, 2).float()
        return torch.exp(exponents * -(math.log(10000.0) / spec.d_model))

    def _positions(self, frames: int, device: torch.device) -> Tensor:
        """Rotary: cos and sin [2, T, d_k]. Relative: [1, 2T-1, d_model] for offsets T-1 … -(T-1),
        sin on even and cos on odd channels."""
        frequencies = self.frequencies
        assert isinstance(frequencies, Tensor)
        if self.spec.attention == "rotary":
            angles = torch.arange(frames, device=device).float()[:, None] * frequencies
            angles = torch.cat((angles, angles), dim=-1)
            return torch.stack((angles.cos(), angles.sin()))
        offsets = torch.arange(frames - 1, -frames, -1, device=device).float()[:, None]
        angles = offsets * frequencies
        table = torch.stack((angles.sin(), angles.cos()), dim=-1).reshape(angles.shape[0], -1)
        return table[None]

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """features [B, F, T] → encoded [B, T', d_model], lengths [B]."""
        x, lengths = self.pre_encode(features.transpose(1, 2), lengths)
        if self.spec.xscaling:
            x = x * math.sqrt(self.spec.d_model)
        frames = x.shape[1]
        valid = torch.arange(frames, device=x.device)[None, :] < lengths[:, None]
        att_mask = ~(valid[:, None, :] & valid[:, :, None])
        pad_mask = ~valid
        pos_emb = self._positions(frames, x.device)
        for layer in self.layers:
            x = layer(x, pos_emb, att_mask, pad_mask)
        return x, lengths


class CtcHead(nn.Module):
    def __init__(self, d_model: int, num_classes: int) -> None:
        super().__init__()
        self.decoder_layers = nn.Sequential(nn.Conv1d(d_model, num_classes, 1))

    def forward(self, encoded: Tensor) -> Tensor:
        """[B, T, d_model] → log-probs [B, T, classes]."""
        head = self.decoder_layers[0]
        assert isinstance(head, nn.Conv1d)
        return torch.log_softmax(_pointwise(head, encoded), dim=-1)


class ConformerCTC(nn.Module):
    """features [B, F, T] + lengths [B] → log-probs [B, T', classes] + lengths [B]."""

    def __init__(self, spec: ConformerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = ConformerEncoder(spec)
        self.decoder = CtcHead(spec.d_model, spec.num_classes)

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        encoded, encoded_lengths = self.encoder(features, lengths)
        return self.decoder(encoded), encoded_lengths


def load_weights(model: nn.Module, weights: Mapping[str, Tensor], source: str) -> None:
    """Strict load with a readable error naming what does not match (every key and shape)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong_shape = [
        f"{key} {tuple(weights[key].shape)} != {tuple(expected[key].shape)}"
        for key in sorted(set(weights) & set(expected))
        if weights[key].shape != expected[key].shape
    ]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"{source} does not match the {type(model).__name__} its config describes: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}), {len(wrong_shape)} of another shape {wrong_shape[:2]}"
        )
    model.load_state_dict(dict(weights), strict=True)
