"""Fixtures for the GigaAM-Emo tests (a pytest plugin: ``pytest_plugins``): a random-weight
emo checkpoint and its fp32 and int8 emotion bundles, module-scoped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from export.emotion_export import EmotionExportOptions, export_emotion_bundle
from export.gigaam_emo import load_gigaam_emo
from tests.emotion_checkpoints import VERIFY, write_emo


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_emo(tmp_path_factory.mktemp("emo") / "emo.ckpt")


def export(checkpoint: Path, out: Path, precision: Any) -> Path:
    options = EmotionExportOptions(model_id="emo-test", precision=precision)
    export_emotion_bundle(load_gigaam_emo(checkpoint), out, VERIFY, options, step=lambda m: None)
    return out


@pytest.fixture(scope="module")
def fp32_bundle(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(checkpoint, tmp_path_factory.mktemp("fp32") / "bundle", "fp32")


@pytest.fixture(scope="module")
def int8_bundle(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(checkpoint, tmp_path_factory.mktemp("int8") / "bundle", "int8")
