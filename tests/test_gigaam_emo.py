"""GigaAM-Emo checkpoints: upstream layout → PyTorch (upstream's maths, masked padding),
cfg refusals, ``python -m export gigaam`` on an emo checkpoint, the MD5-verified download."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import torch
import torch.nn.functional as nnf
from asr.emotion_bundle import load_emotion_bundle

import export.__main__ as export_cli
from export.download import DownloadError
from export.gigaam import load_gigaam
from export.gigaam_emo import load_gigaam_emo
from export.gigaam_releases import GIGAAM_RELEASES, GigaamRelease, download_gigaam
from export.quartznet import CheckpointError
from tests.emotion_checkpoints import RATE, VERIFY, write_emo
from tests.gigaam_checkpoints import (
    EMOTION_LABELS,
    emo_cfg,
    save_gigaam,
    upstream_state_dict,
    v3_cfg,
)
from tests.test_gigaam import GigaamReference, features

# The checkpoint and bundle fixtures.
pytest_plugins = ("tests.emotion_fixtures",)


# --- the PyTorch model ------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["v1_emo", "v3_encoder"])
def test_matches_upstream_maths(tmp_path: Path, layout: str) -> None:
    """Mean over time of upstream's encoder output, Linear head, softmax (one clip)."""
    cfg = emo_cfg()
    if layout == "v3_encoder":
        cfg = {**v3_cfg(), "head": cfg["head"], "id2name": cfg["id2name"]}
        del cfg["decoding"], cfg["model_class"]
    sd = upstream_state_dict(cfg, seed=5)
    source = load_gigaam_emo(save_gigaam(tmp_path / "emo.ckpt", cfg, sd))
    assert source.labels == tuple(EMOTION_LABELS)
    feats = features(203)
    pooled = GigaamReference(sd, cfg).encode(feats).mean(dim=1)
    reference = torch.softmax(nnf.linear(pooled, sd["head.weight"], sd["head.bias"]), dim=-1)
    ours = source.probabilities(feats[None], torch.tensor([203]))
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)
    assert "Conformer-Emo" in source.source["architecture"]


def test_padded_batch_averages_only_valid_frames(checkpoint: Path) -> None:
    source = load_gigaam_emo(checkpoint)
    short, long = features(97, seed=5), features(240, seed=6)
    batch = torch.zeros(2, 64, 240)
    batch[0, :, :97], batch[1] = short, long
    batched = source.probabilities(batch, torch.tensor([97, 240]))
    for row, clip in enumerate((short, long)):
        alone = source.probabilities(clip[None], torch.tensor([clip.shape[1]]))
        torch.testing.assert_close(batched[row], alone[0], atol=1e-6, rtol=0)
    unmasked = source.model.head(source.model.encoder(batch, torch.tensor([97, 240]))[0].mean(1))
    assert not torch.allclose(torch.softmax(unmasked, -1)[0], batched[0], atol=1e-4)


def test_labels_from_an_index_mapping(tmp_path: Path) -> None:
    cfg = emo_cfg()
    cfg["id2name"] = {"1": "sad", "0": "angry", "3": "positive", "2": "neutral"}
    assert load_gigaam_emo(write_emo(tmp_path / "e.ckpt", cfg)).labels == tuple(EMOTION_LABELS)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["head"].update(_target_="gigaam.decoder.CTCHead"), "torch.nn.Linear only"),
        (lambda c: c["head"].update(out_features=3), "out_features 3 != 4"),
        (lambda c: c.update(id2name=["a", "a", "b", "c"]), "repeats a name"),
        (lambda c: c["head"].update(in_features=7), "in_features 7"),
    ],
)
def test_cfg_refusals(tmp_path: Path, change: Any, message: str) -> None:
    cfg = emo_cfg()
    change(cfg)
    path = save_gigaam(tmp_path / "emo.ckpt", cfg, upstream_state_dict(emo_cfg(), 3))
    with pytest.raises(CheckpointError, match=message):
        load_gigaam_emo(path)


def test_missing_head_tensor_is_named(tmp_path: Path) -> None:
    cfg = emo_cfg()
    sd = upstream_state_dict(cfg, 0)
    del sd["head.bias"]
    with pytest.raises(CheckpointError, match="missing"):
        load_gigaam_emo(save_gigaam(tmp_path / "emo.ckpt", cfg, sd))


def test_asr_loader_refuses_an_emo_checkpoint_and_back(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="GigaAM-Emo emotion classifier"):
        load_gigaam(checkpoint)
    ctc = save_gigaam(tmp_path / "ctc.ckpt", v3_cfg(), upstream_state_dict(v3_cfg()))
    with pytest.raises(CheckpointError, match="not a GigaAM-Emo checkpoint"):
        load_gigaam_emo(ctc)


# --- the CLI and the download -----------------------------------------------------------


def wav_files(tmp_path: Path) -> list[str]:
    paths = []
    for clip in VERIFY[:4]:
        path = tmp_path / f"{clip.name.replace(' ', '_')}.wav"
        sf.write(path, clip.samples, RATE, subtype="FLOAT")
        paths.append(str(path))
    return paths


def test_cli_recognises_an_emo_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    args = ["gigaam", str(checkpoint), "--out", str(out), "--no-synthetic", "--precision", "fp32"]
    assert export_cli.main([*args, "--verify-audio", *wav_files(tmp_path)]) == 0
    bundle = load_emotion_bundle(out)
    assert bundle.config.labels == tuple(EMOTION_LABELS)
    assert bundle.config.source["checkpoint"] == "emo.ckpt"
    assert bundle.verification["metrics"]["clips"] == 4


def test_cli_download_verifies_the_emo_md5(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cdn = tmp_path / "cdn"
    cdn.mkdir()
    shutil.copyfile(checkpoint, cdn / "emo.ckpt")

    def local_cdn(*args: Any, **kwargs: Any) -> Any:
        return download_gigaam(*args, **{**kwargs, "base_url": cdn.as_uri()})

    monkeypatch.setattr(export_cli, "download_gigaam", local_cdn)
    args = ["gigaam", "--download", "emo", "--download-dir", str(tmp_path / "dl")]
    args += ["--out", str(tmp_path / "b"), "--no-synthetic", "--verify-audio", *wav_files(tmp_path)]
    # The random-weight file is not the published one: upstream's MD5 refuses it.
    assert export_cli.main(args) == 2
    assert list((tmp_path / "dl").iterdir()) == []
    md5 = hashlib.md5(checkpoint.read_bytes()).hexdigest()
    monkeypatch.setitem(GIGAAM_RELEASES, "emo", GigaamRelease("emo", md5, "test copy"))
    assert export_cli.main([*args, "--precision", "fp32"]) == 0
    assert load_emotion_bundle(tmp_path / "b").config.source["published_release"] == "emo"


def test_download_md5_mismatch_leaves_nothing(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "cdn").mkdir()
    shutil.copyfile(checkpoint, tmp_path / "cdn" / "emo.ckpt")
    wrong = GigaamRelease("emo", "0" * 32, "test")
    with pytest.raises(DownloadError, match="md5 .* does not match the published"):
        download_gigaam(wrong, tmp_path / "dl", base_url=(tmp_path / "cdn").as_uri())
    assert list((tmp_path / "dl").iterdir()) == []


def test_registry_lists_upstream_emo() -> None:
    release = GIGAAM_RELEASES["emo"]
    assert release.md5 == "7ce76f9535cb254488985057c0d33006" and not release.sentencepiece
