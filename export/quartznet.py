"""QuartzNet / Jasper CTC acoustic model in plain PyTorch, with NeMo's state_dict layout.

Module names mirror NeMo's ``ConvASREncoder`` / ``JasperBlock`` / ``ConvASRDecoder`` so a
NeMo ``model_weights.ckpt`` loads with ``load_state_dict(strict=True)``:

- ``encoder.encoder.<b>.mconv.<i>.conv.weight`` — per repeat: [depthwise, pointwise, BN,
  activation, dropout], the last repeat without activation/dropout (jasper.py).
- ``encoder.encoder.<b>.res.0.{0.conv.weight, 1.<bn>}`` — 1x1 residual conv + BN.
- ``decoder.decoder_layers.0.{weight,bias}`` — 1x1 conv to vocabulary + blank.

NeMo's batch norms use eps 1e-3. Masked convolutions zero frames beyond each sequence's
length before convolving; only kernels wider than one frame can carry padding into valid
frames, so only those are masked here (same valid outputs, fewer ops).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

BATCH_NORM_EPS = 1e-3


class CheckpointError(ValueError):
    """A checkpoint or its config does not describe a model this exporter supports."""


@dataclass(frozen=True)
class JasperBlockSpec:
    filters: int
    repeat: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    dropout: float = 0.0
    residual: bool = False
    separable: bool = True

    @classmethod
    def from_nemo(cls, entry: Mapping[str, Any]) -> JasperBlockSpec:
        unsupported = {
            "se": False,
            "groups": 1,
            "heads": -1,
            "residual_panes": [],
            "stride_last": False,
            "kernel_size_factor": 1.0,
            "future_context": -1,
        }
        for key, neutral in unsupported.items():
            value = entry.get(key, neutral)
            if value != neutral and not (key == "residual_panes" and not value):
                raise CheckpointError(f"jasper block option {key}={value!r} is not supported")
        if entry.get("residual_mode", "add") != "add":
            raise CheckpointError(f"residual_mode {entry.get('residual_mode')!r} is not supported")
        return cls(
            filters=int(entry["filters"]),
            repeat=int(entry["repeat"]),
            kernel=int(_single(entry["kernel"])),
            stride=int(_single(entry.get("stride", [1]))),
            dilation=int(_single(entry.get("dilation", [1]))),
            dropout=float(entry.get("dropout", 0.0)),
            residual=bool(entry.get("residual", False)),
            separable=bool(entry.get("separable", False)),
        )

    def to_nemo(self) -> dict[str, Any]:
        return {
            "filters": self.filters,
            "repeat": self.repeat,
            "kernel": [self.kernel],
            "stride": [self.stride],
            "dilation": [self.dilation],
            "dropout": self.dropout,
            "residual": self.residual,
            "separable": self.separable,
        }


@dataclass(frozen=True)
class QuartzNetSpec:
    feat_in: int
    vocabulary: tuple[str, ...]
    blocks: tuple[JasperBlockSpec, ...]
    activation: str = "relu"
    conv_mask: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def num_classes(self) -> int:
        """Vocabulary plus the CTC blank, which NeMo puts last."""
        return len(self.vocabulary) + 1

    @property
    def subsampling(self) -> int:
        factor = 1
        for block in self.blocks:
            factor *= block.stride
        return factor

    @classmethod
    def from_nemo_config(cls, config: Mapping[str, Any]) -> QuartzNetSpec:
        encoder = _params(config.get("encoder"), "encoder")
        decoder = _params(config.get("decoder"), "decoder")
        vocabulary = decoder.get("vocabulary") or config.get("labels")
        if not vocabulary:
            raise CheckpointError("config has no vocabulary (decoder.vocabulary or labels)")
        jasper = encoder.get("jasper")
        if not isinstance(jasper, Sequence) or not jasper:
            raise CheckpointError("config has no encoder.jasper block list: not a QuartzNet/Jasper")
        blocks = tuple(JasperBlockSpec.from_nemo(entry) for entry in jasper)
        num_classes = decoder.get("num_classes")
        if num_classes not in (None, -1) and int(num_classes) != len(vocabulary):
            # NeMo's num_classes counts the vocabulary; the blank is added on top.
            raise CheckpointError(
                f"decoder.num_classes={num_classes} disagrees with {len(vocabulary)} labels"
            )
        return cls(
            feat_in=int(encoder["feat_in"]),
            vocabulary=tuple(str(label) for label in vocabulary),
            blocks=blocks,
            activation=str(encoder.get("activation", "relu")),
            conv_mask=bool(encoder.get("conv_mask", True)),
        )

    def to_nemo_encoder_decoder(self) -> dict[str, Any]:
        last = self.blocks[-1].filters
        return {
            "encoder": {
                "_target_": "nemo.collections.asr.modules.ConvASREncoder",
                "feat_in": self.feat_in,
                "activation": self.activation,
                "conv_mask": self.conv_mask,
                "jasper": [block.to_nemo() for block in self.blocks],
            },
            "decoder": {
                "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
                "feat_in": last,
                "num_classes": len(self.vocabulary),
                "vocabulary": list(self.vocabulary),
            },
        }


class MaskedConv1d(nn.Module):
    """``nn.Conv1d`` under the attribute ``conv`` (NeMo's key layout), with length masking."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        use_mask: bool = True,
    ) -> None:
        super().__init__()
        if stride > 1 and dilation > 1:
            raise CheckpointError("a convolution cannot both stride and dilate")
        padding = dilation * (kernel - 1) // 2  # NeMo's "same" padding
        self.conv = nn.Conv1d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.use_mask = use_mask and kernel > 1

    def output_lengths(self, lengths: Tensor) -> Tensor:
        conv = self.conv
        span = conv.dilation[0] * (conv.kernel_size[0] - 1)
        padding = conv.padding[0] if isinstance(conv.padding, tuple) else 0
        padded = lengths + 2 * int(padding)
        return torch.div(padded - span - 1, conv.stride[0], rounding_mode="trunc") + 1

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if self.use_mask:
            positions = torch.arange(x.shape[2], device=x.device)
            valid = positions.unsqueeze(0) < lengths.unsqueeze(1)
            x = x * valid.unsqueeze(1).to(x.dtype)
        return self.conv(x), self.output_lengths(lengths)


