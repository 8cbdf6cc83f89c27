"""Why onnx-asr's transcripts may differ from ours on the same ONNX file: transcript
agreement, the two GigaAM v3 front ends compared directly, and agreement on the trained demo
Conformer (random-weight transcripts are noise)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from asr.bundle import load_bundle
from asr.ctc import greedy_decode
from asr.frontend import GigaamMelFrontend, gigaam_buffers, round_to_bfloat16
from onnx_asr.preprocessors.numpy_preprocessor import GigaamPreprocessorNumpy

from bench.common import REPO
from bench.onnx_asr_engines import Float32Array, Ours, Theirs, agreement
from bench.onnx_asr_layout import ONNX_ASR_FRONTENDS, write_layout

DEMO_CONFORMER = REPO / "demo" / "conformer_bundle"
DEMO_AUDIO = REPO / "demo" / "audio"


def theirs_preprocessor() -> GigaamPreprocessorNumpy:
    """onnx-asr's v3 front end as it runs on the CPU provider (its numpy implementation)."""
    return GigaamPreprocessorNumpy("gigaam_v3")


def compare_frontends(clips: Sequence[Path]) -> dict[str, Any]:
    """onnx-asr's v3 window and filterbank against ours (torch's bfloat16-rounded buffers),
    and the features: max |Δ log-mel| of theirs vs ours, of theirs with our filterbank vs
    theirs (the filterbank's share), and vs ours (the float32 arithmetic's share)."""
    config = ONNX_ASR_FRONTENDS["v3"]
    window, filterbank = gigaam_buffers(config)
    theirs = theirs_preprocessor()
    their_window = np.asarray(theirs._window, dtype=np.float32)
    their_filterbank = np.asarray(theirs._melscale_fbanks, dtype=np.float32).T
    bf16 = round_to_bfloat16
    differing = np.argwhere(their_filterbank != filterbank)
    with_our_filterbank = theirs_preprocessor()
    with_our_filterbank._melscale_fbanks = filterbank.T.copy()
    ours = GigaamMelFrontend(config)
    deltas = {"theirs_vs_ours": 0.0, "filterbank_share": 0.0, "arithmetic_share": 0.0}
    for path in clips:
        audio = read_clip(path)
        mine = ours(audio)
        theirs_computed = their_features(theirs, audio)
        swapped = their_features(with_our_filterbank, audio)
        assert theirs_computed.shape == mine.shape, (theirs_computed.shape, mine.shape)
        for key, (a, b) in {
            "theirs_vs_ours": (theirs_computed, mine),
            "filterbank_share": (theirs_computed, swapped),
            "arithmetic_share": (swapped, mine),
        }.items():
            deltas[key] = max(deltas[key], float(np.abs(a - b).max()))
    return {
        "window_identical": bool(np.array_equal(their_window, window)),
        "window_bf16": bool(np.array_equal(their_window, bf16(their_window))),
        "filterbank_bf16": bool(
            np.array_equal(their_filterbank, round_to_bfloat16(their_filterbank))
        ),
        "filterbank_entries": int(filterbank.size),
        "filterbank_nonzero": int(np.count_nonzero(filterbank)),
        "filterbank_differing": [
            {
                "mel": int(mel),
                "bin": int(bin_),
                "ours": float(filterbank[mel, bin_]),
                "theirs": float(their_filterbank[mel, bin_]),
            }
            for mel, bin_ in differing
        ],
        "max_abs_log_mel_delta": {key: float(f"{value:.3g}") for key, value in deltas.items()},
        "clips": len(clips),
    }


def read_clip(path: Path) -> Float32Array:
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and audio.ndim == 1, (path, rate, audio.shape)
    return np.asarray(audio, dtype=np.float32)


def their_features(preprocessor: GigaamPreprocessorNumpy, audio: Float32Array) -> Float32Array:
    features, _ = preprocessor(audio[None, :], np.array([audio.size], dtype=np.int64))
    return np.asarray(features[0], dtype=np.float32)


def trained_agreement(clips: Sequence[Path]) -> dict[str, Any]:
    """The trained demo Conformer (GigaAM v3 layout, int8) through both runtimes at 1 thread:
    its held-out espeak clips (with references) and the real clips; on the real clips also
    onnx-asr with our filterbank, to see whether the filterbank accounts for a disagreement."""
    manifest = [
        json.loads(line)
        for line in (DEMO_AUDIO / "manifest.jsonl").read_text("utf-8").splitlines()
        if line.strip()
    ]
    held_out = [DEMO_AUDIO / entry["audio_filepath"] for entry in manifest]
    references = [entry["text"] for entry in manifest]
    with tempfile.TemporaryDirectory() as tmp:
        layout = write_layout(DEMO_CONFORMER, Path(tmp) / "demo")
        ours, theirs = Ours(DEMO_CONFORMER, 1), Theirs(layout, 1)
        sets: list[dict[str, Any]] = []
        for name, paths in (
            ("demo/audio held-out espeak clips", held_out),
            (f"{len(clips)} real clips", list(clips)),
        ):
            mine, their = ours(paths).texts, theirs(paths).texts
            entry: dict[str, Any] = {"set": name, **agreement(mine, their)}
            if paths is held_out:
                entry["ours_exact"] = sum(a == r for a, r in zip(mine, references, strict=True))
                entry["theirs_exact"] = sum(b == r for b, r in zip(their, references, strict=True))
            else:
                entry["disagreeing"] = [
                    {
                        "clip": path.name,
                        "ours": a,
                        "theirs": b,
                        "ours_on_their_features": _ours_on_their_features(ours, theirs, path),
                    }
                    for path, a, b in zip(paths, mine, their, strict=True)
                    if a != b
                ]
                _, filterbank = gigaam_buffers(ONNX_ASR_FRONTENDS["v3"])
                theirs.preprocessor._melscale_fbanks = filterbank.T.copy()
                swapped = theirs(paths).texts
                entry["with_our_filterbank"] = agreement(mine, swapped)
            sets.append(entry)
    source = load_bundle(DEMO_CONFORMER).config
    return {
        "bundle": "demo/conformer_bundle",
        "model_id": source.model_id,
        "precision": source.model.precision,
        "threads": 1,
        "sets": sets,
    }


def _ours_on_their_features(ours: Ours, theirs: Theirs, path: Path) -> str:
    """Our model run and CTC decoding on onnx-asr's features of ``path``: equal to onnx-asr's
    transcript when the front ends alone make the difference."""
    transcriber = ours.transcriber
    log_probs = transcriber.model(their_features(theirs.preprocessor, read_clip(path)))
    config = transcriber.bundle.config
    return greedy_decode(log_probs, transcriber.bundle.vocabulary, config.frame_seconds).text
