"""Full-size bundles with random weights in each family's published shape, built once.

Speed and memory do not depend on the weights, and random weights cannot pass the export's
accuracy gate, so the gate is opened (``SPEED_ONLY``); everything else is the real export:
the same ONNX graph, int8 scheme and bundle a trained checkpoint of that shape would give.
Bundles are cached under ``.cache/bench/bundles/<family>-<precision>`` and reused.

A transducer's decode loop does depend on the weights: its cost grows with the tokens
emitted, and a random joint emits the step cap at every frame. So the RNNT shape's
prediction network and joint are trained (the RNN-T loss, encoder frozen at its random
weights, ~1 min) on the real clips' transcripts. On a random encoder's frames that head
spreads each token over many frames and greedy decoding would emit almost nothing, so the
blank's bias is then lowered until greedy decoding emits as many tokens as the transcripts
hold: the loop decodes at a real emission rate (~13 tokens per second of speech).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import soundfile as sf
import torch
from asr.config import GigaamMelConfig, TransducerConfig
from asr.frontend import make_frontend
from asr.tokens import Vocabulary

from bench.common import CACHE, RATE, REPO, SPEECH, BenchOptions, speech_clips
from export.checkpoint import load_checkpoint, load_quartznet
from export.clips import file_clips
from export.conformer import ConformerCTC, ConformerSpec
from export.nemo_config import quartznet15x5_blocks
from export.onnx_export import export_onnx
from export.onnx_import import describe_graph
from export.pipeline import ExportOptions, export_bundle, export_onnx_bundle
from export.source_model import CONFORMER_MAX_WINDOW_SECONDS, SourceModel
from export.transducer import TransducerModel, TransducerSpec, greedy_path
from export.verify import Clip, Thresholds
from tests.conftest import write_random_quartznet

Family = Literal["quartznet15x5", "gigaam_v3", "gigaam_v3_rnnt", "gigaam_v2"]
Precision = Literal["fp32", "int8"]
FAMILIES: tuple[Family, ...] = ("quartznet15x5", "gigaam_v3", "gigaam_v3_rnnt")
# Shapes only the peers benchmark builds (GigaAM v2: where onnx-asr's int8 loses the most).
PEER_FAMILIES: tuple[Family, ...] = ("gigaam_v3", "gigaam_v2")
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
    "gigaam_v3_rnnt": FamilyInfo(
        "GigaAM v3 RNNT",
        "GigaAM v3 RNNT (the same encoder; LSTM 320 prediction network, joint 320)",
    ),
    "gigaam_v2": FamilyInfo(
        "GigaAM v2 CTC",
        "GigaAM v2 CTC (Conformer, 16 layers, d_model 768, rotary, conv2d subsampling)",
    ),
}


DEMO_BUNDLES: dict[Family, Path] = {
    "quartznet15x5": REPO / "demo" / "bundle",
    "gigaam_v3": REPO / "demo" / "conformer_bundle",
    "gigaam_v3_rnnt": REPO / "demo" / "transducer_bundle",
    "gigaam_v2": REPO / "demo" / "conformer_bundle",
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
    if _current(out):
        return out
    if out.exists():
        shutil.rmtree(out)
    cache.mkdir(parents=True, exist_ok=True)
    if family == "quartznet15x5":
        _export_quartznet15x5(out, precision, cache)
    elif family in ("gigaam_v3", "gigaam_v2"):
        _export_gigaam(family, out, precision, cache)
    else:
        export_bundle(
            gigaam_v3_rnnt_source(cache),
            out,
            _verification_clip(),
            _options(family, precision),
            step=lambda message: None,
        )
    return out


def _current(out: Path) -> bool:
    """A complete bundle (SHA256SUMS is written last) from the current export, which saves
    the optimised graph and says so in its report."""
    if not (out / "SHA256SUMS").is_file():
        return False
    report = json.loads((out / "verification.json").read_text(encoding="utf-8"))
    return "graph_optimization" in report


def _options(family: Family, precision: Precision) -> ExportOptions:
    # Random weights: int8 may disagree with fp32 on everything (agreement can go negative:
    # it is 1 - edits / length).
    speed_only = Thresholds(min_int8_token_agreement=-1e9, max_int8_cer_vs_fp32=1e9)
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


def _export_gigaam(family: Family, out: Path, precision: Precision, cache: Path) -> None:
    graph = gigaam_graph(family, cache)
    tokens = cache / "gigaam_tokens.txt"
    tokens.write_text("".join(f"{t} {i}\n" for i, t in enumerate(CHAR_TOKENS)), "utf-8")
    export_onnx_bundle(
        graph,
        describe_graph(tokens, family.replace("_", "-")),
        out,
        _verification_clip(),
        _options(family, precision),
        step=lambda message: None,
    )


def gigaam_graph(family: Family, cache: Path = BUNDLES) -> Path:
    """The fp32 ONNX graph of a random-weight GigaAM v3 or v2 CTC (seed 0), exported once."""
    graph = cache / f"{family}.fp32-graph.onnx"
    if graph.is_file():
        return graph
    spec = gigaam_v3_spec() if family == "gigaam_v3" else gigaam_v2_spec()
    torch.manual_seed(0)
    cache.mkdir(parents=True, exist_ok=True)
    partial = graph.with_suffix(".partial.onnx")
    export_onnx(ConformerCTC(spec).eval(), partial, n_mels=64)
    partial.rename(graph)
    return graph


def gigaam_v3_spec(num_classes: int = len(CHAR_TOKENS)) -> ConformerSpec:
    return ConformerSpec(
        feat_in=64, n_layers=16, d_model=768, n_heads=16, num_classes=num_classes,
        conv_kernel_size=5, conv_norm="layer_norm", attention="rotary",
        subsampling="conv1d", subsampling_factor=4, subsampling_kernel=5,
    )  # fmt: skip


def gigaam_v2_spec() -> ConformerSpec:
    """v2: conv2d subsampling (kernel 3), batch-norm conv module with kernel 31."""
    return ConformerSpec(
        feat_in=64, n_layers=16, d_model=768, n_heads=16, num_classes=len(CHAR_TOKENS),
        conv_kernel_size=31, conv_norm="batch_norm", attention="rotary",
        subsampling="conv2d", subsampling_factor=4,
    )  # fmt: skip


def gigaam_v3_rnnt_source(cache: Path = BUNDLES) -> SourceModel:
    """GigaAM v3 RNNT's shape (seed 0), its head trained on the real clips (see the module
    doc); the trained weights are cached."""
    spec = TransducerSpec(
        encoder=gigaam_v3_spec(), pred_hidden=320, pred_layers=1, joint_hidden=320
    )
    torch.manual_seed(0)
    model = TransducerModel(spec).eval()
    weights = cache / "gigaam_v3_rnnt.pt"
    if weights.is_file():
        model.load_state_dict(torch.load(weights, weights_only=True))
    else:
        train_head(model)
        cache.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), weights)
    vocabulary = Vocabulary(tuple(CHAR_TOKENS), blank_id=len(CHAR_TOKENS) - 1)
    frontend = GigaamMelConfig(n_fft=320, win_length=320, center=False, bf16_buffers=True)
    return SourceModel(
        model=model.eval(),
        family="conformer",
        frontend=frontend,
        vocabulary=vocabulary,
        token_kind="char",
        subsampling=4,
        max_window_seconds=CONFORMER_MAX_WINDOW_SECONDS,
        transducer=TransducerConfig(pred_layers=1, pred_hidden=320),
        source={"benchmark": "GigaAM v3 RNNT shape, random encoder, head trained on real clips"},
    )


def train_head(model: TransducerModel, steps: int = 100) -> None:
    """The prediction network and joint trained with the RNN-T loss on the frozen encoder's
    frames of the real clips and their transcripts (all clips, one batch), then the blank's
    bias calibrated (see the module doc)."""
    from scripts.rnnt_loss import rnnt_loss  # noqa: PLC0415 (benchmark-only)
    from scripts.train_demo_transducer import prediction_sequence  # noqa: PLC0415

    frontend = make_frontend(
        GigaamMelConfig(n_fft=320, win_length=320, center=False, bf16_buffers=True)
    )
    texts = {
        Path(entry["audio_filepath"]).name: entry["text"]
        for entry in map(json.loads, (SPEECH / "ru_manifest.jsonl").read_text("utf-8").splitlines())
    }
    features, targets = [], []
    for path in speech_clips():
        if path.name in texts:
            features.append(torch.from_numpy(frontend(sf.read(path, dtype="float32")[0])))
            text = texts[path.name].replace("ё", "е")
            targets.append(torch.tensor([CHAR_TOKENS.index(c.replace(" ", "▁")) for c in text]))
    lengths = torch.tensor([f.shape[1] for f in features])
    batch = torch.zeros(len(features), 64, int(lengths.max()))
    for row, item in enumerate(features):
        batch[row, :, : item.shape[1]] = item
    with torch.no_grad():
        encoded, encoded_lengths = model.encoder(batch, lengths)
    target_lengths = torch.tensor([len(t) for t in targets])
    padded = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True)
    head = [*model.predictor.parameters(), *model.joint.parameters()]
    optimizer = torch.optim.Adam(head, lr=3e-3)
    blank = len(CHAR_TOKENS) - 1
    for _ in range(steps):
        log_probs = model.joint(encoded, prediction_sequence(model, padded))
        losses = rnnt_loss(log_probs, padded, encoded_lengths, target_lengths, blank)
        optimizer.zero_grad()
        torch.autograd.backward((losses / target_lengths).mean())
        optimizer.step()

    def emitted() -> int:
        frames = [encoded[row, :length] for row, length in enumerate(encoded_lengths.tolist())]
        return sum(len(greedy_path(model, item).token_ids) for item in frames)

    bias = model.joint.out.bias.data
    trained, low, high = float(bias[blank]), 0.0, 16.0
    for _ in range(10):  # bisect the offset: emitted tokens rise as the blank's bias falls
        bias[blank] = trained - (low + high) / 2
        if emitted() < int(target_lengths.sum()):
            low = (low + high) / 2
        else:
            high = (low + high) / 2
