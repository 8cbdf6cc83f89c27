"""``python -m asr`` and ``asr.batch``: folders, lists, parallel runs, per-file and results outputs.

Real speech: the demo clips with their known transcripts, transcribed by demo/bundle (the
trained demo model reads them exactly), in a nested tree with a corrupt file among them.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from asr.__main__ import main
from asr.batch import FileResult, transcribe_paths
from asr.inputs import collect_inputs
from asr.transcribe import Transcriber

from tests.conftest import DEMO

TEXTS = {
    json.loads(line)["audio_filepath"]: json.loads(line)["text"]
    for line in (DEMO / "audio" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
}
# Where each clip goes in the tree (relative to its root), in the order a walk finds them.
LAYOUT = {
    "a/b/heldout_02.wav": "heldout_02.wav",
    "a/heldout_01.wav": "heldout_01.wav",
    "c/heldout_04.flac": "heldout_04.wav",
    "heldout_03.wav": "heldout_03.wav",
}
CORRUPT = "a/corrupt.wav"
WALK_ORDER = sorted([*LAYOUT, CORRUPT], key=lambda relative: Path(relative).parts)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with 4 clips in nested folders, a corrupt .wav, and files a walk must ignore."""
    root = tmp_path / "root"
    for relative, clip in LAYOUT.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".flac":
            samples, rate = sf.read(DEMO / "audio" / clip, dtype="float32")
            sf.write(target, samples, rate, format="FLAC")
        else:
            shutil.copy(DEMO / "audio" / clip, target)
    (root / CORRUPT).write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(64))
    (root / "notes.txt").write_text("not audio")
    (root / ".hidden").mkdir()
    shutil.copy(DEMO / "audio" / "heldout_01.wav", root / ".hidden" / "skip.wav")
    return root


def expected_listing(root: Path) -> list[str]:
    return [f"{root / relative}\t{TEXTS[clip]}" for relative, clip in LAYOUT.items()]


def run(
    capsys: pytest.CaptureFixture[str], *args: str, stdin: str | None = None
) -> tuple[int, str, str]:
    code = main(
        ["--bundle", str(DEMO / "bundle"), "--no-progress", *args],
        stdin=io.StringIO(stdin) if stdin is not None else None,
    )
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def without_timings(line: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(line)
    record.pop("timings", None)
    return record


def test_a_folder_is_walked_recursively_in_order_and_a_bad_file_fails_alone(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, str(tree))
    assert code == 1
    assert out.splitlines() == expected_listing(tree)
    assert f"{tree / CORRUPT}\terror audio_undecodable: " in err
    assert "notes.txt" not in out + err and "skip.wav" not in out + err
    assert err.splitlines()[-1] == "4 transcribed, 1 failed"


def test_only_good_files_exit_zero_and_bad_usage_exits_two(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, str(tree / "a" / "b"), str(tree / "c"))[0] == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, str(empty))
    assert (code, err.strip()) == (2, "error: no audio files found in the inputs")
    assert main(["--bundle", str(tmp_path), str(tree)]) == 2
    assert "bundle_invalid" in capsys.readouterr().err
    code, _, err = run(capsys, "@" + str(tmp_path / "missing.txt"))
    assert code == 2 and "cannot read the list" in err


