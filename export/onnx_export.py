"""PyTorch → ONNX (fp32) with a dynamic batch and time axis.

QuartzNet's batch norms are folded into the convolution before them first: inference maths
is unchanged (eval-mode BN is an affine map per channel) and the quantiser then sees plain
Conv + bias, which int8 kernels run without a float BN in between. (onnxruntime fuses the
Conformer's depthwise Conv + BN itself when it loads the graph.)
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from .quartznet import MaskedConv1d, QuartzNetCTC

INPUT_NAMES = ("features", "feature_lengths")
OUTPUT_NAMES = ("log_probs", "encoded_lengths")
OPSET = 17


def fold_batch_norms(model: QuartzNetCTC) -> QuartzNetCTC:
    """A copy of ``model`` with every Conv→BN pair merged into one biased Conv."""
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        if isinstance(module, nn.ModuleList):
            _fold_sequence(module)
    return folded


def _fold_sequence(layers: nn.ModuleList) -> None:
    for index in range(1, len(layers)):
        conv, norm = layers[index - 1], layers[index]
        if isinstance(conv, MaskedConv1d) and isinstance(norm, nn.BatchNorm1d):
            _fold(conv.conv, norm)
            layers[index] = nn.Identity()


@torch.no_grad()
def _fold(conv: nn.Conv1d, norm: nn.BatchNorm1d) -> None:
    assert norm.running_mean is not None and norm.running_var is not None
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    conv.weight.mul_(scale[:, None, None])
    conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)


def export_onnx(model: nn.Module, path: Path, *, n_mels: int, example_frames: int = 400) -> None:
    """Write ``model`` (QuartzNet: BNs folded) as an fp32 ONNX graph at ``path``."""
    folded = fold_batch_norms(model) if isinstance(model, QuartzNetCTC) else model.eval()
    features = torch.randn(1, n_mels, example_frames)
    lengths = torch.tensor([example_frames], dtype=torch.int64)
    dynamic_axes = {
        "features": {0: "batch", 2: "frames"},
        "feature_lengths": {0: "batch"},
        "log_probs": {0: "batch", 1: "encoded_frames"},
        "encoded_lengths": {0: "batch"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            folded,
            (features, lengths),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
