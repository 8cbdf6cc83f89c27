"""Where the model's time goes, and how far it is from this CPU's peak.

onnxruntime's profiler runs each int8 (and fp32) shape bundle's graph, as our runtime
creates it, on the features of 20 s of real speech, one thread. Per operator type: its share
of the time and, for the products (MatMul, Conv and their integer and fused forms), the
multiply-accumulates computed from the shapes the profiler records. The peak is measured,
not quoted: one large matrix product ([4096, 768] x [768, 3072]) quantised by the same
scheme and run by the same kernels, fp32 alike. Distance from the peak = the model's MACs per
second of its product operators, and of the whole run, over that product's.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from asr.acoustic_model import session_options
from asr.bundle import load_bundle
from asr.frontend import make_frontend
from onnx import TensorProto, helper, numpy_helper

from bench.common import BenchOptions, bench_main, markdown_table, real_speech
from bench.models import FAMILY_INFO, PRECISIONS, Family, Precision, bundle_for
from export.quantize import CONFORMER_SCHEME, DEFAULT_SCHEME, quantize

NAME = "model_profile"
TITLE = "Model profile"
FAMILIES: tuple[Family, ...] = ("gigaam_v3", "quartznet15x5")
SECONDS = 20.0
RUNS = 3
# Which input holds the weight (the K dimension) in each product operator.
WEIGHT_INPUT = {
    "MatMul": 1, "MatMulInteger": 1, "FusedMatMul": 1, "DynamicQuantizeMatMul": 1,
    "MatMulIntegerToFloat": 1, "Gemm": 1, "QLinearMatMul": 3,
    "Conv": 1, "ConvInteger": 1, "FusedConv": 1, "QLinearConv": 3, "NhwcFusedConv": 1,
}  # fmt: skip
CONV_LIKE = {"Conv", "ConvInteger", "FusedConv", "QLinearConv", "NhwcFusedConv"}
PEAK_SHAPE = (4096, 768, 3072)  # M, K, N


def node_macs(op: str, inputs: list[list[int]], output: list[int], weight: list[int]) -> int:
    """Multiply-accumulates of one product node (0 for other operators). The profiler records
    the shapes of run-time inputs only, not of initializers: a product's K comes from its
    activation's last axis, a convolution's from its weight in the optimised graph."""
    if op not in WEIGHT_INPUT or not output or not inputs or not inputs[0]:
        return 0
    if op in CONV_LIKE:
        return math.prod(output) * math.prod(weight[1:]) if weight else 0  # C_in/g x kernel
    return math.prod(output) * inputs[0][-1]


def _shapes(entries: list[dict[str, list[int]]]) -> list[list[int]]:
    return [next(iter(entry.values())) for entry in entries]


def _weight_dims(optimised: Path) -> dict[str, list[int]]:
    """Node name -> the dims of its weight initializer, in the graph onnxruntime runs."""
    graph = onnx.load(str(optimised)).graph
    dims = {init.name: list(init.dims) for init in graph.initializer}
    weights = {}
    for node in graph.node:
        index = WEIGHT_INPUT.get(node.op_type)
        if index is not None and len(node.input) > index and node.input[index] in dims:
            weights[node.name] = dims[node.input[index]]
    return weights


def profile_graph(model: Path, feeds: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
    """Per op type over the last of ``runs`` runs: microseconds and MACs; and the run's wall."""
    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(1)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        walls = []
        for _ in range(runs):
            started = time.perf_counter()
            session.run(None, feeds)
            walls.append(time.perf_counter() - started)
        events = json.loads(Path(session.end_profiling()).read_text())
        weights = _weight_dims(Path(options.optimized_model_filepath))
    last_run = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-1]
    start, end = last_run["ts"], last_run["ts"] + last_run["dur"]
    by_op: dict[str, dict[str, float]] = defaultdict(lambda: {"us": 0.0, "macs": 0.0, "nodes": 0})
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        if not start <= event["ts"] <= end:
            continue
        args = event["args"]
        op = args["op_name"]
        entry = by_op[op]
        entry["us"] += event["dur"]
        entry["nodes"] += 1
        output = _shapes(args.get("output_type_shape", []))
        node = event["name"].removesuffix("_kernel_time")
        entry["macs"] += node_macs(
            op,
            _shapes(args.get("input_type_shape", [])),
            output[0] if output else [],
            weights.get(node, []),
        )
    return {"wall_s": min(walls), "run_us": last_run["dur"], "ops": dict(by_op)}


