"""The peers' own int8 files, made from one fp32 graph by each project's published recipe, in
the directory layout each project's runtime loads.

onnx-asr (0.12) publishes int8 GigaAM files but not how it made them. Their operators
(DynamicQuantizeLinear feeding MatMulInteger and ConvInteger on every MatMul and Conv) are
what onnxruntime's ``quantize_dynamic`` gives with its defaults: int8 weights, per tensor,
every supported op type. That is the recipe applied.

sherpa-onnx's export scripts for GigaAM and NeMo CTC (``scripts/nemo/GigaAM/
export-onnx-ctc-v3.py`` and the NeMo CTC ones) write model metadata, then call
``quantize_dynamic(weight_type=QuantType.QUInt8)`` and nothing else. Its C++ runtime reads
the metadata (vocabulary size, subsampling, ``is_giga_am`` to pick its GigaAM front end) and
``tokens.txt`` ("<symbol> <id>" lines, the blank last).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx
from asr.bundle import load_bundle
from onnxruntime.quantization import QuantType, quantize_dynamic

from bench.common import CACHE

PEERS = CACHE / "peers"
SHERPA_MODEL = "model.int8.onnx"


def onnx_asr_int8(graph: Path, *, cache: Path = PEERS) -> Path:
    """``graph`` quantised by onnx-asr's recipe (cached by the graph's name)."""
    out = cache / f"{graph.stem}.onnx-asr.int8.onnx"
    if not out.is_file():
        _quantize(graph, out, QuantType.QInt8)
    return out


def sherpa_int8(graph: Path, *, vocab_size: int, cache: Path = PEERS) -> Path:
    """``graph`` with sherpa-onnx's GigaAM CTC metadata, quantised by its recipe (cached)."""
    out = cache / f"{graph.stem}.sherpa.int8.onnx"
    if out.is_file():
        return out
    model = onnx.load(str(graph))
    metadata = {
        "vocab_size": str(vocab_size),
        "subsampling_factor": "4",
        "model_type": "EncDecCTCModel",
        "normalize_type": "",
        "is_giga_am": "1",
    }
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    cache.mkdir(parents=True, exist_ok=True)
    tagged = out.with_suffix(".fp32-with-metadata.onnx")
    onnx.save(model, str(tagged))
    del model
    try:
        _quantize(tagged, out, QuantType.QUInt8)
    finally:
        tagged.unlink(missing_ok=True)
    return out


def _quantize(graph: Path, out: Path, weight_type: QuantType) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.onnx")
    quantize_dynamic(graph, partial, weight_type=weight_type)
    partial.rename(out)


def write_sherpa_layout(model_file: Path, bundle_dir: Path, out: Path) -> Path:
    """sherpa-onnx's directory: ``model.int8.onnx`` (a link) and ``tokens.txt`` from the
    bundle's vocabulary (the same "<symbol> <id>" format, blank last). Returns ``out``."""
    bundle = load_bundle(bundle_dir)
    vocabulary = bundle.vocabulary
    if vocabulary.blank_id != len(vocabulary.tokens) - 1:
        raise ValueError(f"sherpa-onnx expects the blank last; {bundle_dir} has it elsewhere")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    os.symlink(model_file.resolve(), out / SHERPA_MODEL)
    shutil.copyfile(bundle.root / bundle.config.tokens.file, out / "tokens.txt")
    return out
