"""GigaAM-Emo (``EmotionSource``) → fp32 ONNX → int8 ONNX → the gate → an emotion bundle
(asr.emotion_bundle), or a refusal.

The graph is the whole classifier: features [B, n_mels, T] + feature_lengths [B] → probs
[B, classes], upstream ``GigaAMEmo``'s export with the padded frames masked out of the mean.
int8 is static QDQ on Conv and MatMul (int8 per-channel weights, activation ranges calibrated
on the verification clips): GigaAM-Emo's v1-era encoder subsamples with a 768-channel
Conv2d that takes ~45 % of the time when only MatMuls are int8. On its published shape
(bench/emotion_shape.py, 17 real clips, one thread) it ran at RTF 0.072, against 0.087 for
the Conformer ASR scheme (dynamic, MatMul only), 0.097 with ConvInteger added to that, and
0.196 for fp32; every label as fp32's. A padded batch's int8 results may differ from one by
one by more than 1e-4 on such a deep model; the export measures it and such bundles run
one clip at a time (``batch_invariant``, export.emotion_verify).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from asr.acoustic_model import onnx_session
from asr.bundle import CONFIG_FILE, write_checksum_file
from asr.emotion import pad_features
from asr.emotion_bundle import (
    EmotionBundle,
    EmotionBundleConfig,
    EmotionModelConfig,
    load_emotion_bundle,
)
from asr.frontend import make_frontend

from .emotion_verify import EmotionThresholds, Precision, ProbsFn, Systems, verify_emotion
from .gigaam_emo import EmotionSource
from .onnx_export import INPUT_NAMES, _export, _Graph
from .pipeline import CALIBRATION_CLIPS, ExportRejected, exporter_versions
from .quantize import SCHEMES, QuantizationScheme, quantize
from .verify import Clip

PROBS_OUTPUT = "probs"
EMOTION_SCHEME = SCHEMES["static-qdq-s8-per-channel-conv-matmul"]


@dataclass(frozen=True)
class EmotionExportOptions:
    model_id: str
    precision: Precision = "auto"
    scheme: QuantizationScheme = EMOTION_SCHEME
    thresholds: EmotionThresholds = field(default_factory=EmotionThresholds)
    overwrite: bool = False


def export_emotion_onnx(source: EmotionSource, path: Path, *, example_frames: int = 400) -> None:
    """The fp32 classifier graph at ``path``, dynamic batch and time axes."""
    n_mels = source.frontend.n_mels
    example = (torch.randn(1, n_mels, example_frames), torch.tensor([example_frames]))
    axes = {
        INPUT_NAMES[0]: {0: "batch", 2: "frames"},
        INPUT_NAMES[1]: {0: "batch"},
        PROBS_OUTPUT: {0: "batch"},
    }
    graph = _Graph(source.model.eval(), example, path, list(INPUT_NAMES), [PROBS_OUTPUT], axes)
    _export(graph)


def onnx_probabilities(path: Path, threads: int = 1) -> ProbsFn:
    """A staged graph as a probabilities function (the runtime's session options)."""
    session = onnx_session(path, threads)

    def run(features: Sequence[np.ndarray]) -> np.ndarray:
        batch, lengths = pad_features(features)
        (probs,) = session.run([PROBS_OUTPUT], {INPUT_NAMES[0]: batch, INPUT_NAMES[1]: lengths})
        return np.asarray(probs)

    return run


def torch_probabilities(source: EmotionSource) -> ProbsFn:
    def run(features: Sequence[np.ndarray]) -> np.ndarray:
        batch, lengths = pad_features(features)
        probs = source.probabilities(torch.from_numpy(batch), torch.from_numpy(lengths))
        return probs.numpy()

    return run


def export_emotion_bundle(
    source: EmotionSource,
    out_dir: Path,
    clips: Sequence[Clip],
    options: EmotionExportOptions,
    *,
    step: Callable[[str], None] = print,
    on_clip: Callable[[Clip], object] = lambda clip: None,
) -> EmotionBundle:
    """Export, verify against the PyTorch model, write the bundle (or ExportRejected)."""
    if out_dir.exists() and not options.overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --force to replace it")
    frontend = make_frontend(source.frontend)
    features = [frontend(clip.samples) for clip in clips]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
        stage = Path(tmp)
        fp32_path, int8_path = stage / "model.fp32.onnx", stage / "model.int8.onnx"
        step("exporting ONNX (fp32): encoder, masked mean over time, head, softmax")
        export_emotion_onnx(source, fp32_path)
        step(f"quantizing to int8 ({options.scheme.name})")
        calibration = features[:CALIBRATION_CLIPS] if options.scheme.method == "static_qdq" else []
        quantize(fp32_path, int8_path, options.scheme, calibration=calibration)
        step(f"verifying on {len(clips)} clips: PyTorch vs ONNX fp32 vs int8, batches, speed")
        systems = Systems(
            torch_probabilities(source),
            onnx_probabilities(fp32_path),
            onnx_probabilities(int8_path),
        )
        report = verify_emotion(
            clips, features, source.labels, systems,
            sample_rate=source.frontend.sample_rate, thresholds=options.thresholds,
            requested=options.precision, progress=on_clip,
        )  # fmt: skip
        config = _config(source, options, report.precision, report.batch_invariant)
        report_data = {**report.to_dict(), "model_id": options.model_id, "source": config.source}
        if report.failures:
            failed = out_dir.parent / f"{out_dir.name}.verification-failed.json"
            _write_json(failed, report_data)
            raise ExportRejected(report, failed)

        step(f"writing the bundle ({report.precision}: {report.precision_reason})")
        bundle_dir = stage / "bundle"
        bundle_dir.mkdir()
        chosen = int8_path if report.precision == "int8" else fp32_path
        shutil.copyfile(chosen, bundle_dir / config.model.file)
        _write_json(bundle_dir / config.verification_file, report_data)
        _write_json(bundle_dir / CONFIG_FILE, config.to_dict())
        write_checksum_file(bundle_dir, config.files(), config.checksums_file)
        staged = load_emotion_bundle(bundle_dir)  # the runtime's own validation
        if out_dir.exists():
            shutil.rmtree(out_dir)
        bundle_dir.rename(out_dir)
    return replace(staged, root=out_dir)


def _config(
    source: EmotionSource, options: EmotionExportOptions, precision: str, batch_invariant: bool
) -> EmotionBundleConfig:
    int8 = precision == "int8"
    return EmotionBundleConfig(
        model_id=options.model_id,
        labels=source.labels,
        frontend=source.frontend,
        model=EmotionModelConfig(
            probs_output=PROBS_OUTPUT,
            precision="int8" if int8 else "fp32",
            subsampling=source.subsampling,
            max_window_seconds=source.max_window_seconds,
            batch_invariant=batch_invariant,
        ),
        source={
            **source.source,
            "quantization": options.scheme.to_dict() if int8 else None,
            **exporter_versions(),
        },
    )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
