"""The emotion bundle and ``asr.emotion.EmotionClassifier``: PyTorch's probabilities from
the bundle, padded batches equal one by one, refusals (corrupt, incomplete, the other kind,
short or bad audio), and no heavy library in the runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from asr.bundle import load_bundle
from asr.emotion import MIN_EMOTION_SECONDS, Emotion, EmotionClassifier, is_emotion_bundle
from asr.emotion_bundle import EMOTION_KIND, load_emotion_bundle
from asr.errors import BundleError, EmptyAudio, InvalidRequest, NonFiniteAudio
from asr.pcm import SampleBlocks
from asr.results import Segment
from asr.segment_emotion import with_emotions

from export.gigaam_emo import load_gigaam_emo
from tests.conftest import DEMO, REPO
from tests.emotion_checkpoints import HELD_OUT, RATE, VERIFY, torch_probs, voiced
from tests.gigaam_checkpoints import EMOTION_LABELS

# The checkpoint and bundle fixtures.
pytest_plugins = ("tests.emotion_fixtures",)


def test_fp32_bundle_gives_the_pytorch_probabilities(checkpoint: Path, fp32_bundle: Path) -> None:
    source = load_gigaam_emo(checkpoint)
    classifier = EmotionClassifier.load(fp32_bundle)
    assert classifier.labels == tuple(EMOTION_LABELS)
    assert (classifier.sample_rate, classifier.model_id) == (16000, "emo-test")
    for clip in HELD_OUT:
        emotion = classifier.classify(clip.samples)
        expected = torch_probs(source, clip.samples)
        assert list(emotion.probabilities) == list(EMOTION_LABELS)
        got = np.array(list(emotion.probabilities.values()))
        assert np.abs(got - expected).max() <= 1e-3
        assert emotion.label == EMOTION_LABELS[int(np.argmax(expected))]
    report = load_emotion_bundle(fp32_bundle).verification
    assert report["precision"] == "fp32" and report["passed"] is True
    assert report["metrics"]["fp32_max_prob_diff"] <= 1e-3


def test_int8_bundle_report(int8_bundle: Path) -> None:
    bundle = load_emotion_bundle(int8_bundle)
    assert bundle.config.model.precision == "int8"
    assert bundle.config.source["quantization"]["name"] == "static-qdq-s8-per-channel-conv-matmul"
    metrics = bundle.verification["metrics"]
    assert metrics["int8_label_agreement"] >= 0.99
    assert metrics["fp32_batch_max_diff"] <= 1e-4
    invariant = metrics["int8_batch_max_diff"] <= 1e-4
    assert bundle.config.model.batch_invariant is bundle.verification["batch_invariant"]
    assert bundle.config.model.batch_invariant is invariant
    assert len(bundle.verification["clips"]) == len(VERIFY)
    assert {"int8_rtf_1thread", "fp32_rtf_1thread", "int8_speedup"} <= metrics.keys()


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_classify_many_equals_one_by_one(
    which: str, fp32_bundle: Path, int8_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asr.emotion

    monkeypatch.setattr(asr.emotion, "BATCH_SECONDS", 9.0)  # several runs, short ones first
    classifier = EmotionClassifier.load(fp32_bundle if which == "fp32" else int8_bundle)
    audio = [clip.samples for clip in [*HELD_OUT, *VERIFY]]
    batched = classifier.classify_many(audio)
    for samples, emotion in zip(audio, batched, strict=True):
        alone = classifier.classify(samples)
        assert emotion.label == alone.label
        for name in classifier.labels:
            assert abs(emotion.probabilities[name] - alone.probabilities[name]) <= 1e-4
    assert classifier.classify_many([]) == []


def test_bundle_not_batch_invariant_runs_one_clip_at_a_time(fp32_bundle: Path) -> None:
    classifier = EmotionClassifier.load(fp32_bundle)
    assert classifier.bundle.config.model.batch_invariant  # fp32: batches keep results
    expected = classifier.classify_many([clip.samples for clip in HELD_OUT])
    classifier._io = replace(classifier._io, batch_invariant=False)
    runs: list[int] = []
    run = classifier._run

    def counted(features: Sequence[np.ndarray]) -> np.ndarray:
        runs.append(len(features))
        return run(features)

    classifier._run = counted  # type: ignore[method-assign]
    got = classifier.classify_many([clip.samples for clip in HELD_OUT])
    assert runs == [1] * len(HELD_OUT)
    for a, b in zip(got, expected, strict=True):
        assert all(abs(a.probabilities[n] - b.probabilities[n]) <= 1e-4 for n in EMOTION_LABELS)


def test_segments_are_classified_in_bounded_groups(
    fp32_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asr.segment_emotion

    classifier = EmotionClassifier.load(fp32_bundle)
    pieces = [clip.samples for clip in [*HELD_OUT, *VERIFY]]
    gap = np.zeros(RATE // 2, np.float32)
    signal = SampleBlocks(block for piece in pieces for block in (piece, gap))
    segments, start = [], 0.0
    for index, piece in enumerate(pieces):
        segments.append(Segment(start, start + piece.size / RATE, f"s{index}", ()))
        start += (piece.size + gap.size) / RATE
    segments.insert(3, Segment(0.0, 0.3, "too short", ()))
    groups: list[int] = []
    classify_many = classifier.classify_many

    def counted(clips: Sequence[np.ndarray]) -> list[Emotion]:
        groups.append(sum(clip.size for clip in clips))
        return classify_many(clips)

    classifier.classify_many = counted  # type: ignore[method-assign]
    monkeypatch.setattr(asr.segment_emotion, "BATCH_SECONDS", 8.0)
    labelled, seconds = with_emotions(segments, signal, RATE, classifier)
    assert len(groups) > 2 and all(size < 8 * RATE + 6 * RATE for size in groups)
    assert sum(groups) == sum(piece.size for piece in pieces)
    assert labelled[3].emotion is None and seconds > 0
    others = [segment for segment in labelled if segment.text != "too short"]
    for segment, piece in zip(others, pieces, strict=True):
        alone = classify_many([piece])[0]
        assert segment.emotion is not None and segment.emotion.label == alone.label


def test_long_clip_is_averaged_over_equal_pieces(fp32_bundle: Path) -> None:
    classifier = EmotionClassifier.load(fp32_bundle)
    long = np.concatenate([voiced(13.0, 7), voiced(13.0, 8)])  # 26 s > 25 s window
    halves = classifier.classify_many([long[: long.size // 2], long[long.size // 2 :]])
    mean = {
        n: (halves[0].probabilities[n] + halves[1].probabilities[n]) / 2 for n in EMOTION_LABELS
    }
    whole = classifier.classify(long)
    assert all(abs(whole.probabilities[n] - mean[n]) <= 1e-5 for n in EMOTION_LABELS)


def test_short_and_bad_clips_are_refused(fp32_bundle: Path) -> None:
    classifier = EmotionClassifier.load(fp32_bundle)
    with pytest.raises(EmptyAudio, match="too short"):
        classifier.classify(np.zeros(round(MIN_EMOTION_SECONDS * RATE) - 1, np.float32))
    with pytest.raises(EmptyAudio, match="clip 1: "):
        classifier.classify_many([voiced(1.0, 1), np.zeros(10, np.float32)])
    with pytest.raises(InvalidRequest, match="mono"):
        classifier.classify(np.zeros((2, RATE), np.float32))
    with pytest.raises(NonFiniteAudio):
        classifier.classify(np.full(RATE, np.nan, np.float32))


def test_emotion_to_dict_rounds() -> None:
    emotion = Emotion("sad", {"angry": 0.123456, "sad": 0.876544})
    assert emotion.to_dict() == {"label": "sad", "probabilities": {"angry": 0.1235, "sad": 0.8765}}


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def test_corrupt_or_incomplete_bundle_is_refused(fp32_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_of(fp32_bundle, tmp_path)
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match its sha256"):
        EmotionClassifier.load(bundle)
    model.unlink()
    with pytest.raises(BundleError, match="missing model.onnx"):
        EmotionClassifier.load(bundle)
    with pytest.raises(BundleError, match="does not exist"):
        EmotionClassifier.load(tmp_path / "absent")


def test_edited_labels_fail_the_checksum(fp32_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_of(fp32_bundle, tmp_path)
    config = json.loads((bundle / "config.json").read_text())
    config["labels"] = list(reversed(config["labels"]))
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="config.json does not match its sha256"):
        EmotionClassifier.load(bundle)


def test_each_loader_refuses_the_other_kind(fp32_bundle: Path) -> None:
    assert is_emotion_bundle(fp32_bundle) and not is_emotion_bundle(DEMO / "bundle")
    assert not is_emotion_bundle(DEMO / "absent")
    assert json.loads((fp32_bundle / "config.json").read_text())["kind"] == EMOTION_KIND
    with pytest.raises(BundleError, match="'emotion_classifier' bundle, not a speech-recognition"):
        load_bundle(fp32_bundle)
    with pytest.raises(BundleError, match="not an emotion-classifier bundle"):
        EmotionClassifier.load(DEMO / "bundle")


def test_runtime_classifier_imports_no_heavy_library(fp32_bundle: Path) -> None:
    probe = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(REPO / 'lambda_app')!r})\n"
        "import numpy as np\n"
        "from asr.emotion import EmotionClassifier\n"
        f"classifier = EmotionClassifier.load({str(fp32_bundle)!r})\n"
        "print(classifier.classify(np.full(16000, 0.01, np.float32)).label)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/"
    )
    label, modules = result.stdout.strip().splitlines()[-2:]
    assert label in EMOTION_LABELS
    assert not set(json.loads(modules)) & {"torch", "export", "scipy", "librosa", "omegaconf"}
