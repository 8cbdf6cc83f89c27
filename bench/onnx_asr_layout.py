"""One of our bundles as a model directory onnx-asr loads locally (``onnx_asr.load_model``).

    config.json       {"model_type": "gigaam-v3-ctc", "version": "v3", "features_size": 64,
                       "subsampling_factor": 4}: the keys onnx-asr's GigaAM CTC model reads
    v3_ctc.onnx       a symlink to the bundle's model.onnx (v3_ctc.int8.onnx for int8
                      bundles, loaded with quantization="int8"): the very same file
    v3_vocab.txt      "<token> <id>" lines, space as "▁", the blank as "<blk>"

onnx-asr (0.12) runs GigaAM CTC graphs by the names our Conformer bundles use (``features``,
``feature_lengths`` → ``log_probs``) behind its own GigaAM v2 or v3 front end. Anything it
would compute differently is refused with ``UnsupportedBundle`` rather than written: other
front ends (NeMo's: onnx-asr has only 80- and 128-mel NeMo front ends with a 400-sample
window, and runs NeMo graphs by the names ``audio_signal``/``length`` → ``logprobs``), other
graph names, and vocabularies its reader cannot express.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

import onnx_asr
import onnxruntime
from asr.acoustic_model import session_options
from asr.bundle import ModelBundle, load_bundle
from asr.config import GigaamMelConfig
from asr.tokens import BLANK_TOKEN, SPACE_MARK
from onnx_asr.adapters import TextResultsAsrAdapter

# onnx-asr's GigaAM CTC model: the graph's names and the only mel count its front ends have.
_GRAPH_NAMES = ("features", "feature_lengths", "log_probs")
_FEATURES_SIZE = 64
# Its two GigaAM front ends, as our front-end configs: v2 (centred 400/400/160, float32
# window and filterbank) and v3 (not centred, 320/320/160, bfloat16-rounded buffers).
ONNX_ASR_FRONTENDS: dict[str, GigaamMelConfig] = {
    "v2": GigaamMelConfig(),
    "v3": GigaamMelConfig(n_fft=320, win_length=320, center=False, bf16_buffers=True),
}


class UnsupportedBundle(Exception):
    """The bundle cannot be expressed in onnx-asr's layout; ``message`` says why."""

    code = "onnx_asr_unsupported"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class OnnxAsrModel:
    """A written directory and how to load it."""

    root: Path
    model_type: str  # onnx-asr's model name, e.g. "gigaam-v3-ctc"
    quantization: str | None  # onnx-asr's file-name suffix: None or "int8"
    model_file: Path  # the link to the bundle's model.onnx


def onnx_asr_version(bundle: ModelBundle) -> str:
    """Which onnx-asr GigaAM front end ("v2" or "v3") computes this bundle's features."""
    config = bundle.config
    frontend = config.frontend
    name = config.model_id
    if not isinstance(frontend, GigaamMelConfig):
        raise UnsupportedBundle(
            f"onnx-asr cannot run {name}: its front end is NeMo's log-mel with "
            f"{frontend.n_mels} mels and a {frontend.win_length}-sample window, and onnx-asr's "
            "NeMo models have only 80- and 128-mel front ends with a 400-sample window "
            "(nemo80, nemo128) and run graphs named audio_signal/length -> logprobs"
        )
    for version, expected in ONNX_ASR_FRONTENDS.items():
        if frontend == expected:
            return version
    differences = ", ".join(
        f"{f.name}={getattr(frontend, f.name)!r} (v3: {getattr(expected, f.name)!r})"
        for f in fields(GigaamMelConfig)
        if getattr(frontend, f.name) != getattr(ONNX_ASR_FRONTENDS["v3"], f.name)
    )
    raise UnsupportedBundle(
        f"onnx-asr cannot run {name}: its GigaAM front end is neither onnx-asr's v2 nor v3 "
        f"one ({differences})"
    )


def write_layout(bundle_dir: Path, out: Path, *, int8_file: Path | None = None) -> OnnxAsrModel:
    """Write onnx-asr's local directory for the bundle in ``bundle_dir`` into ``out`` (created;
    files of an earlier layout there are replaced). ``int8_file``: an int8 graph of the same
    model to link instead of the bundle's model.onnx (onnx-asr's own int8 file)."""
    bundle = load_bundle(bundle_dir)
    version = onnx_asr_version(bundle)
    config = bundle.config
    io = config.model
    names = (io.features_input, io.lengths_input, io.log_probs_output)
    if names != _GRAPH_NAMES:
        raise UnsupportedBundle(
            f"onnx-asr cannot run {config.model_id}: it feeds GigaAM graphs "
            f"{' / '.join(_GRAPH_NAMES)}, the bundle's graph uses {' / '.join(names)}"
        )
    if config.frontend.n_mels != _FEATURES_SIZE:
        raise UnsupportedBundle(
            f"onnx-asr cannot run {config.model_id}: its GigaAM front ends give "
            f"{_FEATURES_SIZE} mels, the bundle needs {config.frontend.n_mels}"
        )
    vocabulary = _vocabulary_lines(bundle)
    quantization = "int8" if io.precision == "int8" or int8_file else None
    stem = f"{version}_ctc" + (f".{quantization}" if quantization else "")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("v?_ctc*.onnx"):  # onnx-asr refuses two candidate model files
        old.unlink()
    model_file = out / f"{stem}.onnx"
    os.symlink((int8_file or bundle.model_path).resolve(), model_file)
    (out / f"{version}_vocab.txt").write_text(vocabulary, encoding="utf-8")
    settings = {
        "model_type": f"gigaam-{version}-ctc",
        "version": version,
        "features_size": _FEATURES_SIZE,
        "subsampling_factor": io.subsampling,
    }
    (out / "config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return OnnxAsrModel(out, str(settings["model_type"]), quantization, model_file)


def _vocabulary_lines(bundle: ModelBundle) -> str:
    """onnx-asr splits each line at its one space and prints every non-blank token as is."""
    tokens = bundle.config.tokens
    name = bundle.config.model_id
    if tokens.kind != "char":
        raise UnsupportedBundle(
            f"onnx-asr cannot run {name} as gigaam-*-ctc: that layout is for character "
            f"vocabularies, the bundle's is {tokens.kind}"
        )
    vocabulary = bundle.vocabulary
    lines = []
    for index, token in enumerate(vocabulary.tokens):
        if index == vocabulary.blank_id:
            lines.append(f"{BLANK_TOKEN} {index}\n")
            continue
        if " " in token or vocabulary.piece(index) != token.replace(SPACE_MARK, " "):
            raise UnsupportedBundle(
                f"onnx-asr cannot run {name}: token {index} ({token!r}) would print "
                "differently there (onnx-asr prints every token but the blank as written)"
            )
        lines.append(f"{token} {index}\n")
    return "".join(lines)


def load_onnx_asr(
    model: OnnxAsrModel, threads: int, *, as_shipped: bool = False
) -> TextResultsAsrAdapter:
    """onnx-asr's recogniser for the directory, on the CPU with our runtime's session
    options (``asr.acoustic_model.session_options``), or ``as_shipped``: onnxruntime's
    defaults but for the intra-op thread count."""
    if as_shipped:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
    else:
        options = session_options(threads)
    return onnx_asr.load_model(
        model.model_type,
        model.root,
        quantization=model.quantization,
        sess_options=options,
        providers=["CPUExecutionProvider"],
    )