def _activation(name: str) -> nn.Module:
    name = name.lower()
    if name == "relu":
        return nn.ReLU()
    if name == "hardtanh":
        return nn.Hardtanh(0.0, 20.0)
    if name == "selu":
        return nn.SELU()
    if name in {"swish", "silu"}:
        return nn.SiLU()
    raise CheckpointError(f"activation {name!r} is not supported")


class JasperBlock(nn.Module):
    def __init__(
        self, in_channels: int, spec: JasperBlockSpec, activation: str, conv_mask: bool
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for index in range(spec.repeat):
            layers.extend(self._conv_bn(channels, spec, conv_mask))
            if index < spec.repeat - 1:
                layers.extend([_activation(activation), nn.Dropout(spec.dropout)])
            channels = spec.filters
        self.mconv = nn.ModuleList(layers)
        self.res: nn.ModuleList | None = None
        if spec.residual:
            residual = [
                MaskedConv1d(in_channels, spec.filters, 1, use_mask=conv_mask),
                nn.BatchNorm1d(spec.filters, eps=BATCH_NORM_EPS),
            ]
            self.res = nn.ModuleList([nn.ModuleList(residual)])
        self.mout = nn.Sequential(_activation(activation), nn.Dropout(spec.dropout))

    @staticmethod
    def _conv_bn(channels: int, spec: JasperBlockSpec, conv_mask: bool) -> list[nn.Module]:
        conv_args = {"stride": spec.stride, "dilation": spec.dilation, "use_mask": conv_mask}
        if spec.separable:
            convs: list[nn.Module] = [
                MaskedConv1d(channels, channels, spec.kernel, groups=channels, **conv_args),  # type: ignore[arg-type]
                MaskedConv1d(channels, spec.filters, 1, use_mask=conv_mask),
            ]
        else:
            convs = [MaskedConv1d(channels, spec.filters, spec.kernel, **conv_args)]  # type: ignore[arg-type]
        return [*convs, nn.BatchNorm1d(spec.filters, eps=BATCH_NORM_EPS)]

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        out, out_lengths = x, lengths
        for layer in self.mconv:
            if isinstance(layer, MaskedConv1d):
                out, out_lengths = layer(out, out_lengths)
            else:
                out = layer(out)
        if self.res is not None:
            for branch in self.res:
                residual = x
                assert isinstance(branch, nn.ModuleList)
                for layer in branch:
                    if isinstance(layer, MaskedConv1d):
                        residual, _ = layer(residual, lengths)
                    else:
                        residual = layer(residual)
                out = out + residual
        return self.mout(out), out_lengths


class ConvASREncoder(nn.Module):
    def __init__(self, spec: QuartzNetSpec) -> None:
        super().__init__()
        blocks = []
        channels = spec.feat_in
        for block in spec.blocks:
            blocks.append(JasperBlock(channels, block, spec.activation, spec.conv_mask))
            channels = block.filters
        self.encoder = nn.ModuleList(blocks)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        for block in self.encoder:
            x, lengths = block(x, lengths)
        return x, lengths


class ConvASRDecoder(nn.Module):
    def __init__(self, feat_in: int, num_classes: int) -> None:
        super().__init__()
        self.decoder_layers = nn.Sequential(nn.Conv1d(feat_in, num_classes, 1, bias=True))

    def forward(self, encoded: Tensor) -> Tensor:
        logits = self.decoder_layers(encoded).transpose(1, 2)
        return torch.log_softmax(logits, dim=-1)


class QuartzNetCTC(nn.Module):
    """features [B, n_mels, T] float32, feature_lengths [B] int64 →
    log_probs [B, T', vocab + 1], encoded_lengths [B]."""

    def __init__(self, spec: QuartzNetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = ConvASREncoder(spec)
        self.decoder = ConvASRDecoder(spec.blocks[-1].filters, spec.num_classes)

    def forward(self, features: Tensor, feature_lengths: Tensor) -> tuple[Tensor, Tensor]:
        encoded, encoded_lengths = self.encoder(features, feature_lengths)
        return self.decoder(encoded), encoded_lengths


def _single(value: Any) -> Any:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 1:
            raise CheckpointError(f"expected one value per block, got {list(value)!r}")
        return value[0]
    return value


def _params(section: Any, name: str) -> Mapping[str, Any]:
    """NeMo 1.x configs nest module arguments directly; early ones under ``params``."""
    if not isinstance(section, Mapping):
        raise CheckpointError(f"config has no {name!r} section")
    params = section.get("params")
    return params if isinstance(params, Mapping) else section
