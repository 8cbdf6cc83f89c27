"""The onnx-asr side-by-side benchmark: the layout writer, onnx-asr running our model file, and
the benchmark's quick run."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asr.bundle import load_bundle, write_checksums
from asr.transcribe import Transcriber

from bench.common import BenchOptions
from bench.onnx_asr_engines import agreement
from bench.onnx_asr_layout import UnsupportedBundle, load_onnx_asr, write_layout
from bench.onnx_asr_side_by_side import markdown, measure
from tests.conftest import DEMO

CONFORMER = DEMO / "conformer_bundle"
HELD_OUT = DEMO / "audio"


@pytest.fixture(scope="module")
def conformer_bundle() -> Path:
    if not (CONFORMER / "config.json").is_file():
        pytest.fail("demo/conformer_bundle is missing: run scripts/build_demo_conformer.sh")
    return CONFORMER


def held_out() -> list[tuple[Path, str]]:
    lines = (HELD_OUT / "manifest.jsonl").read_text("utf-8").splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    return [(HELD_OUT / entry["audio_filepath"], entry["text"]) for entry in entries]


def test_layout_links_the_bundles_model_and_writes_its_vocabulary(
    conformer_bundle: Path, tmp_path: Path
) -> None:
    model = write_layout(conformer_bundle, tmp_path / "onnx-asr")
    assert model.model_type == "gigaam-v3-ctc"
    assert model.quantization == "int8"  # the demo bundle is int8: onnx-asr's v3_ctc.int8.onnx
    assert model.model_file == tmp_path / "onnx-asr" / "v3_ctc.int8.onnx"
    assert model.model_file.is_symlink()
    assert os.path.samefile(model.model_file, conformer_bundle / "model.onnx")
    settings = json.loads((model.root / "config.json").read_text("utf-8"))
    assert settings == {
        "model_type": "gigaam-v3-ctc",
        "version": "v3",
        "features_size": 64,
        "subsampling_factor": 4,
    }
    vocabulary = (model.root / "v3_vocab.txt").read_text("utf-8").splitlines()
    assert vocabulary == (conformer_bundle / "tokens.txt").read_text("utf-8").splitlines()
    assert vocabulary[0] == "▁ 0" and vocabulary[-1] == "<blk> 33"
    # Writing again replaces the layout instead of leaving two model files onnx-asr refuses.
    write_layout(conformer_bundle, tmp_path / "onnx-asr")
    assert sorted(p.name for p in model.root.iterdir()) == [
        "config.json",
        "v3_ctc.int8.onnx",
        "v3_vocab.txt",
    ]


def test_onnx_asr_transcribes_the_trained_model_as_we_do(
    conformer_bundle: Path, tmp_path: Path
) -> None:
    theirs = load_onnx_asr(write_layout(conformer_bundle, tmp_path / "onnx-asr"), threads=1)
    ours = Transcriber(load_bundle(conformer_bundle), threads=1)
    clips = held_out()
    assert len(clips) == 4
    for path, reference in clips:
        assert ours.transcribe(path).text == reference
        assert theirs.recognize(str(path)) == reference


def test_quartznet_bundle_is_refused(demo_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "onnx-asr"
    with pytest.raises(UnsupportedBundle) as refusal:
        write_layout(demo_bundle, out)
    assert refusal.value.code == "onnx_asr_unsupported"
    assert "NeMo's log-mel with 64 mels and a 320-sample window" in refusal.value.message
    assert "80- and 128-mel" in refusal.value.message
    assert not out.exists()


def _edit_frontend(config: dict[str, Any], tokens: Path) -> None:
    config["frontend"]["center"] = True


def _special_token(config: dict[str, Any], tokens: Path) -> None:
    lines = tokens.read_text("utf-8").splitlines()
    lines[5] = "<unk> 5"  # we print nothing for it, onnx-asr would print "<unk>"
    tokens.write_text("\n".join(lines) + "\n", "utf-8")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_edit_frontend, r"neither onnx-asr's v2 nor v3 one \(center=True \(v3: False\)\)"),
        (_special_token, r"token 5 \('<unk>'\) would print differently there"),
    ],
    ids=["frontend", "special_token"],
)
def test_bundles_onnx_asr_would_run_differently_are_refused(
    conformer_bundle: Path,
    tmp_path: Path,
    edit: Callable[[dict[str, Any], Path], None],
    message: str,
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(conformer_bundle, bundle)
    config = json.loads((bundle / "config.json").read_text("utf-8"))
    edit(config, bundle / "tokens.txt")
    (bundle / "config.json").write_text(json.dumps(config), "utf-8")
    write_checksums(bundle, load_bundle(bundle, verify_checksums=False).config)
    with pytest.raises(UnsupportedBundle, match=message):
        write_layout(bundle, tmp_path / "onnx-asr")


def test_agreement_counts_identical_transcripts_and_characters() -> None:
    assert agreement(["абв", "где"], ["абв", "гдё"]) == {
        "identical": 1,
        "total": 2,
        "char_agreement": round(1 - 1 / 6, 5),
    }
    assert agreement([""], [""])["char_agreement"] == 1.0
    assert agreement([""], ["а"])["char_agreement"] == 0.0


def test_quick_run_measures_both_and_renders(conformer_bundle: Path) -> None:
    result = measure(BenchOptions(quick=True, repeats=1))
    json.dumps(result)  # JSON-able
    runs = result["runs"]
    assert [(r["precision"], r["threads"]) for r in runs] == [
        ("int8", 1),
        ("int8", 1),
        ("int8", 2),
        ("int8", 2),
    ]
    for run in runs:
        assert run["session_threads"] == {"ours": run["threads"], "theirs": run["threads"]}
        assert run["ours_s"] > 0 and run["theirs_s"] > 0
        assert run["speed_ratio"] == pytest.approx(run["theirs_s"] / run["ours_s"], rel=1e-2)
        assert set(run["stages_s"]["theirs"]) == {"features", "model", "other"}
        assert run["stages_s"]["theirs"]["model"] > 0
    held = result["trained"]["sets"][0]
    assert held["identical"] == held["total"] == held["ours_exact"] == held["theirs_exact"] == 4
    frontends = result["frontends"]
    assert frontends["window_identical"] and frontends["filterbank_bf16"]
    assert len(frontends["filterbank_differing"]) == 2
    assert "nemo64" in result["unsupported"][0]["forced_into_nemo_conformer_ctc"][0]["error"]
    text = markdown(result)
    assert "| int8 | 2 | 2 clips, one at a time |" in text
    assert "QuartzNet15x5: not supported by onnx-asr" in text
    assert "reference transcripts: ours 4, onnx-asr 4 of 4" in text
    assert "our model and decoder on onnx-asr's features reproduce" in text


def test_rnnt_layout_runs_the_trained_transducer_in_onnx_asr(tmp_path: Path) -> None:
    """Our transducer bundle's three graphs, renamed for onnx-asr's GigaAM RNNT model, give
    the same transcripts there as here (same greedy rules: max_tokens_per_step = ours)."""
    from bench import onnx_asr_rnnt

    bundle = DEMO / "transducer_bundle"
    if not (bundle / "config.json").is_file():
        pytest.fail("demo/transducer_bundle is missing: run scripts/build_demo_transducer.sh")
    model = onnx_asr_rnnt.write_layout(bundle, tmp_path / "rnnt")
    names = sorted(p.name for p in model.root.iterdir())
    assert names == [
        "config.json", "v3_rnnt_decoder.int8.onnx", "v3_rnnt_encoder.int8.onnx",
        "v3_rnnt_joint.int8.onnx", "v3_vocab.txt",
    ]  # fmt: skip
    settings = json.loads((model.root / "config.json").read_text("utf-8"))
    assert settings["model_type"] == "gigaam-v3-rnnt" and settings["max_tokens_per_step"] == 10
    ours, theirs = onnx_asr_rnnt.Ours(bundle, 1), onnx_asr_rnnt.Theirs(model, 1)
    paths = [path for path, _ in held_out()]
    ours_pass, theirs_pass = ours(paths), theirs(paths)
    assert ours_pass.texts == theirs_pass.texts == [text for _, text in held_out()]
    assert theirs_pass.seconds["decode loop"] > 0 and ours_pass.seconds["decode loop"] > 0
    result = onnx_asr_rnnt.measure(BenchOptions(quick=True, repeats=1))
    assert {run["threads"] for run in result["runs"]} == {1, 2}
    # On real speech (never heard) the two may part, and only where the features differ:
    # our encoder and loop on onnx-asr's features give onnx-asr's transcript.
    real = result["trained"][1]
    assert real["ours_on_their_features_gives_theirs"] == real["differing"]
    assert real["identical"] + real["differing"] == real["total"]
    assert "GigaAM v3 RNNT" in onnx_asr_rnnt.markdown(result)
