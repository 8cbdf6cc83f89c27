from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from asr.acoustic_model import OnnxAcousticModel
from asr.bundle import load_bundle, write_checksums
from asr.checksum_stamp import STAMP_FILE, write_stamp
from asr.config import BundleConfig
from asr.errors import BundleError


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def test_loads_a_valid_bundle(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    assert bundle.config.family == "quartznet"
    assert bundle.config.frame_seconds == pytest.approx(0.02)
    assert len(bundle.vocabulary) == 34
    assert bundle.vocabulary.blank_id == 33
    assert bundle.vocabulary.piece(0) == " "
    assert bundle.verification["passed"] is True


@pytest.mark.parametrize(
    "name", ["config.json", "model.onnx", "tokens.txt", "verification.json", "SHA256SUMS"]
)
def test_missing_file_is_named(bundle_copy: Path, name: str) -> None:
    (bundle_copy / name).unlink()
    with pytest.raises(BundleError, match=name.replace(".", r"\.")):
        load_bundle(bundle_copy)


def test_truncated_model_fails_its_checksum(bundle_copy: Path) -> None:
    model = bundle_copy / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    with pytest.raises(BundleError, match="model.onnx does not match its sha256"):
        load_bundle(bundle_copy)


def test_unlisted_file_is_refused(bundle_copy: Path) -> None:
    sums = bundle_copy / "SHA256SUMS"
    lines = [line for line in sums.read_text().splitlines() if "tokens.txt" not in line]
    sums.write_text("\n".join(lines) + "\n")
    with pytest.raises(BundleError, match="does not list tokens.txt"):
        load_bundle(bundle_copy)


def _rewrite(bundle: Path, name: str, text: str) -> None:
    (bundle / name).write_text(text, encoding="utf-8")
    config = BundleConfig.from_dict(json.loads((bundle / "config.json").read_text()))
    write_checksums(bundle, config)


def test_failed_verification_is_refused(bundle_copy: Path) -> None:
    report = json.loads((bundle_copy / "verification.json").read_text())
    _rewrite(bundle_copy, "verification.json", json.dumps({**report, "passed": False}))
    with pytest.raises(BundleError, match="did not pass export verification"):
        load_bundle(bundle_copy)


def test_unknown_format_version_is_refused(bundle_copy: Path) -> None:
    config = json.loads((bundle_copy / "config.json").read_text())
    (bundle_copy / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(BundleError, match="format_version 99"):
        load_bundle(bundle_copy, verify_checksums=False)


def test_malformed_config_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_copy)
    config = {
        "format_version": 1,
        "model_id": "x",
        "family": "quartznet",
        "frontend": {"n_mels": -1},
        "model": {},
        "tokens": {},
    }
    (bundle_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="n_mels"):
        load_bundle(bundle_copy, verify_checksums=False)


def test_malformed_token_list_is_refused(bundle_copy: Path) -> None:
    _rewrite(bundle_copy, "tokens.txt", "а 0\nб 5\n")
    with pytest.raises(BundleError, match="line 2"):
        load_bundle(bundle_copy)


def test_corrupt_onnx_with_valid_checksums_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "model.onnx").write_bytes(b"\x08\x07garbage" * 100)
    write_checksums(bundle_copy, load_bundle(bundle_copy, verify_checksums=False).config)
    with pytest.raises(BundleError, match="onnxruntime cannot load"):
        OnnxAcousticModel(load_bundle(bundle_copy))


def test_vocabulary_size_must_match_the_model(bundle_copy: Path) -> None:
    tokens = (bundle_copy / "tokens.txt").read_text().splitlines()
    _rewrite(bundle_copy, "tokens.txt", "\n".join([*tokens, f"x {len(tokens)}"]) + "\n")
    with pytest.raises(BundleError, match="emits 34 classes but tokens.txt has 35"):
        OnnxAcousticModel(load_bundle(bundle_copy))