def test_parallel_results_equal_serial_results_in_input_order(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serial, parallel = tmp_path / "serial.jsonl", tmp_path / "parallel.jsonl"
    assert run(capsys, str(tree), "--results", str(serial))[0] == 1
    assert run(capsys, str(tree), "--results", str(parallel), "--jobs", "3")[0] == 1
    lines = serial.read_text(encoding="utf-8").splitlines()
    assert [without_timings(x) for x in lines] == [
        without_timings(x) for x in parallel.read_text(encoding="utf-8").splitlines()
    ]
    records = [json.loads(line) for line in lines]
    assert [r["file"] for r in records] == [str(tree / relative) for relative in WALK_ORDER]
    by_file = {r["file"]: r for r in records}
    assert by_file[str(tree / CORRUPT)]["error"]["code"] == "audio_undecodable"
    for relative, clip in LAYOUT.items():
        record = by_file[str(tree / relative)]
        assert record["text"] == TEXTS[clip]
        assert record["model_id"] == "demo-quartznet-ru"
        assert record["results"]["transcripts"] == [{"transcript": TEXTS[clip]}]


def test_results_tsv_has_one_row_per_file_and_is_not_overwritten_by_default(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "out" / "all.tsv"
    assert run(capsys, str(tree), "--results", str(results), "-j", "2")[0] == 1
    rows = [line.split("\t") for line in results.read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["file", "duration", "text", "error_code", "error_message"]
    assert all(len(row) == 5 for row in rows)
    good = {row[0]: row for row in rows[1:] if not row[3]}
    for relative, clip in LAYOUT.items():
        _, duration, text, _, _ = good[str(tree / relative)]
        assert text == TEXTS[clip]
        assert float(duration) == pytest.approx(
            sf.info(str(DEMO / "audio" / clip)).duration, abs=1e-3
        )
    (bad,) = [row for row in rows[1:] if row[3]]
    assert bad[:4] == [str(tree / CORRUPT), "", "", "audio_undecodable"] and bad[4]
    before = results.read_text(encoding="utf-8")
    code, _, err = run(capsys, str(tree / "heldout_03.wav"), "--results", str(results))
    assert code == 2 and "--overwrite" in err
    assert results.read_text(encoding="utf-8") == before
    flag = ("--overwrite", "--results-format", "jsonl")
    assert run(capsys, str(tree / "heldout_03.wav"), "--results", str(results), *flag)[0] == 0
    (record,) = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    assert record["text"] == TEXTS["heldout_03.wav"]


def test_outputs_side_by_side_then_existing_ones_are_skipped(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    formats = ["--format", "srt", "--format", "tsv", "-f", "json", "-f", "vtt", "-f", "text"]
    code, out, err = run(capsys, str(tree), *formats, "--jobs", "2")
    assert (code, out) == (1, "")
    for relative, clip in LAYOUT.items():
        audio = tree / relative
        text = TEXTS[clip]
        srt = Path(f"{audio}.srt").read_text(encoding="utf-8")
        assert srt.startswith("1\n00:00:0") and text in srt
        assert Path(f"{audio}.vtt").read_text(encoding="utf-8").startswith("WEBVTT\n\n")
        assert Path(f"{audio}.txt").read_text(encoding="utf-8") == text + "\n"
        assert json.loads(Path(f"{audio}.json").read_text(encoding="utf-8"))["text"] == text
        header, *segments = Path(f"{audio}.tsv").read_text(encoding="utf-8").splitlines()
        assert header == "start\tend\ttext"
        assert " ".join(row.split("\t")[2] for row in segments) == text
        start, end = (float(v) for v in segments[0].split("\t")[:2])
        assert 0.0 <= start < end <= sf.info(str(audio)).duration + 1e-3
    assert not list(tree.glob(f"{CORRUPT}.*"))  # a failed file leaves no outputs
    assert not list(tree.rglob(".*.tmp"))

    marked = Path(f"{tree / 'heldout_03.wav'}.srt")
    marked.write_text("kept", encoding="utf-8")
    code, _, err = run(capsys, str(tree), *formats)
    assert code == 1  # the corrupt file is retried (it has no outputs) and fails again
    assert err.splitlines()[-1] == "0 transcribed, 1 failed, 4 skipped (outputs exist)"
    assert marked.read_text(encoding="utf-8") == "kept"
    Path(f"{tree / 'a' / 'heldout_01.wav'}.vtt").unlink()  # one output missing: redo that file
    code, _, err = run(
        capsys, str(tree / "a" / "heldout_01.wav"), str(tree / "heldout_03.wav"), *formats
    )
    assert (code, err.splitlines()[-1]) == (0, "1 transcribed, 0 failed, 1 skipped (outputs exist)")
    assert Path(f"{tree / 'a' / 'heldout_01.wav'}.vtt").is_file()
    assert run(capsys, str(tree / "heldout_03.wav"), "-f", "srt", "--overwrite")[0] == 0
    assert TEXTS["heldout_03.wav"] in marked.read_text(encoding="utf-8")


def test_output_dir_mirrors_the_input_tree(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    single = tmp_path / "single.wav"
    shutil.copy(DEMO / "audio" / "heldout_04.wav", single)
    code, _, _ = run(capsys, str(tree), str(single), "-o", str(out_dir), "-f", "vtt")
    assert code == 1
    written = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    assert written == sorted([*(f"{r}.vtt" for r in LAYOUT), "single.wav.vtt"])
    vtt = (out_dir / "a" / "b" / "heldout_02.wav.vtt").read_text(encoding="utf-8")
    assert TEXTS["heldout_02.wav"] in vtt
    assert not list(tree.rglob("*.vtt"))
    # Without --format an output folder gets JSON.
    assert run(capsys, str(single), "-o", str(tmp_path / "json"))[0] == 0
    assert (tmp_path / "json" / "single.wav.json").is_file()


def test_two_inputs_that_would_write_one_output_are_refused(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    twin = tmp_path / "twin" / "heldout_03.wav"
    twin.parent.mkdir()
    shutil.copy(DEMO / "audio" / "heldout_03.wav", twin)
    code, out, err = run(capsys, str(tree / "heldout_03.wav"), str(twin), "-o", str(tmp_path / "o"))
    assert (code, out) == (2, "")
    assert "would both write" in err and not (tmp_path / "o").exists()


def test_list_files_and_stdin_name_files_and_folders(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tree / "batch.txt"
    listing.write_text("# clips\nheldout_03.wav\n\n  c  \n" + f"{tree / 'a' / 'b'}\n", "utf-8")
    code, out, _ = run(capsys, f"@{listing}")
    assert code == 0
    assert out.splitlines() == [
        f"{tree / 'heldout_03.wav'}\t{TEXTS['heldout_03.wav']}",
        f"{tree / 'c' / 'heldout_04.flac'}\t{TEXTS['heldout_04.wav']}",
        f"{tree / 'a' / 'b' / 'heldout_02.wav'}\t{TEXTS['heldout_02.wav']}",
    ]
    monkeypatch.chdir(tree)  # stdin lists are relative to the working directory
    code, out, err = run(capsys, "-", stdin="a/heldout_01.wav\nmissing.wav\na/heldout_01.wav\n")
    assert code == 1
    assert out == f"a/heldout_01.wav\t{TEXTS['heldout_01.wav']}\n"  # once, though named twice
    assert "missing.wav\terror input_not_found: no such file: missing.wav" in err


def test_legacy_json_flag_prints_json_lines(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(tree / "heldout_03.wav"), "--json", str(tree / "nope.wav"))
    assert code == 1
    first, second = (json.loads(line) for line in out.splitlines())
    assert (first["text"], second["error"]["code"]) == (TEXTS["heldout_03.wav"], "input_not_found")


def test_progress_bar_and_its_plain_fallback(
    tree: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = str(tree / "heldout_03.wav")
    code, _, err = run(capsys, clip, "--progress")
    assert code == 0 and "1/1" in err and "file/s" in err  # tqdm's bar
    monkeypatch.setitem(sys.modules, "tqdm", None)  # tqdm not installed
    code, _, err = run(capsys, clip, "--progress")
    assert code == 0 and "\r1/1 files" in err and "file/s" not in err


def test_transcribe_paths_yields_typed_results_in_input_order(tree: Path) -> None:
    paths = [tree / r for r in LAYOUT] + [tree / CORRUPT, tree / "a", tree / "nope.wav"]
    transcriber = Transcriber.from_dir(DEMO / "bundle", threads=1)
    real = transcriber.transcribe

    def first_is_slow(audio: Any, *args: Any, **kwargs: Any) -> Any:
        if audio == paths[0]:  # finishes last: the results must still come first
            time.sleep(0.3)
        return real(audio, *args, **kwargs)

    transcriber.transcribe = first_is_slow  # type: ignore[method-assign]
    results = list(transcribe_paths(transcriber, paths, jobs=2))
    assert [r.index for r in results] == list(range(len(paths)))
    assert [r.path for r in results] == paths
    assert [r.transcript.text for r in results[:4] if r.transcript] == [
        TEXTS[clip] for clip in LAYOUT.values()
    ]
    assert [r.error.code for r in results[4:] if r.error] == [
        "audio_undecodable",
        "input_unreadable",
        "input_not_found",
    ]
    assert all(isinstance(r, FileResult) and r.ok == (r.error is None) for r in results)
    serial = list(transcribe_paths(DEMO / "bundle", map(str, paths)))  # a bundle path, lazily
    assert [(r.error, r.transcript and r.transcript.text) for r in serial] == [
        (r.error, r.transcript and r.transcript.text) for r in results
    ]


def test_stopping_early_does_not_wait_for_the_rest(tree: Path) -> None:
    transcriber = Transcriber.from_dir(DEMO / "bundle", threads=1)
    started: list[str] = []
    real = transcriber.transcribe

    def counting(audio: Any, *args: Any, **kwargs: Any) -> Any:
        started.append(str(audio))
        return real(audio, *args, **kwargs)

    transcriber.transcribe = counting  # type: ignore[method-assign]
    paths = [tree / "heldout_03.wav"] * 200
    first = next(iter(transcribe_paths(transcriber, paths, jobs=2)))
    assert first.ok
    results = transcribe_paths(transcriber, paths, jobs=2)
    for _ in zip(range(3), results, strict=False):
        pass
    results.close()
    assert len(started) < 40  # a bounded window was in flight, not all 200


def test_inputs_are_collected_once_each_in_order(tree: Path) -> None:
    flac = tree / "c" / "heldout_04.flac"
    found = collect_inputs([str(flac), str(tree / "c"), str(tree), str(tree / "x.txt")])
    assert [(i.path, str(i.relative)) for i in found] == [
        (flac, "heldout_04.flac"),
        *((tree / r, r) for r in WALK_ORDER if r != "c/heldout_04.flac"),
        (tree / "x.txt", "x.txt"),  # named directly: taken (and reported missing later)
    ]


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_decoding_flags_reach_every_transcription(
    tree: Path, jobs: str, capsys: pytest.CaptureFixture[str]
) -> None:
    beam = ["--decoder", "beam", "--beam-width", "8", "--no-lm"]
    code, out, _ = run(capsys, str(tree), "--json", "--jobs", jobs, *beam)
    assert code == 1  # the corrupt file, as without the flags
    records = [r for r in json_lines(out) if "error" not in r]
    assert [r["text"] for r in records] == [TEXTS[clip] for clip in LAYOUT.values()]
    assert {r["decoder"] for r in records} == {"beam8"}
    hotwords = ["--hotwords", "свет, кухне:3, будильник", "--hotword-boost", "1.5"]
    code, out, _ = run(capsys, str(tree / "a"), "--json", "--jobs", jobs, *hotwords)
    assert code == 1
    records = [r for r in json_lines(out) if "error" not in r]
    assert [r["text"] for r in records] == [TEXTS["heldout_02.wav"], TEXTS["heldout_01.wav"]]
    assert {r["decoder"] for r in records} == {"beam16+hotwords(3)"}
    code, out, _ = run(capsys, str(tree / "heldout_03.wav"), "--json")
    assert (code, json_lines(out)[0]["decoder"]) == (0, "greedy")  # the bundle's default


@pytest.mark.parametrize(
    ("flags", "code"),
    [
        (["--beam-width", "0"], "invalid_decoding"),
        (["--beam-width", "65"], "invalid_decoding"),
        (["--beam-width", "x"], "invalid_decoding"),
        (["--decoder", "beam", "--alpha", "1"], "invalid_decoding"),  # no LM to weigh
        (["--hotwords", "Свет"], "hotword_not_in_vocabulary"),
        (["--hotwords", "свет, svet"], "hotword_not_in_vocabulary"),
        (["--hotwords", ",".join(["да"] * 101)], "invalid_hotwords"),
        (["--hotwords", "свет, :3"], "invalid_hotwords"),
        (["--hotwords", "свет:0"], "invalid_hotwords"),
        (["--hotwords", "свет", "--hotword-boost", "0"], "invalid_hotwords"),
        (["--hotwords", "свет", "--decoder", "greedy"], "invalid_hotwords"),
    ],
)
def test_bad_decoding_flags_are_usage_errors(
    tree: Path, flags: list[str], code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, str(tree), *flags)
    assert (status, out) == (2, "")
    assert err.startswith(f"error: {code}: ") and len(err.splitlines()) == 1


def test_an_unknown_decoder_is_refused_by_the_parser(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run(capsys, str(tree), "--decoder", "foo")
    assert exited.value.code == 2
    assert "invalid choice: 'foo'" in capsys.readouterr().err
