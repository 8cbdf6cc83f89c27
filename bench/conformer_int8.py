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
import torch

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO.parent / "shared" / "data" / "speech"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "lambda_app"))

from asr.config import GigaamMelConfig  # noqa: E402
from asr.frontend import make_frontend  # noqa: E402

from bench.common import machine, real_speech  # noqa: E402
from export.conformer import ConformerCTC, ConformerSpec  # noqa: E402
from export.onnx_export import export_onnx  # noqa: E402
from export.quantize import SCHEMES, quantize  # noqa: E402

V3_FRONTEND = GigaamMelConfig(n_fft=320, win_length=320, center=False, bf16_buffers=True)


def v3_spec(layers: int) -> ConformerSpec:
    return ConformerSpec(
        feat_in=64, n_layers=layers, d_model=768, n_heads=16, num_classes=34,
        conv_kernel_size=5, conv_norm="layer_norm", attention="rotary",
        subsampling="conv1d", subsampling_factor=4, subsampling_kernel=5,
    )  # fmt: skip


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
    args = parser.parse_args()

    audio = real_speech(args.seconds)
    features = make_frontend(V3_FRONTEND)(audio)
    calibration = [make_frontend(V3_FRONTEND)(real_speech(5.0))]
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
    report = {
        "shape": f"GigaAM v3 CTC ({args.layers} layers, d_model 768), random weights",
        "parameters": parameters,
        "audio_seconds": args.seconds,
        "machine": platform.processor() or platform.machine(),
        "cpu_flags": machine()["cpu_flags"],
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(rows))


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
