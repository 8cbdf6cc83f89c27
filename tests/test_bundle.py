from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from asr.acoustic_model import OnnxAcousticModel
from asr.bundle import load_bundle, write_checksums
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
