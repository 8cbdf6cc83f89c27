"""``python -m export eval``: normalisation, datasets, scores, comparisons, outputs.

Hand-checked numbers on scripted systems; then the trained demo models end to end: an fp32
bundle exported here from demo/model/demo_quartznet_ru.nemo, the committed int8 bundle and
the PyTorch original on the held-out demo clips (whose transcripts the bundle's
verification.json records), the demo Conformer against its GigaAM checkpoint, a corrupt
file in a folder dataset, and the real Russian clips of ../shared.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asr.errors import AudioDecodeError

from export.__main__ import main
from export.eval_data import Dataset, DatasetError, Utterance, load_dataset, load_manifest
from export.eval_results import write_rows
from export.eval_systems import (
    BundleSystem,
    Recognition,
    System,
    TorchSystem,
    load_torch_system,
)
from export.evaluate import (
    ErrorCounts,
    EvaluationReport,
    char_errors,
    evaluate,
    word_errors,
)
from export.text_normalize import normalize_russian
from export.verify import edit_distance
from tests.conftest import DEMO, speech_dir

DEMO_MANIFEST = DEMO / "audio" / "manifest.jsonl"
DEMO_TEXTS = {
    json.loads(line)["audio_filepath"]: json.loads(line)["text"]
    for line in DEMO_MANIFEST.read_text(encoding="utf-8").splitlines()
}


# --- normalisation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Кто-то пришёл!", "кто то пришел"),
        ("Ёлка, ЁЖ и «ёмкость»", "елка еж и емкость"),
        ("е\u0308лка", "елка"),  # decomposed ё
        ("Йошкар-Ола", "йошкар ола"),  # й keeps its breve
        ("за\u0301мок", "замок"),  # stress accent
        ("при\u00adмер", "пример"),  # soft hyphen
        ("д'Артаньян и д’Артаньян", "дартаньян и дартаньян"),
        ("Москва—Петербург – 2024 г.", "москва петербург 2024 г"),
        ("50% скидка; (см. ниже)", "50 скидка см ниже"),
        ("  много \t пробелов\nи строк ", "много пробелов и строк"),
        ("Hello, World", "hello world"),
        ("?! …", ""),
        ("", ""),
    ],
)
def test_normalize_russian(raw: str, expected: str) -> None:
    assert normalize_russian(raw) == expected


# --- datasets --------------------------------------------------------------------------


def write_manifest(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def entry(audio: str, text: str = "да", **extra: Any) -> str:
    return json.dumps({"audio_filepath": audio, "text": text, **extra}, ensure_ascii=False)


def test_manifest_relative_and_absolute_paths(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    shutil.copy(DEMO / "audio" / "heldout_01.wav", tmp_path / "clips" / "a.wav")
    absolute = DEMO / "audio" / "heldout_02.wav"
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [entry("clips/a.wav", "Раз", duration=1.5), "", entry(str(absolute), "два")],
    )
    dataset = load_manifest(manifest)
    assert dataset.kind == "manifest" and dataset.skipped == ()
    assert dataset.utterances == (
        Utterance("clips/a.wav", tmp_path / "clips" / "a.wav", "Раз", 1.5),
        Utterance(str(absolute), absolute, "два", None),
    )


@pytest.mark.parametrize(
    ("lines", "code", "where"),
    [
        ([entry("a.wav"), "{not json"], "manifest_invalid_json", ":2:"),
        (["[1, 2]"], "manifest_invalid_entry", ":1:"),
        ([entry("a.wav"), json.dumps({"audio_filepath": "a.wav"})], "manifest_missing_key", ":2:"),
        ([json.dumps({"text": "x"})], "manifest_missing_key", ":1:"),
        ([entry("a.wav", duration="long")], "manifest_invalid_entry", ":1:"),
        ([json.dumps({"audio_filepath": "a.wav", "text": 5})], "manifest_invalid_entry", ":1:"),
        ([entry("a.wav"), entry("missing.wav")], "audio_missing", "missing.wav"),
        (["", "  "], "dataset_empty", "no utterances"),
    ],
)
def test_manifest_errors(tmp_path: Path, lines: list[str], code: str, where: str) -> None:
    shutil.copy(DEMO / "audio" / "heldout_01.wav", tmp_path / "a.wav")
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    with pytest.raises(DatasetError) as caught:
        load_dataset(manifest)
    assert caught.value.code == code
    assert where in caught.value.message


def test_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path / "nothing.jsonl")
    assert caught.value.code == "dataset_not_found"


def make_folder(root: Path, pairs: dict[str, str], *, audio_only: tuple[str, ...] = ()) -> Path:
    """root/audio/<rel>.wav + root/transcriptions/<rel>.txt from the demo clips."""
    clips = sorted(DEMO_TEXTS)
    for index, (relative, text) in enumerate(pairs.items()):
        audio = root / "audio" / f"{relative}.wav"
        audio.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO / "audio" / clips[index % len(clips)], audio)
        transcript = root / "transcriptions" / f"{relative}.txt"
        transcript.parent.mkdir(parents=True, exist_ok=True)
        transcript.write_text(text, encoding="utf-8")
    for relative in audio_only:
        (root / "audio" / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO / "audio" / clips[0], root / "audio" / relative)
    (root / "transcriptions").mkdir(parents=True, exist_ok=True)
    return root


def test_folder_pairs_and_reports_unmatched(tmp_path: Path) -> None:
    root = make_folder(
        tmp_path / "corpus",
        {"spk1/b": "второй\nстрокой", "a": "первый"},
        audio_only=("spk2/lonely.flac", "notes.md", ".hidden.wav"),
    )
    (root / "transcriptions" / "spk3").mkdir()
    (root / "transcriptions" / "spk3" / "orphan.txt").write_text("нет аудио", encoding="utf-8")
    (root / "transcriptions" / "a.lab").write_text("не txt", encoding="utf-8")
    dataset = load_dataset(root)
    assert dataset.kind == "folder"
    assert [(u.id, u.audio.name, u.reference) for u in dataset.utterances] == [
        ("a", "a.wav", "первый"),
        ("spk1/b", "b.wav", "второй строкой"),
    ]
    assert {(item.path.relative_to(root).as_posix(), item.reason) for item in dataset.skipped} == {
        ("audio/notes.md", "not an audio file extension"),
        ("audio/spk2/lonely.flac", "no transcription"),
        ("transcriptions/a.lab", "not a .txt transcription"),
        ("transcriptions/spk3/orphan.txt", "no audio"),
    }


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "bare" / "audio").mkdir(parents=True)
    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path / "bare")
    assert caught.value.code == "dataset_layout"

    ambiguous = make_folder(tmp_path / "ambiguous", {"x": "икс"}, audio_only=("x.flac",))
    with pytest.raises(DatasetError) as caught:
        load_dataset(ambiguous)
    assert caught.value.code == "dataset_ambiguous"

    unpaired = make_folder(tmp_path / "unpaired", {}, audio_only=("only.wav",))
    with pytest.raises(DatasetError) as caught:
        load_dataset(unpaired)
    assert caught.value.code == "dataset_empty"
    assert "1 unpaired" in caught.value.message

    undecodable = make_folder(tmp_path / "latin1", {"y": "x"})
    (undecodable / "transcriptions" / "y.txt").write_bytes("ёж".encode("cp1251"))
    with pytest.raises(DatasetError) as caught:
        load_dataset(undecodable)
    assert caught.value.code == "transcription_unreadable"


# --- scores on scripted systems --------------------------------------------------------


@dataclass
class Scripted:
    """A system that answers from a table: text (and token ids), or an error."""

    name: str
    answers: dict[str, tuple[str, tuple[int, ...] | None] | Exception]
    description: str = "scripted"

    def recognise(self, audio: Path) -> Recognition:
        answer = self.answers[audio.stem]
        if isinstance(answer, Exception):
            raise answer
        return Recognition(answer[0], answer[1], duration=2.0)


def scripted_dataset() -> Dataset:
    return Dataset(
        Path("scripted.jsonl"),
        "manifest",
        (
            Utterance("u1", Path("u1.wav"), "Включи свет на кухне!"),
            Utterance("u2", Path("u2.wav"), "позвони маме"),
            Utterance("u3", Path("u3.wav"), "да"),
        ),
    )


def test_error_counts_hand_computed() -> None:
    # на → в (1 substitution), сейчас inserted.
    assert word_errors("включи свет на кухне", "включи свет в кухне сейчас") == ErrorCounts(
        1, 0, 1, 4
    )
    # "на" → "в": н→в + а deleted; " сейчас" = 7 insertions. 20 reference characters.
    chars = char_errors("включи свет на кухне", "включи свет в кухне сейчас")
    assert chars == ErrorCounts(1, 1, 7, 20)
    assert chars.rate == pytest.approx(9 / 20)
    assert word_errors("позвони маме", "") == ErrorCounts(0, 2, 0, 2)
    assert word_errors("", "эхо") == ErrorCounts(0, 0, 1, 0)
    assert word_errors("", "").rate is None
    assert edit_distance((1, 2, 3, 4), (1, 2, 4)) == 1
    assert edit_distance((), (5, 6)) == 2


def test_evaluate_scores_compares_and_excludes_failures() -> None:
    baseline = Scripted(
        "base",
        {
            "u1": ("включи свет в кухне сейчас", (1, 2, 3, 4)),
            "u2": ("", ()),
            "u3": ("да", (7,)),
        },
    )
    other = Scripted(
        "other",
        {
            "u1": ("включи свет на кухне", (1, 2, 4)),
            "u2": ("позвони маме", (5, 6)),
            "u3": AudioDecodeError("not audio"),
        },
    )
    report = evaluate(scripted_dataset(), [baseline, other])
    base, second = report.systems
    # u1: 2 word / 9 char errors; u2: 2 / 12 deletions; u3: exact. References: 7 words,
    # 20 + 12 + 2 characters.
    assert base.words == ErrorCounts(1, 2, 1, 7) and base.wer == pytest.approx(4 / 7)
    assert base.chars == ErrorCounts(1, 13, 7, 34) and base.cer == pytest.approx(21 / 34)
    assert (base.utterances, base.failed, base.audio_seconds) == (3, 0, 6.0)
    # other failed u3: left out of its scores, counted by code.
    assert (second.utterances, second.failed, second.error_codes) == (
        2,
        1,
        {"audio_undecodable": 1},
    )
    assert second.words == ErrorCounts(0, 0, 0, 6) and second.cer == 0.0
    assert report.failures == 1
    (comparison,) = report.comparisons
    assert report.baseline == "base" and comparison.system == "other"
    # Over u1 and u2 only; the baseline's WER there is 4/6, CER 21/32.
    assert comparison.utterances == 2
    assert comparison.wer_delta_points == pytest.approx(-100 * 4 / 6)
    assert comparison.cer_delta_points == pytest.approx(-100 * 21 / 32)
    # Token ids: u1 one edit in 4, u2 two insertions against 0 baseline tokens.
    assert comparison.token_unit == "token_ids"
    assert (comparison.token_edits, comparison.baseline_tokens) == (3, 4)
    assert comparison.token_agreement == pytest.approx(0.25)
    assert comparison.identical == 0
    u3 = report.utterances[2]
    assert u3.outputs[1].error is not None and u3.outputs[1].error.code == "audio_undecodable"
    assert u3.outputs[1].words is None and u3.duration == 2.0


def test_comparison_falls_back_to_characters_without_ids() -> None:
    base = Scripted("base", {"u1": ("ab", (1, 2)), "u2": ("cd", (3,)), "u3": ("e", (4,))})
    text_only = Scripted("text", {"u1": ("ab", None), "u2": ("xd", None), "u3": ("e", None)})
    (comparison,) = evaluate(scripted_dataset(), [base, text_only]).comparisons
    assert comparison.token_unit == "characters"
    assert (comparison.token_edits, comparison.baseline_tokens, comparison.identical) == (1, 5, 2)


def test_no_normalize_scores_raw_text() -> None:
    system = Scripted(
        "s",
        {"u1": ("включи свет на кухне", None), "u2": ("позвони маме", None), "u3": ("да", None)},
    )
    normalised = evaluate(scripted_dataset(), [system])
    raw = evaluate(scripted_dataset(), [system], normalize=False)
    assert normalised.systems[0].wer == 0.0
    # "Включи" and "кухне!" differ from the hypothesis's words.
    assert raw.systems[0].words == ErrorCounts(2, 0, 0, 7)
    assert raw.utterances[0].reference == "Включи свет на кухне!"
    assert normalised.utterances[0].reference == "включи свет на кухне"


# --- the trained demo models -----------------------------------------------------------


@pytest.fixture(scope="session")
def demo_fp32_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo QuartzNet exported at fp32 (its checks on the held-out clips: ~3 s)."""
    from export.checkpoint import load_checkpoint, load_quartznet
    from export.clips import manifest_clips
    from export.pipeline import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("eval") / "fp32"
    source = load_quartznet(load_checkpoint(DEMO / "model" / "demo_quartznet_ru.nemo"))
    options = ExportOptions(model_id="demo-quartznet-ru-fp32", precision="fp32")
    clips = manifest_clips([DEMO_MANIFEST], 16000)
    export_bundle(source, out, clips, options, step=lambda message: None)
    return out


