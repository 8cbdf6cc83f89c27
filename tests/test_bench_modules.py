"""The memory, size and front-end benchmarks: a quick run of each end to end (demo bundles,
short inputs), rendered from its written JSON, and their pure helpers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import emotion, frontend_vs_librosa, memory, size
from bench.common import BenchOptions, read_result, write_result
from bench.frontend_compare import best_seconds, difference
from bench.pinned import ChildFailed, run_pinned

QUICK = BenchOptions(quick=True)


def rendered(name: str, result: dict[str, Any], tmp_path: Path) -> str:
    """The README text as the orchestrator makes it: from the JSON file alone."""
    write_result(name, result, tmp_path)
    modules = {"memory": memory, "frontend": frontend_vs_librosa, "size": size, "emotion": emotion}
    module = modules[name]
    text: str = module.markdown(read_result(name, tmp_path))
    return text


# --- quick runs


def test_memory_quick_run(tmp_path: Path) -> None:
    result = memory.measure(QUICK)
    rows = result["rows"]
    assert [(r["family"], r["input_s"]) for r in rows] == [
        ("quartznet15x5", 10), ("quartznet15x5", 60), ("gigaam_v3", 10), ("gigaam_v3", 60),
        ("gigaam_v3_rnnt", 10), ("gigaam_v3_rnnt", 60)
    ]  # fmt: skip
    for row in rows:
        assert row["runs"] == 1 and not row["malloc_tuned"]
        assert row["audio_s"] == pytest.approx(row["input_s"], abs=0.01)
        assert 0 < row["imports_rss_mb"] <= row["loaded_rss_mb"] <= row["peak_rss_mb"] < 1000
        assert row["load_peak_mb"] <= row["peak_rss_mb"]
        assert row["rtf"] == pytest.approx(row["transcribe_s"] / row["audio_s"], abs=1e-3)
        assert row["headroom_mb"] == memory.headroom_mb(row["peak_rss_mb"])
    # One pass for 10 s; 60 s is longer than one pass, so the VAD cut it into segments.
    assert [r["segments"] for r in rows[::2]] == [1, 1, 1]
    assert all(r["segments"] > 1 for r in rows[1::2])
    text = rendered("memory", result, tmp_path)
    assert "| demo (conformer_bundle) | int8 | 1 min |" in text
    assert "| demo (transducer_bundle) | int8 | 1 min |" in text
    assert text.count("\n| demo") == 6 and "headroom at 1,769 MB" in text


def test_emotion_quick_run(tmp_path: Path) -> None:
    result = emotion.measure(QUICK)
    classifier = {row["precision"]: row for row in result["classifier"]}
    for row in classifier.values():  # quick: the demo classifier for both precisions
        assert row["clips"] == 17 and row["audio_s"] == pytest.approx(69.0, abs=0.1)
        assert 0 < row["rtf"] < 1 and row["rtf_passes"] == [pytest.approx(row["rtf"])]
        assert 0 < row["imports_rss_mb"] <= row["loaded_rss_mb"] <= row["peak_rss_mb"]
    (combined,) = result["combined"]
    assert combined["input_s"] == 60 and combined["both"]["segments"] > 1
    # Every segment of 0.5 s or more was classified; the pass is timed and costs memory.
    assert 0 < combined["segments_with_emotion"] <= combined["both"]["segments"]
    assert combined["alone"]["timings_s"]["emotion"] == 0
    assert 0 < combined["emotion_share_of_both"] < 1
    assert combined["both"]["loaded_rss_mb"] > combined["alone"]["loaded_rss_mb"]
    costs = {row["models"]: row for row in result["cost"]}
    assert costs["ASR alone"]["memory_mb"] == 1769 and not costs["ASR alone"]["upper_bound"]
    for row in costs.values():
        assert row["usd_per_audio_hour"] > 0
    text = rendered("emotion", result, tmp_path)
    assert "| GigaAM-Emo shape, int8 |" in text and "| 1 min | 1 |" in text
    assert "| ASR + emotion |" in text


def test_emotion_memory_size_and_cost() -> None:
    assert emotion.memory_size_for(1600) == 1769
    assert emotion.memory_size_for(1700) == 3008  # under 100 MB left at 1,769
    assert emotion.memory_size_for(2950) is None
    timed = {"alone": {"rtf": 0.02}, "both": {"rtf": 0.05}}
    sized = {"alone": {"peak_rss_mb": 800.0}, "both": {"peak_rss_mb": 1800.0}}
    rows = {row["models"]: row for row in emotion.cost_rows([timed, sized])}
    assert rows["ASR alone"]["memory_mb"] == 1769 and rows["ASR + emotion"]["upper_bound"]
    # 0.05 × 3600 s × 3008/1024 GB × the GB-s price, plus 60 requests.
    expected = 0.05 * 3600 * 3008 / 1024 * 0.0000166667 + 60 * 0.2e-6
    assert rows["ASR + emotion"]["usd_per_audio_hour"] == pytest.approx(expected)


def test_frontend_quick_run(tmp_path: Path) -> None:
    result = frontend_vs_librosa.measure(QUICK)
    rows = {row["family"]: row for row in result["rows"]}
    assert rows["quartznet15x5"]["shape"] == [64, 500]  # NeMo: len // hop frames
    assert rows["gigaam_v3"]["shape"] == [64, 499]  # v3: not centred
    for row in rows.values():
        assert row["ours_ms"] > 0 and all(ms > 0 for ms in row["librosa_ms"].values())
        # The same features: float rounding apart (a wrong window or mel scale gives ~0.1-1).
        assert all(0 < diff["max_abs"] < 5e-4 for diff in row["diff"].values())
    cold = result["cold"]
    assert set(cold) == {"asr.frontend", "librosa"}
    # librosa drags in scipy, numba and scikit-learn; ours is three small numpy modules.
    assert cold["librosa"]["import_s"] > 5 * cold["asr.frontend"]["import_s"]
    text = rendered("frontend", result, tmp_path)
    assert "| QuartzNet15x5 (`nemo_mel`) |" in text and "| librosa " in text


def test_size_quick_run(tmp_path: Path) -> None:
    result = size.measure(QUICK)
    assert [(b["family"], b["precision"]) for b in result["bundles"]] == [
        ("quartznet15x5", "int8"), ("gigaam_v3", "int8"), ("gigaam_v3_rnnt", "int8")
    ]  # fmt: skip
    text = rendered("size", result, tmp_path)
    if not result["architectures"]:
        assert result["sam_note"].startswith("sam build skipped")
        assert "No `sam build` measured" in text
        pytest.skip(result["sam_note"])
    built = result["architectures"]["x86_64"]
    assert list(built["parts_bytes"]) == list(size.PARTS)
    assert built["total_bytes"] == sum(built["parts_bytes"].values()) < size.LAMBDA_UNZIPPED_LIMIT
    assert built["parts_bytes"]["RuntimeDepsLayer"] > 50_000_000  # numpy + onnxruntime
    # The model layer holds the demo QuartzNet bundle, file for file.
    assert built["parts_bytes"]["ModelLayer"] == result["bundles"][0]["bundle_bytes"]
    assert {b["placement"] for b in result["bundles"]} == {size.ZIP}
    assert "| **total** |" in text and "| demo (bundle) | int8 |" in text


# --- helpers


def test_placement_against_the_unzipped_limit() -> None:
    limit = size.LAMBDA_UNZIPPED_LIMIT
    assert size.placement(1_000, limit - 1_000) == size.ZIP
    assert size.placement(1_001, limit - 1_000) == size.ELSEWHERE
    assert size.placement(1, None) is None


def test_tree_bytes_counts_files_and_links_not_directories(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.bin").write_bytes(bytes(1000))
    (tmp_path / "y.txt").write_bytes(b"12345")
    (tmp_path / "link").symlink_to("a/b/x.bin")  # a link's size is its target's name
    assert size.tree_bytes(tmp_path) == 1000 + 5 + 9
    assert size.largest_children(tmp_path, 2) == [("a", 1000), ("link", 9)]


def test_headroom_and_duration_labels() -> None:
    assert memory.headroom_mb(1800.0) == {"1769": -31.0, "3008": 1208.0}
    assert [memory.duration_label(s) for s in (10, 600, 3600)] == ["10 s", "10 min", "60 min"]


def test_summarise_keeps_the_worst_memory_and_the_median_seconds() -> None:
    def run(loaded: float, peak: float, transcribe_s: float) -> dict[str, Any]:
        return {
            "audio_s": 10.0, "imports_rss_mb": 53.0, "loaded_rss_mb": loaded,
            "load_peak_mb": loaded, "peak_rss_mb": peak, "load_s": 1.0,
            "transcribe_s": transcribe_s, "segments": 1, "timings_s": {},
        }  # fmt: skip

    row = memory.summarise([run(349.0, 364.0, 0.5), run(495.7, 514.4, 0.3), run(349.2, 364, 0.4)])
    assert row["runs"] == 3
    assert (row["loaded_rss_mb"], row["peak_rss_mb"]) == (495.7, 514.4)
    assert row["loaded_rss_mb_range"] == [349.0, 495.7]
    assert (row["transcribe_s"], row["wall_s"], row["rtf"]) == (0.4, 1.4, 0.04)
    assert row["headroom_mb"] == {"1769": 1254.6, "3008": 2493.6}
    assert memory.after_load(row) == "349–496"
    assert memory.after_load({"loaded_rss_mb_range": [349.2, 349.4]}) == "349"


def test_recordings_are_cached(tmp_path: Path) -> None:
    path = memory.recording(3, tmp_path)
    assert path.stat().st_size == 44 + 3 * 16000 * 2  # 16-bit mono WAV
    stamp = path.stat().st_mtime_ns
    assert memory.recording(3, tmp_path).stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["recording-3s.wav"]


def test_difference() -> None:
    reference = np.array([[1.0, -4.0], [2.0, 0.0]])
    ours = reference + np.array([[0.0, 0.002], [-0.001, 0.0]], dtype=np.float32)
    diff = difference(ours.astype(np.float32), reference)
    assert diff["max_abs"] == pytest.approx(0.002, rel=1e-4)
    assert diff["relative"] == pytest.approx(0.0005, rel=1e-4)
    with pytest.raises(ValueError, match="shapes differ"):
        difference(ours[:, :1], reference)


def test_best_seconds_warms_up_then_keeps_the_fastest() -> None:
    calls: list[int] = []
    assert best_seconds(lambda: calls.append(1), 3) >= 0
    assert len(calls) == 4


def test_children_run_on_one_cpu_with_one_thread() -> None:
    code = (
        "import json, os\n"
        "print(json.dumps({'cpus': sorted(os.sched_getaffinity(0)),"
        " 'omp': os.environ['OMP_NUM_THREADS'], 'extra': os.environ['BENCH_X']}))\n"
    )
    child = run_pinned(code, extra_env={"BENCH_X": "y"})
    assert len(child["cpus"]) == 1 and child["cpus"][0] in os.sched_getaffinity(0)
    assert (child["omp"], child["extra"]) == ("1", "y")
    with pytest.raises(ChildFailed, match="ZeroDivisionError"):
        run_pinned("1 / 0")
    with pytest.raises(ChildFailed, match="not JSON"):
        run_pinned("print('done')")
