"""Source model → fp32 ONNX → int8 ONNX → verification → bundle (or a refusal).

Every loader (QuartzNet ``.nemo``, GigaAM ``.ckpt``, NeMo Conformer ``.nemo``) hands over a
``SourceModel``; an already-exported upstream ONNX graph takes ``export_onnx_bundle``,
where the fp32 graph itself is the reference. A transducer is three graphs: the encoder
(``model.onnx``, quantised like a CTC model) and its fp32 decoder and joint (one LSTM step
and two projections: small, and not worth int8's error).
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import onnx
import onnxruntime as ort
import torch
from asr.bundle import CONFIG_FILE, ModelBundle, load_bundle, sha256_of, write_checksums
from asr.config import BundleConfig, ModelConfig, TokensConfig
from asr.frontend import make_frontend
from asr.tokens import Vocabulary

from .graph_optimize import preoptimize
from .onnx_export import export_onnx, export_transducer_onnx
from .onnx_graphs import upstream_graphs
from .quantize import CONFORMER_SCHEME, DEFAULT_SCHEME, QuantizationScheme, quantize
from .source_model import ModelDescription, SourceModel
from .transducer import TransducerModel
from .verify import Clip, Thresholds, verify
from .verify_systems import System, onnx_system, torch_system

Step = Callable[[str], None]


class GateReport(Protocol):
    @property
    def failures(self) -> list[str]: ...


class ExportRejected(RuntimeError):
    """The exported model missed a verification threshold; no bundle was written."""

    def __init__(self, report: GateReport, report_path: Path) -> None:
        reasons = "; ".join(report.failures)
        super().__init__(f"verification failed: {reasons} (report: {report_path})")
        self.report = report
        self.report_path = report_path


@dataclass(frozen=True)
class ExportOptions:
    model_id: str
    thresholds: Thresholds = field(default_factory=Thresholds)
    precision: str = "int8"
    # None: the family's default (QuartzNet: dynamic uint8 per-tensor; Conformer: see
    # export.quantize.CONFORMER_SCHEME).
    scheme: QuantizationScheme | None = None
    overwrite: bool = False

    def scheme_for(self, family: str) -> QuantizationScheme:
        if self.scheme is not None:
            return self.scheme
        return CONFORMER_SCHEME if family == "conformer" else DEFAULT_SCHEME


# Verification clips also calibrate static int8 schemes; this many are enough for ranges.
CALIBRATION_CLIPS = 16


def export_bundle(
    source: SourceModel,
    out_dir: Path,
    clips: Sequence[Clip],
    options: ExportOptions,
    *,
    step: Step = print,
    on_clip: Callable[[Clip], object] = lambda clip: None,
) -> ModelBundle:
    """Export a PyTorch model, verify the ONNX graphs against it, write the bundle."""
    _refuse_existing(out_dir, options)
    model = source.model.eval()
    config = _bundle_config(source, options, {"parameters": source.parameters})

    def write_fp32(path: Path) -> None:
        n_mels = source.frontend.n_mels
        if isinstance(model, TransducerModel):
            assert config.transducer is not None
            step("exporting ONNX (fp32): encoder, prediction network step, joint")
            export_transducer_onnx(model, path, config.transducer, n_mels=n_mels)
        else:
            step("exporting ONNX (fp32, dynamic time axis)")
            export_onnx(model, path, n_mels=n_mels)

    return _build(
        config, source.vocabulary, out_dir, clips, options, write_fp32=write_fp32,
        reference=torch_system(source), step=step, on_clip=on_clip,
    )  # fmt: skip


def export_onnx_bundle(
    onnx_path: Path,
    source: ModelDescription,
    out_dir: Path,
    clips: Sequence[Clip],
    options: ExportOptions,
    *,
    step: Step = print,
    on_clip: Callable[[Clip], object] = lambda clip: None,
) -> ModelBundle:
    """Bundle an already-exported fp32 graph (GigaAM ``to_onnx``, NeMo ``export``); for a
    transducer ``onnx_path`` is the encoder, with its decoder and joint beside it
    (``export.onnx_graphs``).

    There is no PyTorch original here: the fp32 graphs are the reference, so the log-prob
    check compares them with themselves and int8 is gated against them.
    """
    _refuse_existing(out_dir, options)
    config = _bundle_config(source, options, {"onnx_sha256": sha256_of(onnx_path)})
    graphs = upstream_graphs(onnx_path, transducer=source.transducer is not None)
    config = replace(
        config,
        model=graphs.model_config(config.model),
        transducer=graphs.transducer_config(config.transducer),
    )

    def copy_fp32(path: Path) -> None:
        step(f"checking {', '.join(p.name for p in graphs.files())}")
        shutil.copyfile(onnx_path, path)
        if config.transducer is not None:
            assert graphs.decoder is not None and graphs.joint is not None
            shutil.copyfile(graphs.decoder.path, path.parent / config.transducer.decoder_file)
            shutil.copyfile(graphs.joint.path, path.parent / config.transducer.joint_file)

    return _build(
        config, source.vocabulary, out_dir, clips, options, write_fp32=copy_fp32,
        reference=None, step=step, on_clip=on_clip,
    )  # fmt: skip


def _refuse_existing(out_dir: Path, options: ExportOptions) -> None:
    if out_dir.exists() and not options.overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --force to replace it")


def _bundle_config(
    source: ModelDescription, options: ExportOptions, extra: dict[str, object]
) -> BundleConfig:
    scheme = options.scheme_for(source.family)
    return BundleConfig(
        model_id=options.model_id,
        family=source.family,
        frontend=source.frontend,
        model=ModelConfig(
            file="model.onnx",
            log_probs_output="log_probs" if source.transducer is None else "encoded",
            output="log_probs" if source.transducer is None else "encoded",
            subsampling=source.subsampling,
            precision="int8" if options.precision == "int8" else "fp32",
            max_window_seconds=source.max_window_seconds,
        ),
        transducer=source.transducer,
        tokens=TokensConfig(
            file="tokens.txt", kind=source.token_kind, blank_id=source.vocabulary.blank_id
        ),
        source={
            **source.source,
            **extra,
            "quantization": scheme.to_dict() if options.precision == "int8" else None,
            **exporter_versions(),
        },
    )


def exporter_versions() -> dict[str, str]:
    """The versions that wrote a bundle, for its provenance."""
    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
    }


def _build(
    config: BundleConfig,
    vocabulary: Vocabulary,
    out_dir: Path,
    clips: Sequence[Clip],
    options: ExportOptions,
    *,
    write_fp32: Callable[[Path], None],
    reference: System | None,
    step: Step,
    on_clip: Callable[[Clip], object],
) -> ModelBundle:
    frontend = make_frontend(config.frontend)
    scheme = options.scheme_for(config.family)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
        stage = Path(tmp)
        fp32_path, int8_path = stage / "model.fp32.onnx", stage / "model.int8.onnx"
        write_fp32(fp32_path)
        fp32 = _staged_system(fp32_path, config, vocabulary)
        step(f"quantizing to int8 ({scheme.name})")
        calibration = (
            [frontend(clip.samples) for clip in clips[:CALIBRATION_CLIPS]]
            if scheme.method == "static_qdq"
            else []
        )
        quantize(
            fp32_path, int8_path, scheme, calibration=calibration,
            input_names=(config.model.features_input, config.model.lengths_input),
        )  # fmt: skip
        step("optimising the graphs (onnxruntime, extended level)")
        graph = preoptimize(int8_path)
        if options.precision != "int8":
            preoptimize(fp32_path)
        against = "PyTorch vs ONNX fp32 vs int8" if reference else "ONNX fp32 vs int8"
        step(f"verifying on {len(clips)} clips: {against}")
        report = verify(
            clips,
            frontend,
            reference=reference or fp32,
            fp32=fp32,
            int8=_staged_system(int8_path, config, vocabulary),
            thresholds=options.thresholds,
            progress=on_clip,
        )
        report_data = {
            **report.to_dict(),
            "model_id": options.model_id,
            "source": config.source,
            "graph_optimization": graph,
        }
        if not report.passed:
            failed_path = out_dir.parent / f"{out_dir.name}.verification-failed.json"
            failed_path.write_text(json.dumps(report_data, ensure_ascii=False, indent=2))
            raise ExportRejected(report, failed_path)

        step("writing the bundle")
        bundle_dir = stage / "bundle"
        bundle_dir.mkdir()
        chosen = int8_path if options.precision == "int8" else fp32_path
        shutil.copyfile(chosen, bundle_dir / config.model.file)
        if config.transducer is not None:
            for name in (config.transducer.decoder_file, config.transducer.joint_file):
                shutil.copyfile(stage / name, bundle_dir / name)
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


def _staged_system(path: Path, config: BundleConfig, vocabulary: Vocabulary) -> System:
    """The staged graphs as the runtime will run them, with ``path`` as model.onnx."""
    config = replace(config, model=replace(config.model, file=path.name))
    return onnx_system(ModelBundle(path.parent, config, vocabulary, {}))
