"""Full-size bundles with random weights in each family's published shape, built once.

Speed and memory do not depend on the weights, and random weights cannot pass the export's
accuracy gate, so the gate is opened (``SPEED_ONLY``); everything else is the real export:
the same ONNX graph, int8 scheme and bundle a trained checkpoint of that shape would give.
Bundles are cached under ``.cache/bench/bundles/<family>-<precision>`` and reused.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from bench.common import CACHE, RATE, REPO, BenchOptions, speech_clips
from export.checkpoint import load_checkpoint, load_quartznet
from export.clips import file_clips
from export.conformer import ConformerCTC, ConformerSpec
from export.nemo_config import quartznet15x5_blocks
from export.onnx_export import export_onnx
from export.onnx_import import describe_graph
from export.pipeline import ExportOptions, export_bundle, export_onnx_bundle
from export.verify import Clip, Thresholds
from tests.conftest import write_random_quartznet

Family = Literal["quartznet15x5", "gigaam_v3"]
Precision = Literal["fp32", "int8"]
FAMILIES: tuple[Family, ...] = ("quartznet15x5", "gigaam_v3")
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")
BUNDLES = CACHE / "bundles"

# GigaAM's character vocabulary: space, а..я without ё, blank last (34 classes).
CHAR_TOKENS = ["▁", *(chr(c) for c in range(ord("а"), ord("я") + 1) if chr(c) != "ё"), "<blk>"]


@dataclass(frozen=True)
class FamilyInfo:
    label: str  # as the README names it
    shape: str  # what "shape" means for it


FAMILY_INFO: dict[Family, FamilyInfo] = {
    "quartznet15x5": FamilyInfo(
        "QuartzNet15x5", "NeMo QuartzNet15x5 (18.9 M parameters, 64 mels, 34 chars)"
    ),
    "gigaam_v3": FamilyInfo(
        "GigaAM v3 CTC",
        "GigaAM v3 CTC (Conformer, 16 layers, d_model 768, rotary; 220.7 M parameters)",
    ),
}


DEMO_BUNDLES: dict[Family, Path] = {
    "quartznet15x5": REPO / "demo" / "bundle",
    "gigaam_v3": REPO / "demo" / "conformer_bundle",
}


def bundle_for(family: Family, precision: Precision, options: BenchOptions) -> Path:
    """The full-size shape bundle, or in quick mode the family's small trained demo bundle
    (int8 whatever ``precision`` asks: quick runs measure nothing)."""
    if options.quick:
        return DEMO_BUNDLES[family]
    return shape_bundle(family, precision)


def shape_bundle(family: Family, precision: Precision, *, cache: Path = BUNDLES) -> Path:
    """The bundle directory, exported on first use."""
    out = cache / f"{family}-{precision}"
    if (out / "SHA256SUMS").is_file():  # written last by the export
        return out
    if out.exists():
        shutil.rmtree(out)
    cache.mkdir(parents=True, exist_ok=True)
    if family == "quartznet15x5":
        _export_quartznet15x5(out, precision, cache)
    else:
        _export_gigaam_v3(out, precision, cache)
    return out


def _options(family: Family, precision: Precision) -> ExportOptions:
    speed_only = Thresholds(min_int8_token_agreement=0.0, max_int8_cer_vs_fp32=1.0)
    return ExportOptions(
        model_id=f"{family}-shape-{precision}", precision=precision, thresholds=speed_only
    )


def _verification_clip() -> list[Clip]:
    return list(file_clips([speech_clips()[4]], RATE))


def _export_quartznet15x5(out: Path, precision: Precision, cache: Path) -> None:
    nemo = cache / "quartznet15x5.nemo"
    if not nemo.is_file():
        write_random_quartznet(nemo, quartznet15x5_blocks())
    export_bundle(
        load_quartznet(load_checkpoint(nemo)),
        out,
        _verification_clip(),
        _options("quartznet15x5", precision),
        step=lambda message: None,
    )


def _export_gigaam_v3(out: Path, precision: Precision, cache: Path) -> None:
    graph = gigaam_v3_graph(cache)
    tokens = cache / "gigaam_tokens.txt"
    tokens.write_text("".join(f"{t} {i}\n" for i, t in enumerate(CHAR_TOKENS)), "utf-8")
    export_onnx_bundle(
        graph,
        describe_graph(tokens, "gigaam-v3"),
        out,
        _verification_clip(),
        _options("gigaam_v3", precision),
        step=lambda message: None,
    )


def gigaam_v3_graph(cache: Path = BUNDLES) -> Path:
    """The fp32 ONNX graph of a random-weight GigaAM v3 CTC (seed 0), exported once."""
    graph = cache / "gigaam_v3.fp32-graph.onnx"
    if graph.is_file():
        return graph
    spec = ConformerSpec(
        feat_in=64, n_layers=16, d_model=768, n_heads=16, num_classes=len(CHAR_TOKENS),
        conv_kernel_size=5, conv_norm="layer_norm", attention="rotary",
        subsampling="conv1d", subsampling_factor=4, subsampling_kernel=5,
    )  # fmt: skip
    torch.manual_seed(0)
    partial = graph.with_suffix(".partial.onnx")
    export_onnx(ConformerCTC(spec).eval(), partial, n_mels=64)
    partial.rename(graph)
    return graph
