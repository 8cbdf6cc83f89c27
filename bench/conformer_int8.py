"""Benchmark: int8 schemes for Conformer CTC vs fp32 on GigaAM v3's exact shapes.

    .venv/bin/python bench/conformer_int8.py [--layers 16] [--seconds 20] [--repeats 5]

A random-weight model with v3_ctc's shapes (conv1d subsampling ×4, 16 layers, d_model 768,
16 heads, rotary, conv kernel 5, layer-norm conv module, 34 classes; ~220 M parameters) is
exported once; every scheme in ``export.quantize.SCHEMES`` is applied to it and timed on
real speech (../shared/data/speech clips concatenated, v3 front end), warm, at 1 and 2
threads (median of ``--repeats``). Random weights: speed only. Accuracy per scheme comes
from the trained demo Conformer (``--demo-checkpoint``), via the export verification gate.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO.parent / "shared" / "data" / "speech"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "lambda_app"))

from asr.config import GigaamMelConfig  # noqa: E402
from asr.frontend import make_frontend  # noqa: E402
from asr.resample import resample  # noqa: E402

from bench.quartznet_speed import cold_start  # noqa: E402
from export.clips import file_clips  # noqa: E402
from export.conformer import ConformerCTC, ConformerSpec  # noqa: E402
from export.onnx_export import export_onnx  # noqa: E402
from export.onnx_import import describe_graph  # noqa: E402
from export.pipeline import ExportOptions, export_onnx_bundle  # noqa: E402
from export.quantize import CONFORMER_SCHEME, SCHEMES, quantize  # noqa: E402
from export.verify import Thresholds  # noqa: E402

V3_FRONTEND = GigaamMelConfig(n_fft=320, win_length=320, center=False, bf16_buffers=True)


def v3_spec(layers: int) -> ConformerSpec:
    return ConformerSpec(
        feat_in=64, n_layers=layers, d_model=768, n_heads=16, num_classes=34,
        conv_kernel_size=5, conv_norm="layer_norm", attention="rotary",
        subsampling="conv1d", subsampling_factor=4, subsampling_kernel=5,
    )  # fmt: skip


def speech(seconds: float) -> np.ndarray:
    """Real Russian speech, clips concatenated (0.3 s gaps) to ``seconds`` at 16 kHz."""
    pieces: list[np.ndarray] = []
    total = 0
    paths = sorted((SPEECH / "ru").glob("*.wav"))
    while total < seconds * 16000:
        for path in paths:
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
            pieces += [resample(audio.mean(axis=1), rate, 16000), np.zeros(4800, np.float32)]
            total += pieces[-2].size + 4800
    return np.concatenate(pieces)[: int(seconds * 16000)]


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, features: np.ndarray) -> np.ndarray:
    feeds = {
        "features": features[np.newaxis],
        "feature_lengths": np.array([features.shape[1]], dtype=np.int64),
    }
    return np.asarray(sess.run(["log_probs"], feeds)[0][0])


def measure(path: Path, features: np.ndarray, seconds: float, repeats: int) -> dict[str, Any]:
    result: dict[str, Any] = {"size_mb": round(path.stat().st_size / 1e6, 1)}
    for threads in (1, 2):
        started = time.perf_counter()
        sess = session(path, threads)
        result[f"load_s_{threads}t"] = round(time.perf_counter() - started, 2)
        run(sess, features)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run(sess, features)
            times.append(time.perf_counter() - started)
        result[f"rtf_{threads}t"] = round(statistics.median(times) / seconds, 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--schemes", nargs="*", default=list(SCHEMES))
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/conformer_int8.json")
    parser.add_argument(
        "--first-request-only",
        action="store_true",
        help="re-measure only the bundles' first request, into the existing --out report",
    )
    args = parser.parse_args()
    if args.first_request_only:
        refresh_first_request(args)
        return

    audio = speech(args.seconds)
    features = make_frontend(V3_FRONTEND)(audio)
    calibration = [make_frontend(V3_FRONTEND)(speech(5.0))]
    torch.manual_seed(0)
    model = ConformerCTC(v3_spec(args.layers)).eval()
    parameters = sum(p.numel() for p in model.parameters())
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, fp32, n_mels=64)
        del model
        rows["fp32"] = measure(fp32, features, args.seconds, args.repeats)
        reference = run(session(fp32, 2), features)
        print("fp32", rows["fp32"], flush=True)
        for name in args.schemes:
            int8 = Path(tmp) / f"{name}.onnx"
            started = time.perf_counter()
            quantize(fp32, int8, SCHEMES[name], calibration=calibration)
            row = {"quantize_s": round(time.perf_counter() - started, 1)}
            row.update(measure(int8, features, args.seconds, args.repeats))
            output = run(session(int8, 2), features)
            row["frame_argmax_agreement"] = round(
                float((output.argmax(-1) == reference.argmax(-1)).mean()), 4
            )
            rows[name] = row
            print(name, row, flush=True)
            int8.unlink()
        bundles = first_request(fp32, Path(tmp))
    report = {
        "shape": f"GigaAM v3 CTC ({args.layers} layers, d_model 768), random weights",
        "parameters": parameters,
        "audio_seconds": args.seconds,
        "machine": platform.processor() or platform.machine(),
        "cpu_flags": _cpu_flags(),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "results": rows,
        "bundles": bundles,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(rows))


def refresh_first_request(args: argparse.Namespace) -> None:
    report = json.loads(args.out.read_text())
    torch.manual_seed(0)
    model = ConformerCTC(v3_spec(args.layers)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, fp32, n_mels=64)
        del model
        report["bundles"] = first_request(fp32, Path(tmp))
    args.out.write_text(json.dumps(report, indent=2) + "\n")


def first_request(fp32: Path, workdir: Path) -> dict[str, dict[str, Any]]:
    """fp32 and default-int8 bundles of the graph: size and first request in a fresh
    process (imports, bundle load, a 5 s clip), as a cold Lambda would run them."""
    tokens = workdir / "tokens.txt"
    tokens.write_text("".join(f"{t} {i}\n" for i, t in enumerate(CHAR_TOKENS)), "utf-8")
    description = describe_graph(tokens, "gigaam-v3")
    clip = sorted((SPEECH / "ru").glob("*.wav"))[0]
    gate_off = Thresholds(min_int8_token_agreement=0.0, max_int8_cer_vs_fp32=1.0)
    results: dict[str, dict[str, Any]] = {}
    for precision in ("fp32", "int8"):
        out = workdir / f"bundle-{precision}"
        options = ExportOptions(model_id=f"v3-shape-{precision}", thresholds=gate_off,
                                precision=precision)  # fmt: skip
        export_onnx_bundle(
            fp32, description, out, file_clips([clip], 16000), options, step=lambda m: None
        )
        row: dict[str, Any] = {"model_mb": round((out / "model.onnx").stat().st_size / 1e6, 1)}
        row |= {k: round(v, 2) for k, v in cold_start(out, clip).items()}
        results[precision if precision == "fp32" else CONFORMER_SCHEME.name] = row
        print(precision, row, flush=True)
    return results


CHAR_TOKENS = ["▁", *(chr(c) for c in range(ord("а"), ord("я") + 1) if chr(c) != "ё"), "<blk>"]


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    wanted = {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"}
    return sorted(wanted & set(text.split()))


def _table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| scheme | size MB | RTF 1 thread | RTF 2 threads | load s | argmax agreement |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['size_mb']} | {row['rtf_1t']} | {row['rtf_2t']} | "
            f"{row['load_s_1t']} | {row.get('frame_argmax_agreement', 1.0)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
