"""Decoding one channel of a stereo call (``channel``): it equals what decoding that
channel alone as a mono file gives, through libsndfile and through ffmpeg alike; the
default still down-mixes; the channels' difference tells a copied mono signal apart."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
from asr.audio import decode_audio, decode_audio_blocks
from asr.channels import ChannelOptions, parse_channel_options
from asr.errors import (
    AudioDecodeError,
    AudioNotMultichannel,
    AudioTooManyChannels,
    InvalidRequest,
    stable_codes,
)
from asr.ffmpeg import find_ffmpeg
from asr.formats import render, subtitle_cues
from asr.resample import resample
from asr.results import ChannelText, Segment
from asr.transcribe import Transcriber

from tests.conftest import DEMO
from tests.test_audio import data_file, run_ffmpeg

RATE = 8000  # telephone audio


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Two real clips at 8 kHz on the two channels of one WAV, the second starting 1 s into
    the first (cross-talk), and each channel as its own mono WAV."""
    out = tmp_path_factory.mktemp("call")
    sides = []
    for name in ("ru/golos_00.wav", "ru/golos_01.wav"):
        samples, rate = soundfile.read(data_file(name), dtype="float32")
        sides.append(resample(samples, rate, RATE))
    frames = max(sides[0].size, RATE + sides[1].size)
    stereo = np.zeros((frames, 2), np.float32)
    stereo[: sides[0].size, 0] = sides[0]
    stereo[RATE : RATE + sides[1].size, 1] = sides[1]
    soundfile.write(out / "call.wav", stereo, RATE, subtype="FLOAT")
    monos = []
    for channel in range(2):
        soundfile.write(out / f"ch{channel}.wav", stereo[:, channel], RATE, subtype="FLOAT")
        monos.append(out / f"ch{channel}.wav")
    return out / "call.wav", monos


def test_each_channel_decodes_as_that_channel_alone(call: tuple[Path, list[Path]]) -> None:
    stereo, monos = call
    for channel, mono in enumerate(monos):
        decoded = decode_audio_blocks(stereo, 16000, channel=channel)
        assert (decoded.decoder, decoded.channels, decoded.channel) == ("soundfile", 2, channel)
        np.testing.assert_array_equal(decoded.blocks.to_array(), decode_audio(mono, 16000).samples)
        assert decoded.max_channel_difference > 0.1  # two different speakers
    first, second = (decode_audio(stereo, 16000, channel=c).samples for c in (0, 1))
    # Who spoke when: the second side is silent until it starts (the filter reaches ~0.1 s).
    assert np.abs(second[:14400]).max() < 1e-6 < np.abs(first[:14400]).max()


def test_ffmpeg_keeps_a_channel_the_same_way(call: tuple[Path, list[Path]], tmp_path: Path) -> None:
    ffmpeg_bin = find_ffmpeg()
    if ffmpeg_bin is None:
        pytest.skip("no ffmpeg binary: run python scripts/place_ffmpeg.py")
    stereo, monos = call
    mka = tmp_path / "call.mka"  # not a container libsndfile opens
    run_ffmpeg(ffmpeg_bin, "-i", str(stereo), "-c:a", "pcm_f32le", str(mka))
    for channel, mono in enumerate(monos):
        decoded = decode_audio_blocks(mka, 16000, channel=channel)
        assert (decoded.decoder, decoded.channel) == ("ffmpeg", channel)
        np.testing.assert_allclose(
            decoded.blocks.to_array(), decode_audio(mono, 16000).samples, rtol=0, atol=1e-6
        )
        assert decoded.max_channel_difference > 0.1
    with pytest.raises(AudioDecodeError, match="no channel 2"):
        decode_audio_blocks(mka, 16000, channel=2)


def test_the_default_down_mixes(call: tuple[Path, list[Path]]) -> None:
    stereo, monos = call
    mixed = decode_audio_blocks(stereo, 16000)
    assert mixed.channel is None
    left, right = (decode_audio(m, 16000).samples for m in monos)
    np.testing.assert_allclose(mixed.blocks.to_array(), (left + right) / 2, rtol=0, atol=1e-6)


