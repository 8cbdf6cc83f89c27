"""Shared fixtures: real speech from ../shared, and small checkpoints/bundles built here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from export.checkpoint import write_nemo
from export.nemo_config import quartznet_config
from export.nemo_preprocessor import frontend_from_nemo, preprocessor_state
from export.quartznet import JasperBlockSpec, QuartzNetCTC, QuartzNetSpec

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO.parent / "shared" / "data" / "speech"
DEMO = REPO / "demo"
GOLOS_VOCABULARY = [" "] + [chr(c) for c in range(ord("а"), ord("я") + 1) if chr(c) != "ё"]
TINY_BLOCKS = [
    JasperBlockSpec(64, 1, 11, stride=2),
    JasperBlockSpec(64, 2, 13, residual=True),
    JasperBlockSpec(96, 1, 15, dilation=2),
    JasperBlockSpec(128, 1, 1, separable=False),
]


@dataclass(frozen=True)
class SpeechClip:
    path: Path
    text: str
    duration: float


@pytest.fixture(scope="module")
def single_torch_thread() -> Iterator[None]:
    """Torch references' small FFTs gain nothing from threads, and on a busy machine torch's
    thread pool waiting for cores turns ~1 s of tests into ~10 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SentencePiece model, as GigaAM's e2e models ship one."""
    from tests.gigaam_checkpoints import train_tokenizer

    return train_tokenizer(tmp_path_factory.mktemp("spm") / "v3_e2e_ctc_tokenizer.model")


def speech_dir() -> Path:
    if not SPEECH.is_dir():
        pytest.skip(f"shared speech data not found at {SPEECH}")
    return SPEECH


@pytest.fixture(scope="session")
def ru_clips() -> list[SpeechClip]:
    root = speech_dir()
    clips = []
    for line in (root / "ru_manifest.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        clips.append(SpeechClip(root / entry["audio_filepath"], entry["text"], entry["duration"]))
    return clips


def write_random_quartznet(
    path: Path, blocks: list[JasperBlockSpec] | None = None, seed: int = 0
) -> Path:
    """A random-weight QuartzNet-shaped .nemo in NeMo's real layout."""
    config = quartznet_config(GOLOS_VOCABULARY, blocks or TINY_BLOCKS)
    torch.manual_seed(seed)
    model = QuartzNetCTC(QuartzNetSpec.from_nemo_config(config))
    for module in model.modules():  # non-trivial BN statistics, as a trained model has
        if isinstance(module, torch.nn.BatchNorm1d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    state = {**model.state_dict(), **preprocessor_state(frontend_from_nemo(config))}
    write_nemo(path, config, state)
    return path


@pytest.fixture(scope="session")
def tiny_nemo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_quartznet(tmp_path_factory.mktemp("ckpt") / "tiny.nemo")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_nemo: Path) -> Iterator[Path]:
    """An int8 bundle of a random-weight tiny QuartzNet (random weights: the token gate is off)."""
    from export.checkpoint import load_checkpoint, load_quartznet
    from export.clips import file_clips
    from export.pipeline import ExportOptions, export_bundle
    from export.verify import Thresholds

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    clip = speech_dir() / "ru" / "golos_00.wav"
    options = ExportOptions(
        model_id="tiny-random",
        thresholds=Thresholds(min_int8_token_agreement=0.0, max_int8_cer_vs_fp32=1.0),
    )
    export_bundle(
        load_quartznet(load_checkpoint(tiny_nemo)),
        out,
        file_clips([clip], 16000),
        options,
        step=lambda m: None,
    )
    yield out


@pytest.fixture(scope="session")
def demo_bundle() -> Path:
    bundle = DEMO / "bundle"
    if not (bundle / "config.json").is_file():
        pytest.fail("demo/bundle is missing: run scripts/build_demo_bundle.sh")
    return bundle
