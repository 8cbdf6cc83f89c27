"""What the peers benchmark runs besides our Transcriber and onnx-asr's recogniser: sherpa-onnx's
offline recogniser, the fresh-process cold starts of all three, and the trained demo Conformer
(its PyTorch transcripts and its fp32 graph)."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import soundfile as sf

from bench.common import REPO
from bench.onnx_asr_engines import Pass
from bench.peer_recipes import SHERPA_MODEL
from bench.pinned import run_pinned

DEMO_CHECKPOINT = REPO / "demo" / "model" / "demo_gigaam_ru.ckpt"
DEMO_BUNDLE = REPO / "demo" / "conformer_bundle"
DEMO_AUDIO = REPO / "demo" / "audio"


def sherpa_text(text: str) -> str:
    """sherpa-onnx joins GigaAM's tokens as written: the word mark becomes a space."""
    return " ".join(text.replace("▁", " ").split())


class Sherpa:
    """sherpa-onnx's offline NeMo CTC recogniser (GigaAM through its metadata) on WAV paths:
    read, one stream per file, decoded alone."""

    def __init__(self, root: Path, threads: int) -> None:
        import sherpa_onnx  # type: ignore[import-untyped]  # noqa: PLC0415 (benchmark-only)

        self.recogniser = sherpa_onnx.OfflineRecognizer.from_nemo_ctc(
            model=str(root / SHERPA_MODEL),
            tokens=str(root / "tokens.txt"),
            num_threads=threads,
            sample_rate=16000,
            feature_dim=64,
            decoding_method="greedy_search",
            provider="cpu",
        )

    def __call__(self, paths: Sequence[Path]) -> Pass:
        result = Pass.over(("total",))
        for path in paths:
            started = time.perf_counter()
            samples, rate = sf.read(path, dtype="float32")
            stream = self.recogniser.create_stream()
            stream.accept_waveform(rate, samples)
            self.recogniser.decode_stream(stream)
            text = sherpa_text(stream.result.text)
            result.seconds["total"] += time.perf_counter() - started
            result.texts.append(text)
        return result


# Fresh-process children: import, load, first transcript; seconds per stage as JSON.
_TIMED = """
import json, time
started = time.perf_counter()
{imports}
imported = time.perf_counter()
{load}
loaded = time.perf_counter()
{first}
done = time.perf_counter()
print(json.dumps({{"imports_s": imported - started, "load_s": loaded - imported,
                  "first_clip_s": done - loaded}}))
"""
_CHILDREN = {
    "ours": (
        "from asr.transcribe import Transcriber",
        "engine = Transcriber.from_dir({root!r}, threads=1)",
        "engine.transcribe({clip!r})",
    ),
    "onnx_asr": (
        "import onnx_asr, onnxruntime",
        "options = onnxruntime.SessionOptions()\noptions.intra_op_num_threads = 1\n"
        "engine = onnx_asr.load_model({model_type!r}, {root!r}, quantization='int8', "
        "sess_options=options, providers=['CPUExecutionProvider'])",
        "engine.recognize({clip!r})",
    ),
    "sherpa_onnx": (
        "import sherpa_onnx, soundfile",
        "engine = sherpa_onnx.OfflineRecognizer.from_nemo_ctc(model={root!r} + '/"
        + SHERPA_MODEL
        + "', tokens={root!r} + '/tokens.txt', num_threads=1, feature_dim=64)",
        "samples, rate = soundfile.read({clip!r}, dtype='float32')\n"
        "stream = engine.create_stream()\nstream.accept_waveform(rate, samples)\n"
        "engine.decode_stream(stream)",
    ),
}


def cold_start(layouts: dict[str, Path], clip: Path, runs: int) -> dict[str, Any]:
    """Each engine's first transcript in a fresh pinned process, ``runs`` rounds with the
    engines interleaved; median seconds per stage and in total."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in layouts}
    for _ in range(runs):
        for name, root in layouts.items():
            imports, load, first = _CHILDREN[name]
            model_type = ""
            if name == "onnx_asr":
                model_type = f"gigaam-{next(root.glob('v?_ctc.int8.onnx')).name[:2]}-ctc"
            fields = {"root": str(root), "clip": str(clip), "model_type": model_type}
            code = _TIMED.format(
                imports=imports, load=load.format(**fields), first=first.format(**fields)
            )
            samples[name].append(run_pinned(code))
    stages = ("imports_s", "load_s", "first_clip_s")
    median = {
        name: {stage: round(statistics.median(s[stage] for s in runs_), 3) for stage in stages}
        for name, runs_ in samples.items()
    }
    return {
        "clip_seconds": round(sf.info(str(clip)).duration, 2),
        "runs": runs,
        "stages_s": median,
        "total_s": {name: round(sum(m.values()), 3) for name, m in median.items()},
    }


@functools.cache
def _torch_system() -> Any:
    from export.eval_systems import load_torch_system  # noqa: PLC0415 (torch)

    return load_torch_system(DEMO_CHECKPOINT)


def torch_texts(paths: Sequence[Path]) -> list[str]:
    """The PyTorch original's greedy transcripts (the numpy front end's features)."""
    system = _torch_system()
    return [system.recognise(path).text for path in paths]


def trained_graph(out: Path) -> Path:
    """The demo Conformer's fp32 ONNX graph, as the export writes it before quantising."""
    from export.onnx_export import export_onnx  # noqa: PLC0415 (torch)

    graph = out / "demo.fp32-graph.onnx"
    if not graph.is_file():
        out.mkdir(parents=True, exist_ok=True)
        export_onnx(_torch_system().source.model, graph, n_mels=64)
    return graph


def demo_audio() -> list[Path]:
    return sorted(DEMO_AUDIO.glob("*.wav"))
