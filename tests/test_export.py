from __future__ import annotations

import gzip
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from asr.bundle import load_bundle
from asr.config import FrontendConfig
from asr.transcribe import Transcriber

from export.__main__ import main as export_main
from export.checkpoint import build_quartznet, load_checkpoint, load_quartznet, write_nemo
from export.clips import file_clips
from export.nemo_config import quartznet15x5_blocks, quartznet_config
from export.onnx_export import fold_batch_norms
from export.pipeline import ExportOptions, ExportRejected, export_bundle
from export.quartznet import CheckpointError, QuartzNetCTC, QuartzNetSpec
from export.verify import Thresholds
from tests.conftest import GOLOS_VOCABULARY, speech_dir, write_random_quartznet

RANDOM_WEIGHTS = Thresholds(min_int8_token_agreement=0.0, max_int8_cer_vs_fp32=1.0)


def test_full_quartznet15x5_layout_loads_strictly(tmp_path: Path) -> None:
    """Every key and shape of NeMo's QuartzNet15x5 (18.9 M parameters) is accepted."""
    path = write_random_quartznet(tmp_path / "q15x5.nemo", quartznet15x5_blocks())
    checkpoint = load_checkpoint(path)
    keys = checkpoint.state_dict.keys()
    for key in (
        "encoder.encoder.0.mconv.0.conv.weight",
        "encoder.encoder.1.mconv.22.running_var",
        "encoder.encoder.1.res.0.0.conv.weight",
        "encoder.encoder.1.res.0.1.num_batches_tracked",
        "encoder.encoder.17.mconv.0.conv.weight",
        "decoder.decoder_layers.0.bias",
        "preprocessor.featurizer.fb",
        "preprocessor.featurizer.window",
    ):
        assert key in keys
    assert checkpoint.state_dict["encoder.encoder.16.mconv.0.conv.weight"].shape == (512, 1, 87)
    model = build_quartznet(checkpoint)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(18.9e6, rel=0.01)
    assert model.spec.subsampling == 2


def test_masked_batches_equal_single_utterances_and_folding_is_exact(tmp_path: Path) -> None:
    model = build_quartznet(load_checkpoint(write_random_quartznet(tmp_path / "m.nemo")))
    features = torch.randn(2, 64, 300)
    lengths = torch.tensor([300, 180])
    with torch.no_grad():
        batched, batched_lengths = model(features, lengths)
        single, _ = model(features[1:, :, :180], lengths[1:])
        folded, _ = fold_batch_norms(model)(features, lengths)
    assert batched_lengths.tolist() == [150, 90]
    assert torch.allclose(batched[1, :90], single[0], atol=1e-5)
    assert torch.allclose(batched, folded, atol=1e-4)


def test_state_dict_plus_config_gzip_and_lightning_forms(tmp_path: Path, tiny_nemo: Path) -> None:
    reference = load_checkpoint(tiny_nemo)
    (tmp_path / "model_config.yaml").write_text(yaml.safe_dump({"model": reference.config}))
    torch.save({"state_dict": reference.state_dict}, tmp_path / "lightning.ckpt")
    torch.save(reference.state_dict, tmp_path / "weights.pt")
    with gzip.open(tmp_path / "tiny.nemo.gz", "wb") as packed:
        packed.write(tiny_nemo.read_bytes())
    for path, config in (
        (tmp_path / "lightning.ckpt", tmp_path / "model_config.yaml"),
        (tmp_path / "weights.pt", tmp_path / "model_config.yaml"),
        (tmp_path / "tiny.nemo.gz", None),
    ):
        loaded = load_checkpoint(path, config)
        assert loaded.config["labels"] == GOLOS_VOCABULARY
        model = build_quartznet(loaded)
        assert model.spec.num_classes == 34


