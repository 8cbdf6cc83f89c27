"""Checkpoint → fp32 ONNX → int8 ONNX → verification → bundle (or a refusal)."""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from asr.acoustic_model import OnnxAcousticModel
from asr.bundle import CONFIG_FILE, ModelBundle, load_bundle, write_checksums
from asr.config import BundleConfig, FrontendConfig, ModelConfig, TokensConfig
from asr.frontend import NemoMelFrontend
from asr.tokens import Vocabulary

from .checkpoint import LoadedCheckpoint, build_quartznet
from .nemo_config import NemoStft, frontend_from_nemo, preprocessor_state
from .onnx_export import export_onnx
from .quantize import DEFAULT_SCHEME, QuantizationScheme, quantize
from .quartznet import CheckpointError
from .verify import Clip, Thresholds, VerificationReport, torch_log_probs, verify

Step = Callable[[str], None]


class ExportRejected(RuntimeError):
    """The exported model missed a verification threshold; no bundle was written."""

    def __init__(self, report: VerificationReport, report_path: Path) -> None:
        reasons = "; ".join(report.failures)
        super().__init__(f"verification failed: {reasons} (report: {report_path})")
        self.report = report
        self.report_path = report_path


@dataclass(frozen=True)
class ExportOptions:
    model_id: str
    thresholds: Thresholds = field(default_factory=Thresholds)
    precision: str = "int8"
    scheme: QuantizationScheme = DEFAULT_SCHEME
    overwrite: bool = False
    nemo_stft: NemoStft = "2.5"


def export_bundle(
    checkpoint: LoadedCheckpoint,
    out_dir: Path,
    clips: Sequence[Clip],
    options: ExportOptions,
    *,
    step: Step = print,
    on_clip: Callable[[Clip], object] = lambda clip: None,
) -> ModelBundle:
    if out_dir.exists() and not options.overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --force to replace it")
    step("building the PyTorch model from the checkpoint")
    model = build_quartznet(checkpoint)
    frontend_config = frontend_from_nemo(checkpoint.config, options.nemo_stft)
    check_preprocessor_buffers(checkpoint, frontend_config)
    vocabulary = Vocabulary.from_labels(model.spec.vocabulary)
    config = BundleConfig(
        model_id=options.model_id,
        family="quartznet",
        frontend=frontend_config,
        model=ModelConfig(
            file="model.onnx",
            subsampling=model.spec.subsampling,
            precision="int8" if options.precision == "int8" else "fp32",
        ),
        tokens=TokensConfig(file="tokens.txt", kind="char", blank_id=vocabulary.blank_id),
        source={
            "checkpoint": checkpoint.path.name,
            "checkpoint_sha256": checkpoint.sha256,
            "architecture": "QuartzNet/Jasper (NeMo ConvASREncoder + ConvASRDecoder)",
            "parameters": sum(p.numel() for p in model.parameters()),
            "quantization": options.scheme.to_dict() if options.precision == "int8" else None,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "python": platform.python_version(),
        },
    )
    frontend = NemoMelFrontend(frontend_config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
        stage = Path(tmp)
        fp32_path, int8_path = stage / "model.fp32.onnx", stage / "model.int8.onnx"
        step("exporting ONNX (fp32, dynamic time axis)")
        export_onnx(model, fp32_path)
        step(f"quantizing to int8 ({options.scheme.name})")
        quantize(fp32_path, int8_path, options.scheme)
        step(f"verifying on {len(clips)} clips: PyTorch vs ONNX fp32 vs int8")
        report = verify(
            clips,
            frontend,
            vocabulary,
            config.frame_seconds,
            reference=torch_log_probs(model),
            fp32=_onnx_log_probs(fp32_path, config, vocabulary),
            int8=_onnx_log_probs(int8_path, config, vocabulary),
            thresholds=options.thresholds,
            progress=on_clip,
        )
        report_data = {**report.to_dict(), "model_id": options.model_id, "source": config.source}
        if not report.passed:
            failed_path = out_dir.parent / f"{out_dir.name}.verification-failed.json"
            failed_path.write_text(json.dumps(report_data, ensure_ascii=False, indent=2))
            raise ExportRejected(report, failed_path)

        step("writing the bundle")
        bundle_dir = stage / "bundle"
        bundle_dir.mkdir()
        chosen = int8_path if options.precision == "int8" else fp32_path
        shutil.copyfile(chosen, bundle_dir / config.model.file)
        vocabulary.write(bundle_dir / config.tokens.file)
        (bundle_dir / config.verification_file).write_text(
            json.dumps(report_data, ensure_ascii=False, indent=2), encoding="utf-8"
        )
        (bundle_dir / CONFIG_FILE).write_text(
            json.dumps(config.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8"
        )
        write_checksums(bundle_dir, config)
        staged = load_bundle(bundle_dir)  # the runtime's own validation, before replacing
        if out_dir.exists():
            shutil.rmtree(out_dir)
        bundle_dir.rename(out_dir)
    return replace(staged, root=out_dir)


def check_preprocessor_buffers(checkpoint: LoadedCheckpoint, frontend: FrontendConfig) -> None:
    """The checkpoint's stored window and filterbank must equal what the runtime computes:
    otherwise the bundle would feed the model other features than it was trained on."""
    stored = checkpoint.preprocessor_buffers
    ours = {k.rsplit(".", 1)[-1]: v for k, v in preprocessor_state(frontend).items()}
    for name in ("window", "fb"):
        if name not in stored:
            continue
        theirs = stored[name].float()
        if tuple(theirs.shape) != tuple(ours[name].shape):
            raise CheckpointError(
                f"preprocessor.featurizer.{name} has shape {tuple(theirs.shape)}, the config "
                f"implies {tuple(ours[name].shape)}"
            )
        difference = float((theirs - ours[name]).abs().max())
        if difference > 1e-5:
            raise CheckpointError(
                f"preprocessor.featurizer.{name} differs from the front end the config "
                f"describes (max |Δ| {difference:.2e}); refusing to export mismatched features"
            )


def _onnx_log_probs(
    path: Path, config: BundleConfig, vocabulary: Vocabulary
) -> Callable[[np.ndarray], np.ndarray]:
    config = replace(config, model=replace(config.model, file=path.name))
    return OnnxAcousticModel(ModelBundle(path.parent, config, vocabulary, {}), threads=1)