def test_a_copied_mono_signal_has_no_channel_difference(
    call: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    samples, rate = soundfile.read(call[1][0], dtype="float32")
    fake = tmp_path / "fake-stereo.wav"
    soundfile.write(fake, np.stack([samples, samples], axis=1), rate, subtype="PCM_16")
    decoded = decode_audio_blocks(fake, 16000, channel=1)
    assert (decoded.channels, decoded.max_channel_difference) == (2, 0.0)
    mono = decode_audio_blocks(call[1][0], 16000)
    assert (mono.channels, mono.max_channel_difference) == (1, 0.0)
    with pytest.raises(AudioDecodeError, match="1 channel"):
        decode_audio_blocks(call[1][0], 16000, channel=1)


MANIFEST = [
    json.loads(line)
    for line in (DEMO / "audio" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
]
# (channel, clip, start s): two turns a side; the client's first cuts into the agent's.
CALL_RATE = RATE
SCRIPT = [(0, 0, 0.0), (1, 1, 1.0), (0, 2, 4.0), (1, 3, 6.5)]


def write_demo_call(out: Path) -> tuple[Path, list[Path]]:
    """Held-out demo clips as an 8 kHz two-sided call, and each side as a mono WAV."""
    stereo = np.zeros((int(9.0 * CALL_RATE), 2), np.float32)
    for channel, clip, start in SCRIPT:
        samples, rate = soundfile.read(DEMO / "audio" / MANIFEST[clip]["audio_filepath"])
        side = resample(samples.astype(np.float32), rate, CALL_RATE)
        at = int(start * CALL_RATE)
        stereo[at : at + side.size, channel] += side
    soundfile.write(out / "call.wav", stereo, CALL_RATE, subtype="PCM_16")
    sides = []
    for channel in range(2):
        soundfile.write(out / f"side{channel}.wav", stereo[:, channel], CALL_RATE, subtype="PCM_16")
        sides.append(out / f"side{channel}.wav")
    return out / "call.wav", sides


@pytest.fixture(scope="module")
def demo_call(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    return write_demo_call(tmp_path_factory.mktemp("demo-call"))


@pytest.fixture(scope="module")
def transcriber(demo_bundle: Path) -> Transcriber:
    """Passes of at most 4 s: the 9 s call takes the long-recording path (VAD segments), as
    real calls do (the demo model, trained on short clips, misreads long silent passes)."""
    return Transcriber.from_dir(demo_bundle, threads=1, max_segment_seconds=4.0)


SPLIT = ChannelOptions("split", ("agent", "client"))


def test_each_side_has_its_own_text_and_the_turns_are_in_order(
    transcriber: Transcriber, demo_call: tuple[Path, list[Path]]
) -> None:
    call, sides = demo_call
    result = transcriber.transcribe(call, channels=SPLIT)
    assert result.channel_mode == "split"
    for channel, side in enumerate(sides):
        alone = transcriber.transcribe(side)
        expected = " ".join(MANIFEST[clip]["text"] for c, clip, _ in SCRIPT if c == channel)
        assert alone.text == expected  # the model reads each side at 8 kHz
        assert result.channels[channel] == ChannelText(channel, SPLIT.speakers[channel], expected)
    turns = [(s.speaker, s.text) for s in result.segments]
    assert turns == [
        (SPLIT.speakers[channel], MANIFEST[clip]["text"]) for channel, clip, _ in SCRIPT
    ]
    for segment, (channel, _, start) in zip(result.segments, SCRIPT, strict=True):
        assert segment.channel == channel and start - 0.1 <= segment.start < start + 0.6
        assert {(w.channel, w.speaker) for w in segment.words} == {(channel, segment.speaker)}
    document = result.to_dict()
    assert document["segments"][1]["speaker"] == "client"
    assert document["words"][0]["channel"] == 0
    assert document["channels"][1] == {
        "channel": 1,
        "speaker": "client",
        "text": result.channels[1].text,
    }


def test_unnamed_channels_are_ch_n_and_arrays_split_too(
    transcriber: Transcriber, demo_call: tuple[Path, list[Path]]
) -> None:
    call, _ = demo_call
    samples, rate = soundfile.read(call, dtype="float32")
    from_file = transcriber.transcribe(call, channels=ChannelOptions("split"))
    from_array = transcriber.transcribe(samples, rate, channels=ChannelOptions("split"))
    assert [c.speaker for c in from_file.channels] == ["ch_0", "ch_1"]
    # The file is resampled block by block and the array at once: the samples differ in the
    # last float32 bits, which moves int8 activations' rounding (on CPUs without VNNI a
    # confidence moves by up to 0.03). Texts, times and speakers stay the same.
    assert [_rounded(s) for s in from_array.segments] == [_rounded(s) for s in from_file.segments]
    confidences = [
        (a.confidence, b.confidence)
        for x, y in zip(from_array.segments, from_file.segments, strict=True)
        for a, b in zip(x.words, y.words, strict=True)
    ]
    assert max(abs(a - b) for a, b in confidences) < 0.05, confidences


def _rounded(segment: Segment) -> Segment:
    return replace(segment, words=tuple(replace(w, confidence=0.0) for w in segment.words))


def test_the_default_still_down_mixes(
    transcriber: Transcriber, demo_call: tuple[Path, list[Path]]
) -> None:
    result = transcriber.transcribe(demo_call[0])
    assert (result.channel_mode, result.channels) == ("mix", ())
    document = result.to_dict()
    assert "channel" not in document["words"][0] and "channel" not in document["segments"][0]


def test_a_copied_mono_signal_is_read_once(
    transcriber: Transcriber, demo_call: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    samples, rate = soundfile.read(demo_call[1][0], dtype="float32")
    fake = tmp_path / "fake.wav"
    soundfile.write(fake, np.stack([samples, samples], axis=1), rate, subtype="PCM_16")
    result = transcriber.transcribe(fake, channels=SPLIT)
    assert (result.channel_mode, result.channels) == ("identical", ())
    assert result.text == transcriber.transcribe(demo_call[1][0]).text


def test_split_refuses_mono_and_too_many_channels(
    transcriber: Transcriber, demo_call: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    with pytest.raises(AudioNotMultichannel):
        transcriber.transcribe(demo_call[1][0], channels=SPLIT)
    samples, rate = soundfile.read(demo_call[0], dtype="float32")
    three = tmp_path / "three.wav"
    soundfile.write(three, np.concatenate([samples, samples[:, :1] * 0.5], axis=1), rate)
    with pytest.raises(AudioTooManyChannels, match="at most 2"):
        transcriber.transcribe(three, channels=SPLIT)


@pytest.mark.parametrize(
    "fields",
    [
        {"channels": "stereo"},
        {"channels": 2},
        {"speakers": "a, b"},  # names without a split
        {"channels": "split", "speakers": "a, a"},
        {"channels": "split", "speakers": ["a", "b", "c"]},
        {"channels": "split", "speakers": ["a", ""]},
        {"channels": "split", "speakers": [1, 2]},
    ],
)
def test_bad_channel_options_are_invalid_channels(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_channel_options(fields)
    assert caught.value.code == "invalid_channels" and caught.value.code in stable_codes()


def test_channel_options_parse() -> None:
    assert parse_channel_options({}) == ChannelOptions()
    assert parse_channel_options({"channels": "Split", "speakers": "agent, client"}) == SPLIT
    assert parse_channel_options({"channels": "split", "speakers": ["agent"]}).speaker(1) == "ch_1"


def test_formats_name_the_speaker_at_each_turn(
    transcriber: Transcriber, demo_call: tuple[Path, list[Path]]
) -> None:
    result = transcriber.transcribe(demo_call[0], channels=SPLIT)
    turns = [f"{SPLIT.speakers[c]}: {MANIFEST[clip]['text']}" for c, clip, _ in SCRIPT]
    assert render(result, "text").body == "".join(f"{t}\n" for t in turns)
    srt = render(result, "srt").body
    assert [b.split("\n")[2] for b in srt.strip().split("\n\n")][:2] == [
        "agent: включи свет на кухне",
        "client: поставь будильник на семь утра",
    ]
    vtt = render(result, "vtt").body
    assert "<v agent>включи свет на кухне" in vtt and "<v client>поставь" in vtt
    cues = subtitle_cues(result)
    assert cues[1].start < cues[0].end  # the client cut in: both cues kept, overlapping
    results = json.loads(render(result, "json").body)["results"]
    labels = results["channel_labels"]
    assert labels["number_of_channels"] == 2
    assert [c["channel_label"] for c in labels["channels"]] == ["ch_0", "ch_1"]
    spoken = [
        " ".join(i["alternatives"][0]["content"] for i in c["items"]) for c in labels["channels"]
    ]
    assert spoken == [c.text for c in result.channels]
    assert [s["channel_label"] for s in results["audio_segments"]] == [
        "ch_0",
        "ch_1",
        "ch_0",
        "ch_1",
    ]
    assert {i["channel_label"] for i in results["items"]} == {"ch_0", "ch_1"}