def test_clear_errors_for_bad_checkpoints(tmp_path: Path, tiny_nemo: Path) -> None:
    with pytest.raises(CheckpointError, match="pass its model_config.yaml"):
        load_checkpoint(_write(tmp_path / "w.pt", b"not a checkpoint"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.nemo")
    truncated = _write(tmp_path / "cut.nemo", tiny_nemo.read_bytes()[:3000])
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated)
    loaded = load_checkpoint(tiny_nemo)
    loaded.state_dict.pop("encoder.encoder.1.res.0.0.conv.weight")
    with pytest.raises(CheckpointError, match="1 missing"):
        build_quartznet(loaded)
    other = {**loaded.config, "encoder": {"feat_in": 64, "jasper": []}}
    with pytest.raises(CheckpointError, match="no encoder.jasper"):
        QuartzNetSpec.from_nemo_config(other)


def test_a_filterbank_that_disagrees_with_the_config_is_refused(
    tmp_path: Path, tiny_nemo: Path
) -> None:
    loaded = load_checkpoint(tiny_nemo)
    loaded.state_dict["preprocessor.featurizer.fb"] = (
        loaded.state_dict["preprocessor.featurizer.fb"] * 1.1
    )
    with pytest.raises(CheckpointError, match="featurizer.fb differs"):
        load_quartznet(loaded)


def test_export_writes_a_bundle_whose_runtime_matches_torch(
    tmp_path: Path, tiny_nemo: Path
) -> None:
    clip = speech_dir() / "ru" / "golos_03.wav"
    bundle = export_bundle(
        load_quartznet(load_checkpoint(tiny_nemo)),
        tmp_path / "bundle",
        file_clips([clip], 16000),
        ExportOptions(model_id="tiny", thresholds=RANDOM_WEIGHTS),
        step=lambda m: None,
    )
    assert sorted(p.name for p in bundle.root.iterdir()) == [
        ".verified.json",
        "SHA256SUMS",
        "config.json",
        "model.onnx",
        "tokens.txt",
        "verification.json",
    ]
    report = bundle.verification
    assert report["passed"] is True
    assert report["metrics"]["fp32_max_logprob_diff"] < 1e-3
    assert report["source"]["checkpoint_sha256"] == load_checkpoint(tiny_nemo).sha256
    assert not list(tmp_path.glob(".bundle.*")), "staging directory left behind"
    transcript = Transcriber(bundle).transcribe(clip)
    assert transcript.text == report["clips"][0]["text_int8"]


def test_gate_refuses_and_names_the_threshold(tmp_path: Path, tiny_nemo: Path) -> None:
    clip = speech_dir() / "ru" / "golos_03.wav"
    strict = Thresholds(
        max_fp32_logprob_diff=-1.0, min_int8_token_agreement=0.0, max_int8_cer_vs_fp32=1.0
    )
    with pytest.raises(ExportRejected, match="ONNX fp32 log-probs differ from PyTorch") as caught:
        export_bundle(
            load_quartznet(load_checkpoint(tiny_nemo)),
            tmp_path / "bundle",
            file_clips([clip], 16000),
            ExportOptions(model_id="x", thresholds=strict),
            step=lambda m: None,
        )
    assert not (tmp_path / "bundle").exists()
    failed = json.loads(caught.value.report_path.read_text())
    assert failed["passed"] is False and failed["failures"]


def cli_args(checkpoint: Path, clip: str, *extra: str) -> list[str]:
    """Export CLI arguments for a random-weight model (token gate off) on one clip."""
    return [
        "quartznet", str(checkpoint), "--no-synthetic", "--verify-audio", clip,
        "--max-cer-vs-fp32", "1", *extra,
    ]  # fmt: skip


def test_cli_exports_and_refuses(
    tmp_path: Path, tiny_nemo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = str(speech_dir() / "ru" / "golos_01.wav")
    ok = cli_args(tiny_nemo, clip, "--out", str(tmp_path / "ok"), "--min-token-agreement", "0")
    assert export_main(ok) == 0
    assert load_bundle(tmp_path / "ok").config.model_id == "tiny"
    assert export_main(ok) == 2
    assert "exists" in capsys.readouterr().err
    code = export_main(
        cli_args(tiny_nemo, clip, "--out", str(tmp_path / "no"), "--max-logprob-diff", "-1")
    )
    assert code == 3
    assert "export refused" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_fp32_bundle_option(tmp_path: Path, tiny_nemo: Path) -> None:
    clip = speech_dir() / "ru" / "golos_02.wav"
    bundle = export_bundle(
        load_quartznet(load_checkpoint(tiny_nemo)),
        tmp_path / "fp32",
        file_clips([clip], 16000),
        ExportOptions(model_id="fp32", thresholds=RANDOM_WEIGHTS, precision="fp32"),
        step=lambda m: None,
    )
    assert bundle.config.model.precision == "fp32"
    features = np.zeros((64, 40), np.float32)
    assert Transcriber(bundle).model(features).shape == (20, 34)


def test_write_nemo_has_the_upstream_members(tmp_path: Path) -> None:
    config = quartznet_config(GOLOS_VOCABULARY, quartznet15x5_blocks()[:1])
    model = QuartzNetCTC(QuartzNetSpec.from_nemo_config(config))
    write_nemo(tmp_path / "m.nemo", config, model.state_dict())
    with tarfile.open(tmp_path / "m.nemo") as archive:
        assert sorted(archive.getnames()) == ["./model_config.yaml", "./model_weights.ckpt"]
    shutil.rmtree(tmp_path)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_pre_2_5_nemo_front_end_is_selectable(tmp_path: Path, tiny_nemo: Path) -> None:
    clip = str(speech_dir() / "ru" / "golos_05.wav")
    extra = ("--min-token-agreement", "0", "--nemo-stft", "legacy", "--out", str(tmp_path / "l"))
    assert export_main(cli_args(tiny_nemo, clip, *extra)) == 0
    frontend = load_bundle(tmp_path / "l").config.frontend
    assert isinstance(frontend, FrontendConfig)
    assert (frontend.stft_pad_mode, frontend.valid_frames) == ("reflect", "all")