@pytest.mark.parametrize(
    ("section", "change", "message"),
    [
        ("frontend", {"kind": "kaldi_fbank"}, "unknown front end 'kaldi_fbank'"),
        ("tokens", {"kind": "wordpiece"}, "unknown token kind 'wordpiece'"),
        ("model", {"max_window_seconds": 0.5}, "max_window_seconds"),
        ("frontend", {"kind": "gigaam_mel", "clamp_min": 0.0}, "clamp_min"),
    ],
)
def test_unknown_kinds_and_bad_values_are_refused(
    bundle_copy: Path, section: str, change: dict[str, object], message: str
) -> None:
    config = json.loads((bundle_copy / "config.json").read_text())
    if change.get("kind") == "gigaam_mel":
        config[section] = change
    else:
        config[section] = {**config[section], **change}
    (bundle_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy, verify_checksums=False)


def _hashed_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names ``load_bundle`` hashes from now on."""
    import asr.bundle as bundle_module

    hashed: list[str] = []
    real = bundle_module.sha256_of

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(bundle_module, "sha256_of", counting)
    return hashed


def _restamp(bundle: Path) -> None:
    config = json.loads((bundle / "config.json").read_text())
    write_checksums(bundle, BundleConfig.from_dict(config))


def test_files_unchanged_since_their_checksums_are_not_hashed_again(
    bundle_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _restamp(bundle_copy)
    hashed = _hashed_files(monkeypatch)
    load_bundle(bundle_copy)
    assert hashed == []
    (bundle_copy / STAMP_FILE).unlink()  # no stamp: every file is hashed, as before
    load_bundle(bundle_copy)
    assert sorted(hashed) == ["config.json", "model.onnx", "tokens.txt", "verification.json"]


def test_a_file_changed_after_its_stamp_is_hashed_and_refused(
    bundle_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _restamp(bundle_copy)
    model = bundle_copy / "model.onnx"
    before = model.stat()
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # same size: only the mtime tells the stamp
    model.write_bytes(bytes(data))
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    hashed = _hashed_files(monkeypatch)
    with pytest.raises(BundleError, match="model.onnx does not match its sha256"):
        load_bundle(bundle_copy)
    assert hashed[-1] == "model.onnx"


@pytest.mark.parametrize(
    "stamp",
    ["not json", "[]", '{"checksums_sha256": "0", "files": {}}', '{"files": 3}'],
)
def test_a_stamp_that_does_not_vouch_for_these_checksums_is_ignored(
    bundle_copy: Path, monkeypatch: pytest.MonkeyPatch, stamp: str
) -> None:
    _restamp(bundle_copy)
    (bundle_copy / STAMP_FILE).write_text(stamp)
    hashed = _hashed_files(monkeypatch)
    load_bundle(bundle_copy)
    assert "model.onnx" in hashed


def test_a_stamp_from_other_checksums_trusts_nothing(
    bundle_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _restamp(bundle_copy)
    stamp = (bundle_copy / STAMP_FILE).read_text()
    sums = bundle_copy / "SHA256SUMS"
    sums.write_text(sums.read_text().replace("  tokens.txt", " *tokens.txt"))
    assert (bundle_copy / STAMP_FILE).read_text() == stamp
    hashed = _hashed_files(monkeypatch)
    load_bundle(bundle_copy)
    assert "model.onnx" in hashed


def test_a_stamp_that_cannot_be_written_is_skipped(bundle_copy: Path) -> None:
    (bundle_copy / STAMP_FILE).unlink(missing_ok=True)
    names = ["config.json", "model.onnx"]
    text = "".join(f"{'0' * 64}  {name}\n" for name in names)
    (bundle_copy / f"{STAMP_FILE}.{os.getpid()}.tmp").mkdir()  # unwritable, even for root
    write_stamp(bundle_copy, names, text)
    write_stamp(bundle_copy, [*names, "gone.onnx"], text)  # a file vanished meanwhile
    assert not (bundle_copy / STAMP_FILE).exists()