@pytest.fixture(scope="session")
def quartznet_torch() -> TorchSystem:
    return load_torch_system(DEMO / "model" / "demo_quartznet_ru.nemo")


@pytest.fixture(scope="session")
def quartznet_report(
    demo_fp32_bundle: Path, demo_bundle: Path, quartznet_torch: TorchSystem
) -> EvaluationReport:
    systems: list[System] = [
        quartznet_torch,
        BundleSystem(demo_fp32_bundle, name="fp32"),
        BundleSystem(demo_bundle, name="int8"),
    ]
    return evaluate(load_dataset(DEMO_MANIFEST), systems)


def verification_texts(bundle: Path) -> dict[str, dict[str, str]]:
    report = json.loads((bundle / "verification.json").read_text(encoding="utf-8"))
    return {Path(c["name"]).name: c for c in report["clips"] if c["origin"] == "user manifest"}


def test_pytorch_fp32_int8_on_the_demo_clips(
    quartznet_report: EvaluationReport, demo_bundle: Path
) -> None:
    report = quartznet_report
    assert [s.name for s in report.systems] == ["pytorch:demo_quartznet_ru", "fp32", "int8"]
    torch_vs_fp32, torch_vs_int8 = report.comparisons
    # PyTorch and ONNX fp32 emit the same greedy CTC token ids.
    assert torch_vs_fp32.token_unit == "token_ids"
    assert torch_vs_fp32.token_agreement == 1.0
    assert torch_vs_fp32.identical == 4
    # What the export's verification recorded for the same clips, text for text.
    recorded = verification_texts(demo_bundle)
    assert len(recorded) == 4
    for result in report.utterances:
        clip = recorded[result.utterance.audio.name]
        texts = [output.text for output in result.outputs]
        assert texts == [clip["text_torch"], clip["text_fp32"], clip["text_int8"]]
    metrics = json.loads((demo_bundle / "verification.json").read_text())["metrics"]
    assert report.systems[1].cer == metrics["fp32_cer_vs_reference"]
    assert report.systems[2].cer == metrics["int8_cer_vs_reference"]
    assert torch_vs_int8.cer_delta_points == 100 * metrics["int8_cer_delta"]
    durations = [json.loads(line)["duration"] for line in DEMO_MANIFEST.read_text().splitlines()]
    assert report.systems[2].audio_seconds == pytest.approx(sum(durations), abs=0.01)
    assert all(s.rtf is not None and s.rtf > 0 for s in report.systems)