def peak_gmacs(precision: Precision, family: Family, tmp: Path) -> float:
    """GMAC/s of one large product through the kernels the family's bundle uses."""
    m, k, n = PEAK_SHAPE
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"])],
        "peak",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [weight],
    )
    fp32 = tmp / "peak.fp32.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, fp32)
    path = fp32
    if precision == "int8":
        path = tmp / "peak.int8.onnx"
        scheme = CONFORMER_SCHEME if family.startswith("gigaam") else DEFAULT_SCHEME
        quantize(fp32, path, scheme)
    session = ort.InferenceSession(
        str(path), session_options(1), providers=["CPUExecutionProvider"]
    )
    feeds = {"a": rng.standard_normal((m, k)).astype(np.float32)}
    session.run(None, feeds)
    best = min(_timed(session, feeds) for _ in range(5))
    return m * k * n / best / 1e9


def _timed(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> float:
    started = time.perf_counter()
    session.run(None, feeds)
    return time.perf_counter() - started


def measure(options: BenchOptions) -> dict[str, Any]:
    seconds = 4.0 if options.quick else SECONDS
    audio = real_speech(seconds)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            for precision in ("int8",) if options.quick else PRECISIONS:
                bundle = load_bundle(bundle_for(family, precision, options))
                features = make_frontend(bundle.config.frontend)(audio)
                io = bundle.config.model
                feeds: dict[str, np.ndarray] = {
                    io.features_input: features[None].astype(np.float32),
                    io.lengths_input: np.array([features.shape[1]], dtype=np.int64),
                }
                profile = profile_graph(bundle.model_path, feeds, 1 if options.quick else RUNS)
                peak = peak_gmacs(precision, family, Path(tmp))
                rows.append(_row(family, precision, seconds, profile, peak))
                print({k: v for k, v in rows[-1].items() if k != "ops"}, flush=True)
    return {
        "quick": options.quick, "audio_seconds": seconds, "peak_shape": PEAK_SHAPE, "rows": rows,
    }  # fmt: skip


def _row(
    family: Family, precision: Precision, seconds: float, profile: dict[str, Any], peak: float
) -> dict[str, Any]:
    ops = profile["ops"]
    kernel_us = sum(op["us"] for op in ops.values())
    macs = sum(op["macs"] for op in ops.values())
    product_us = sum(op["us"] for op in ops.values() if op["macs"])
    top = sorted(ops.items(), key=lambda item: -item[1]["us"])
    return {
        "family": family,
        "precision": precision,
        "rtf": round(profile["wall_s"] / seconds, 4),
        "gmacs_per_audio_second": round(macs / seconds / 1e9, 2),
        "product_share": round(product_us / kernel_us, 3),
        "product_gmacs": round(macs / (product_us / 1e6) / 1e9, 1),
        "overall_gmacs": round(macs / profile["wall_s"] / 1e9, 1),
        "peak_gmacs": round(peak, 1),
        "ops": [
            {"op": name, "share": round(op["us"] / kernel_us, 4), "nodes": int(op["nodes"]),
             "gmacs": round(op["macs"] / (op["us"] / 1e6) / 1e9, 1) if op["macs"] else None}
            for name, op in top
        ],
    }  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    summary = markdown_table(
        ["model (shape)", "precision", "RTF", "GMAC per audio s", "products' share of time",
         "products GMAC/s", "whole run GMAC/s", "peak GMAC/s", "of peak (products / whole)"],
        [
            [FAMILY_INFO[r["family"]].label, r["precision"], f"{r['rtf']:.4f}",
             r["gmacs_per_audio_second"], f"{r['product_share']:.0%}", r["product_gmacs"],
             r["overall_gmacs"], r["peak_gmacs"],
             f"**{r['product_gmacs'] / r['peak_gmacs']:.0%}** / "
             f"{r['overall_gmacs'] / r['peak_gmacs']:.0%}"]
            for r in result["rows"]
        ],
    )  # fmt: skip
    ops = markdown_table(
        ["model (shape)", "precision", "top operators (share of kernel time; GMAC/s)"],
        [
            [FAMILY_INFO[r["family"]].label, r["precision"], "; ".join(
                f"{o['op']} {o['share']:.0%}" + (f" ({o['gmacs']})" if o["gmacs"] else "")
                for o in r["ops"][:6])]
            for r in result["rows"]
        ],
    )  # fmt: skip
    m, k, n = result["peak_shape"]
    return (
        f"{summary}\n\n{ops}\n\nonnxruntime's profiler, one thread, one "
        f"{result['audio_seconds']:g} s pass of real speech's features through each bundle's "
        "graph (the pre-optimised file, our session options). MACs from the shapes the "
        f"profiler records. Peak: a [{m}, {k}] x [{k}, {n}] product quantised by the same "
        "scheme (int8) or left fp32, best of 5 runs on the same kernels."
    )


if __name__ == "__main__":
    bench_main(NAME, measure, markdown)
