"""Benchmark: GigaAM v3 RNNT through this runtime and through onnx-asr, on the same graphs.

onnx-asr (``gigaam-v3-rnnt``, its ``GigaamV2Rnnt``) loads a directory of GigaAM ``to_onnx``
files: ``v3_rnnt_encoder.onnx`` (audio_signal, length → encoded, encoded_len int32),
``v3_rnnt_decoder.onnx`` (x, h.1, c.1 → dec, h, c), ``v3_rnnt_joint.onnx`` (enc, dec → joint),
``v3_vocab.txt`` and ``config.json``. ``write_layout`` writes our bundle's three graphs there
with only their I/O renamed (and the encoder's lengths cast to int32, which onnx-asr asserts),
and ``max_tokens_per_step`` set to the bundle's ``max_symbols_per_step`` (10, upstream's
PyTorch default; onnx-asr's own default is 3), so both apply the same greedy rules.

Timed as ``bench.onnx_asr_side_by_side`` times CTC: same session options, a warm-up pass,
``repeats`` passes interleaved, the fastest kept; the 17 real clips one at a time, and a
20 s WAV. Each pass is split into front end, encoder, decode loop (ours: the batched
prediction-network/joint loop; theirs: its per-utterance loop with the text) and the rest.
Agreement of the transcripts is measured on the shape bundles and on the trained demo
transducer (its held-out clips and the real clips).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

import onnx
from asr.bundle import load_bundle
from asr.transcribe import Transcriber
from onnx_asr.models.gigaam import GigaamV2Rnnt

from bench.common import (
    BenchOptions,
    bench_main,
    markdown_table,
    speech_clips,
)
from bench.models import DEMO_BUNDLES, FAMILY_INFO
from bench.onnx_asr_agreement import read_clip, their_features, theirs_preprocessor
from bench.onnx_asr_engines import QUICK_CLIPS, Pass, agreement, timed_grid
from bench.onnx_asr_layout import OnnxAsrModel, load_onnx_asr, onnx_asr_version

NAME = "onnx_asr_rnnt"
TITLE = "GigaAM v3 RNNT beside onnx-asr"
STAGES = ("features", "encoder", "decode loop", "other")
DEMO_AUDIO = DEMO_BUNDLES["gigaam_v3_rnnt"].parent / "audio"


def write_layout(bundle_dir: Path, out: Path) -> OnnxAsrModel:
    """onnx-asr's GigaAM RNNT directory for one of our transducer bundles."""
    bundle = load_bundle(bundle_dir)
    config, transducer = bundle.config, bundle.config.transducer
    if transducer is None:
        raise ValueError(f"{bundle_dir} is not a transducer bundle")
    release = onnx_asr_version(bundle)
    quantization = "int8" if config.model.precision == "int8" else None
    suffix = f".{quantization}" if quantization else ""
    out.mkdir(parents=True, exist_ok=True)
    io = config.model
    _renamed(
        bundle.model_path,
        out / f"{release}_rnnt_encoder{suffix}.onnx",
        {io.features_input: "audio_signal", io.lengths_input: "length",
         io.log_probs_output: "encoded"},
        int32_output=(io.lengths_output, "encoded_len"),
    )  # fmt: skip
    decoder_names = dict(
        zip(
            (*transducer.decoder_inputs, *transducer.decoder_outputs),
            ("x", "h.1", "c.1", "dec", "h", "c"),
            strict=True,
        )
    )
    _renamed(bundle.root / transducer.decoder_file, out / f"{release}_rnnt_decoder{suffix}.onnx",
             decoder_names)  # fmt: skip
    joint_names = dict(zip((*transducer.joint_inputs, transducer.joint_output),
                           ("enc", "dec", "joint"), strict=True))  # fmt: skip
    _renamed(bundle.root / transducer.joint_file, out / f"{release}_rnnt_joint{suffix}.onnx",
             joint_names)  # fmt: skip
    vocabulary = bundle.vocabulary
    lines = ["<blk>" if i == vocabulary.blank_id else t for i, t in enumerate(vocabulary.tokens)]
    (out / f"{release}_vocab.txt").write_text(
        "".join(f"{token} {index}\n" for index, token in enumerate(lines)), encoding="utf-8"
    )
    settings = {
        "model_type": f"gigaam-{release}-rnnt",
        "version": release,
        "features_size": config.frontend.n_mels,
        "subsampling_factor": io.subsampling,
        "max_tokens_per_step": transducer.max_symbols_per_step,
    }
    (out / "config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return OnnxAsrModel(out, str(settings["model_type"]), quantization, out)


def _renamed(
    source: Path, target: Path, names: dict[str, str], int32_output: tuple[str, str] | None = None
) -> None:
    """A copy of ``source`` with graph inputs/outputs renamed; ``int32_output`` (old, new)
    becomes a Cast to int32 of that output."""
    model = onnx.load(str(source))
    graph = model.graph
    for value in (*graph.input, *graph.output):
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
    if int32_output is not None:
        old, new = int32_output
        output = next(o for o in graph.output if o.name == old)
        for node in graph.node:
            node.input[:] = [f"{old}.int64" if name == old else name for name in node.input]
            node.output[:] = [f"{old}.int64" if name == old else name for name in node.output]
        graph.node.append(onnx.helper.make_node("Cast", [f"{old}.int64"], [new], to=6))
        output.name = new
        output.type.tensor_type.elem_type = onnx.TensorProto.INT32
    onnx.save(model, str(target))


class Ours:
    def __init__(self, bundle_dir: Path, threads: int) -> None:
        self.transcriber = Transcriber(load_bundle(bundle_dir), threads=threads)

    def __call__(self, paths: Sequence[Path]) -> Pass:
        result = Pass.over(STAGES)
        for path in paths:
            started = time.perf_counter()
            transcript = self.transcriber.transcribe(path)
            total = time.perf_counter() - started
            timings = transcript.timings
            result.texts.append(transcript.text)
            result.seconds["features"] += timings.features
            result.seconds["encoder"] += timings.model
            result.seconds["decode loop"] += timings.decoder
            result.seconds["other"] += total - timings.features - timings.model - timings.decoder
        return result


class Theirs:
    """onnx-asr's recogniser, its front end, encoder and decoding wrapped in timers."""

    def __init__(self, model: OnnxAsrModel, threads: int) -> None:
        self.recogniser = load_onnx_asr(model, threads)
        asr = cast(GigaamV2Rnnt, self.recogniser.asr)
        self.current = dict.fromkeys(STAGES, 0.0)
        # The wrappers pass arguments and results through untouched.
        asr._preprocessor = self._timed(asr._preprocessor, "features")
        asr._encode = self._timed(asr._encode, "encoder")  # type: ignore[method-assign]
        asr._decoding = self._timed(asr._decoding, "decode loop", drain=True)  # type: ignore[method-assign]

    def _timed(self, call: Callable[..., Any], stage: str, drain: bool = False) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = call(*args, **kwargs)
            if drain:  # a generator: its work happens as it is consumed
                result = list(result)
            self.current[stage] += time.perf_counter() - started
            return result

        return timed

    def __call__(self, paths: Sequence[Path]) -> Pass:
        result = Pass.over(STAGES)
        for path in paths:
            self.current = dict.fromkeys(STAGES, 0.0)
            started = time.perf_counter()
            text = self.recogniser.recognize(str(path))
            total = time.perf_counter() - started
            result.texts.append(str(text))
            for stage in ("features", "encoder", "decode loop"):
                result.seconds[stage] += self.current[stage]
            result.seconds["other"] += total - sum(self.current.values())
        return result


def measure(options: BenchOptions) -> dict[str, Any]:
    clips = speech_clips()[:QUICK_CLIPS] if options.quick else speech_clips()

    def engines(
        bundle: Path, layout: OnnxAsrModel, threads: int
    ) -> tuple[Ours, Theirs, dict[str, Any]]:
        return Ours(bundle, threads), Theirs(layout, threads), {}

    with tempfile.TemporaryDirectory() as tmp:
        runs = timed_grid(
            options,
            "gigaam_v3_rnnt",
            clips=clips,
            tmp=Path(tmp),
            write_layout=write_layout,
            engines=engines,
        )
        trained = _trained_agreement(clips, Path(tmp) / "demo")
    return {
        "quick": options.quick,
        "onnx_asr": version("onnx-asr"),
        "family": FAMILY_INFO["gigaam_v3_rnnt"].shape,
        "repeats": options.repeats,
        "statistic": "best (minimum) of the repeats; the median is kept too",
        "runs": runs,
        "trained": trained,
    }


def _trained_agreement(clips: Sequence[Path], tmp: Path) -> list[dict[str, Any]]:
    """The trained demo transducer (int8) through both at 1 thread."""
    bundle = DEMO_BUNDLES["gigaam_v3_rnnt"]
    manifest = [
        json.loads(line) for line in (DEMO_AUDIO / "manifest.jsonl").read_text("utf-8").splitlines()
    ]
    held_out = [DEMO_AUDIO / entry["audio_filepath"] for entry in manifest]
    references = [entry["text"] for entry in manifest]
    ours, theirs = Ours(bundle, 1), Theirs(write_layout(bundle, tmp), 1)
    sets = []
    for name, paths in (("demo/audio held-out espeak clips", held_out), ("real clips", clips)):
        mine, their = ours(list(paths)).texts, theirs(list(paths)).texts
        entry: dict[str, Any] = {"set": f"{len(paths)} {name}", **agreement(mine, their)}
        if paths is held_out:
            entry["ours_exact"] = sum(a == r for a, r in zip(mine, references, strict=True))
            entry["theirs_exact"] = sum(b == r for b, r in zip(their, references, strict=True))
        else:
            differing = [(p, b) for p, a, b in zip(paths, mine, their, strict=True) if a != b]
            entry["differing"] = len(differing)
            entry["ours_on_their_features_gives_theirs"] = sum(
                _on_their_features(ours.transcriber, path) == text for path, text in differing
            )
        sets.append(entry)
    return sets


def _on_their_features(transcriber: Transcriber, path: Path) -> str:
    """Our encoder and decode loop on onnx-asr's features of ``path``."""
    features = their_features(theirs_preprocessor(), read_clip(path))
    encoded = transcriber.model(features)
    return transcriber.search([encoded], [0.0], transcriber.default_decoding)[0].text


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for r in result["runs"]:
        ours, theirs = r["stages_s"]["ours"], r["stages_s"]["theirs"]
        seconds = r["audio_seconds"]
        rows.append([
            r["precision"], r["threads"], r["workload"],
            f"{r['ours_s'] / seconds:.4f}", f"{r['theirs_s'] / seconds:.4f}",
            f"**{r['speed_ratio']:.2f}×**",
            f"{ours['encoder']:.3f} / {theirs['encoder']:.3f}",
            f"{ours['decode loop']:.3f} / {theirs['decode loop']:.3f}",
            f"{ours['decode loop'] / max(ours['encoder'], 1e-9):.1%}",
            f"{r['agreement']['identical']} / {r['agreement']['total']}",
        ])  # fmt: skip
    speed = markdown_table(
        ["precision", "threads", "workload", "ours RTF", "onnx-asr RTF",
         "speed ratio (onnx-asr / ours)", "encoder s ours / onnx-asr",
         "decode loop s ours / onnx-asr", "our loop / our encoder", "identical transcripts"],
        rows,
    )  # fmt: skip
    trained = markdown_table(
        ["trained demo transducer", "identical", "char agreement", "differing, explained"],
        [
            [
                t["set"],
                f"{t['identical']} / {t['total']}",
                f"{t['char_agreement']:.4f}",
                (
                    f"{t['ours_on_their_features_gives_theirs']} of {t['differing']}"
                    if "differing" in t
                    else "—"
                ),
            ]
            for t in result["trained"]
        ],
    )
    return (
        f"{result['family']}: our bundle's three graphs, renamed for onnx-asr "
        f"{result['onnx_asr']} (same weights, same greedy rules, up to 10 symbols per frame); "
        f"{result['repeats']} passes each, interleaved: {result['statistic']}. The encoder is "
        "the same graph on both sides; the decode loops run the same decoder and joint graphs "
        "(ours: the batched loop of `asr.transducer`, one onnxruntime thread for the small "
        "graphs; onnx-asr: its per-utterance loop, with the session's threads).\n\n"
        f"{speed}\n\nThe trained demo transducer (int8) through both at 1 thread. On real "
        "speech, which it never heard, its outputs are near ties, and where the two differ the "
        "features decide: our encoder and loop fed onnx-asr's features give onnx-asr's "
        "transcript (“explained”); onnx-asr computes GigaAM v3's front end in float32 with its "
        "own filterbank (see the CTC comparison above).\n\n"
        f"{trained}"
    )


if __name__ == "__main__":
    bench_main(NAME, measure, markdown)