def test_results_files(quartznet_report: EvaluationReport, tmp_path: Path) -> None:
    write_rows(quartznet_report, tmp_path / "rows.jsonl")
    write_rows(quartznet_report, tmp_path / "rows.tsv")
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == list(DEMO_TEXTS)
    first = rows[0]
    assert first["reference"] == first["normalized_reference"] == DEMO_TEXTS["heldout_01.wav"]
    assert first["duration"] == pytest.approx(1.554, abs=0.001)
    assert set(first["systems"]) == {"pytorch:demo_quartznet_ru", "fp32", "int8"}
    assert first["systems"]["int8"] == {
        "hypothesis": "включи свет на кухне",
        "normalized_hypothesis": "включи свет на кухне",
        "wer": 0.0,
        "cer": 0.0,
        "word_errors": 0,
        "char_errors": 0,
        "reference_words": 4,
        "reference_chars": 20,
        "seconds": first["systems"]["int8"]["seconds"],
        "error": None,
    }
    lines = (tmp_path / "rows.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    assert header[:5] == ["id", "audio", "duration", "reference", "normalized_reference"]
    assert header[5:11] == [
        f"pytorch:demo_quartznet_ru:{name}"
        for name in ("hypothesis", "wer", "cer", "word_errors", "char_errors", "error")
    ]
    assert len(header) == 5 + 3 * 6 and len(lines) == 5
    cells = dict(zip(header, lines[2].split("\t"), strict=True))
    assert cells["id"] == "heldout_02.wav"
    assert cells["fp32:hypothesis"] == DEMO_TEXTS["heldout_02.wav"]
    assert (cells["fp32:wer"], cells["fp32:char_errors"], cells["fp32:error"]) == (
        "0.000000",
        "0",
        "",
    )


def test_jobs_give_the_same_transcripts(demo_bundle: Path) -> None:
    dataset = load_dataset(DEMO_MANIFEST)
    serial = evaluate(dataset, [BundleSystem(demo_bundle)])
    parallel = evaluate(dataset, [BundleSystem(demo_bundle, threads=1)], jobs=2)
    assert [r.outputs[0].text for r in parallel.utterances] == [
        r.outputs[0].text for r in serial.utterances
    ]
    assert parallel.systems[0].chars == serial.systems[0].chars


def test_conformer_bundle_against_its_gigaam_checkpoint() -> None:
    bundle = DEMO / "conformer_bundle"
    checkpoint = DEMO / "model" / "demo_gigaam_ru.ckpt"
    if not (bundle / "config.json").is_file() or not checkpoint.is_file():
        pytest.fail("the demo Conformer is not built: run scripts/build_demo_conformer.sh")
    torch_system = load_torch_system(checkpoint)  # .ckpt: GigaAM
    report = evaluate(load_dataset(DEMO_MANIFEST), [torch_system, BundleSystem(bundle)])
    (comparison,) = report.comparisons
    assert comparison.token_agreement == 1.0 and comparison.identical == 4
    recorded = verification_texts(bundle)
    for result in report.utterances:
        clip = recorded[result.utterance.audio.name]
        assert [o.text for o in result.outputs] == [clip["text_torch"], clip["text_int8"]]
    assert report.systems[1].cer == 0.0


def test_greedy_ctc_and_rnnt_side_by_side() -> None:
    """The demo Conformer CTC and its RNNT twin (same encoder start, same vocabulary), and
    the RNNT's PyTorch original: WER/CER side by side, token agreement on token ids."""
    checkpoint = DEMO / "model" / "demo_gigaam_rnnt_ru.ckpt"
    bundles = [DEMO / "conformer_bundle", DEMO / "transducer_bundle"]
    if not checkpoint.is_file() or not all((b / "config.json").is_file() for b in bundles):
        pytest.fail("the demo models are not built: run scripts/setup.sh dev")
    systems: list[System] = [
        BundleSystem(bundles[0], name="ctc"),
        BundleSystem(bundles[1], name="rnnt"),
        load_torch_system(checkpoint, name="rnnt-pytorch"),
    ]
    assert "RNNT" in systems[1].description and "RNNT" in systems[2].description
    report = evaluate(load_dataset(DEMO_MANIFEST), systems)
    assert [s.wer for s in report.systems] == [0.0, 0.0, 0.0]
    for comparison in report.comparisons:
        assert comparison.token_unit == "token_ids"
        assert comparison.token_agreement == 1.0 and comparison.identical == 4


# --- the CLI ---------------------------------------------------------------------------


def test_cli_corrupt_file_is_recorded_and_the_run_finishes(
    tmp_path: Path, demo_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_folder(tmp_path / "corpus", {"good/one": "Включи свет на кухне.", "two": "?"})
    (root / "audio" / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(64))
    (root / "transcriptions" / "broken.txt").write_text("что угодно", encoding="utf-8")
    rows, summary = tmp_path / "out" / "rows.jsonl", tmp_path / "out" / "summary.json"
    status = main(
        ["eval", str(root), "--bundle", str(demo_bundle), "--results", str(rows),
         "--summary", str(summary)]
    )  # fmt: skip
    assert status == 1
    out = capsys.readouterr().out
    assert "left out of that system's scores" in out and "audio_undecodable 1" in out
    by_id = {row["id"]: row for row in map(json.loads, rows.read_text().splitlines())}
    assert list(by_id) == ["broken", "good/one", "two"]
    broken = by_id["broken"]["systems"]["bundle"]
    assert broken["error"]["code"] == "audio_undecodable" and broken["hypothesis"] is None
    assert by_id["good/one"]["systems"]["bundle"]["wer"] == 0.0
    data = json.loads(summary.read_text())
    (system,) = data["systems"]
    assert (system["utterances"], system["failed"]) == (2, 1)
    assert system["error_codes"] == {"audio_undecodable": 1}
    assert data["dataset"]["utterances"] == 3 and data["comparisons"] == []
    assert data["normalization"].startswith("russian")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "give at least one --bundle"),
        (["--bundle", "{demo}", "--results", "rows.csv"], "must end in .jsonl, .json or .tsv"),
        (["--bundle", "{missing}"], "error [bundle_invalid]"),
        (["--checkpoint", "{demo}/config.json"], "--checkpoint-kind"),
        (["--bundle", "{demo}", "--jobs", "0"], "--jobs must be at least 1"),
    ],
)
def test_cli_usage_errors(
    tmp_path: Path,
    demo_bundle: Path,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    message: str,
) -> None:
    filled = [a.format(demo=demo_bundle, missing=tmp_path / "nope") for a in arguments]
    assert main(["eval", str(DEMO_MANIFEST), *filled]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_bad_manifest_line(
    tmp_path: Path, demo_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", [entry("a.wav"), "{oops"])
    assert main(["eval", str(manifest), "--bundle", str(demo_bundle)]) == 2
    err = capsys.readouterr().err
    assert f"error [manifest_invalid_json]: {manifest}:2:" in err


def test_cli_real_speech(
    demo_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The 17 real clips with the espeak-trained demo model: a high WER, consistent numbers."""
    manifest = speech_dir() / "ru_manifest.jsonl"
    rows_path, summary_path = tmp_path / "rows.tsv", tmp_path / "summary.json"
    status = main(
        ["eval", str(manifest), "--bundle", str(demo_bundle), "--results", str(rows_path),
         "--summary", str(summary_path)]
    )  # fmt: skip
    assert status == 0
    out = capsys.readouterr().out
    assert "17 utterances" in out
    summary = json.loads(summary_path.read_text())
    (system,) = summary["systems"]
    assert (system["utterances"], system["failed"]) == (17, 0)
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    hours = sum(e["duration"] for e in entries) / 3600
    assert system["audio_hours"] == pytest.approx(hours, rel=0.01)
    assert system["rtf"] == pytest.approx(system["processing_seconds"] / (hours * 3600), rel=0.02)
    header, *lines = [line.split("\t") for line in rows_path.read_text().splitlines()]
    assert len(lines) == 17
    rows = [dict(zip(header, line, strict=True)) for line in lines]
    words = system["words"]
    assert sum(int(r["bundle:word_errors"]) for r in rows) == words["errors"]
    assert words["errors"] == words["substitutions"] + words["deletions"] + words["insertions"]
    assert words["reference_length"] == sum(len(r["normalized_reference"].split()) for r in rows)
    assert system["wer"] == pytest.approx(words["errors"] / words["reference_length"])
    chars = system["chars"]
    assert sum(int(r["bundle:char_errors"]) for r in rows) == chars["errors"]
    assert chars["reference_length"] == sum(len(r["normalized_reference"]) for r in rows)
    assert all(r["normalized_reference"] == normalize_russian(r["reference"]) for r in rows)


def test_cli_limit(tmp_path: Path, demo_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = tmp_path / "rows.json"
    arguments = ["eval", str(DEMO_MANIFEST), "--bundle", str(demo_bundle), "--limit", "2"]
    assert main([*arguments, "--results", str(rows)]) == 0
    assert "2 utterances" in capsys.readouterr().out
    assert [json.loads(line)["id"] for line in rows.read_text().splitlines()] == [
        "heldout_01.wav",
        "heldout_02.wav",
    ]
