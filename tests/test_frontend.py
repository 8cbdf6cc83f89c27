"""The numpy front end against NeMo's FilterbankFeatures, rebuilt here in torch + librosa.

Two runs of the reference: float32, as NeMo runs, and float64 on NeMo's float32 window and
filterbank buffers (NeMo's arithmetic without its rounding). Ours computes in float64, so it
must agree with the float64 run to TOLERANCE. Against the float32 run it cannot do better
than float32 itself: on clips with deep spectral notches (mel bins ~90 dB below the frame's
energy) float32 STFT rounding moves NeMo's own features up to 1.2e-4 away from the float64
run (measured on these clips), so that comparison gets FLOAT32_TOLERANCE.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Literal

import librosa
import numpy as np
import numpy.typing as npt
import pytest
import soundfile
import torch
from asr.config import FrontendConfig
from asr.frontend import NemoMelFrontend
from asr.mel import mel_filterbank

pytestmark = pytest.mark.usefixtures("single_torch_thread")
SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
TOLERANCE = 1e-4
FLOAT32_TOLERANCE = 2.5e-4

Audio = npt.NDArray[np.float32]
Features = npt.NDArray[Any]


def nemo_reference(audio: Audio, config: FrontendConfig, dtype: torch.dtype) -> Features:
    """FilterbankFeatures.forward (NeMo >= 2.5, eval, batch of one), valid frames only."""
    num_samples = audio.shape[0]
    # get_seq_len: the centred STFT gives one frame more than this; NeMo masks it.
    seq_len = (num_samples + 2 * (config.n_fft // 2) - config.n_fft) // config.hop_length
    if config.valid_frames == "all":  # NeMo < 2.5 counted every STFT frame
        seq_len += 1
    window = torch.hann_window(config.win_length, periodic=False)  # float32 buffer
    fmax = config.fmax or config.sample_rate / 2
    filterbank = torch.tensor(  # float32 buffer, librosa's default dtype
        librosa.filters.mel(
            sr=config.sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            fmin=config.fmin,
            fmax=fmax,
            norm=config.mel_norm,
        )
    )
    x = torch.from_numpy(audio).to(dtype).unsqueeze(0)
    x = torch.cat((x[:, :1], x[:, 1:] - config.preemph * x[:, :-1]), dim=1)
    spectrum = torch.stft(
        x,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window=window.to(dtype),
        center=True,
        pad_mode=config.stft_pad_mode,
        return_complex=True,
    )
    magnitude = torch.sqrt(torch.view_as_real(spectrum).pow(2).sum(-1))
    if config.mag_power != 1.0:
        magnitude = magnitude.pow(config.mag_power)
    mel = torch.matmul(filterbank.to(dtype), magnitude)
    if config.log_guard_type == "clamp":
        log_mel = torch.log(torch.clamp(mel, min=config.log_guard))
    else:
        log_mel = torch.log(mel + config.log_guard)
    log_mel = log_mel[0, :, :seq_len].to(torch.float64)
    if config.normalize == "per_feature":
        # normalize_batch. NeMo takes these statistics in float32. On a constant bin (digital
        # silence gives log(guard) everywhere) the float32 mean misses the value by an ulp or
        # two, and dividing that by std + 1e-5 makes a constant of ~0.28 (measured), sign set
        # by summation order. Taking them in float64 keeps the reference at the exact 0.
        mean = log_mel.mean(dim=1, keepdim=True)
        std = torch.sqrt(((log_mel - mean) ** 2).sum(dim=1, keepdim=True) / (seq_len - 1))
        # One valid frame: 0 / 0 = NaN, which NeMo >= 2.5 sets to 0 (on CPU; CUDA raises).
        std = std.nan_to_num(nan=0.0) + config.normalize_std_eps
        log_mel = (log_mel - mean) / std
    return log_mel.numpy()


def max_abs_diff(ours: Features, reference: Features) -> float:
    assert ours.shape == reference.shape
    return float(np.abs(ours.astype(np.float64) - reference).max(initial=0.0))


def assert_matches_nemo(frontend: NemoMelFrontend, audio: Audio) -> Features:
    ours = frontend(audio)
    assert ours.dtype == np.float32
    assert ours.shape == (frontend.config.n_mels, frontend.num_frames(audio.shape[0]))
    assert np.isfinite(ours).all()
    exact = nemo_reference(audio, frontend.config, torch.float64)
    assert max_abs_diff(ours, exact) <= TOLERANCE
    as_nemo_runs = nemo_reference(audio, frontend.config, torch.float32)
    assert max_abs_diff(ours, as_nemo_runs) <= FLOAT32_TOLERANCE
    return ours


@pytest.fixture(scope="module")
def speech_clips() -> list[Audio]:
    manifest = SPEECH_DIR / "ru_manifest.jsonl"
    if not manifest.is_file():
        pytest.skip(f"speech clips not found: {manifest} (the repo sits beside shared/)")
    clips = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        audio, sample_rate = soundfile.read(SPEECH_DIR / entry["audio_filepath"], dtype="float32")
        assert sample_rate == 16000 and audio.ndim == 1
        clips.append(audio)
    return clips


# QuartzNet's front end, and the Conformer family's: 25 ms window, 80 mels.
CONFORMER = FrontendConfig(n_mels=80, win_length=400, n_fft=512)


@pytest.fixture(
    scope="module", params=[FrontendConfig(), CONFORMER], ids=["quartznet", "conformer"]
)
def frontend(request: pytest.FixtureRequest) -> NemoMelFrontend:
    config: FrontendConfig = request.param
    return NemoMelFrontend(config)


def test_real_clips_match_nemo(frontend: NemoMelFrontend, speech_clips: list[Audio]) -> None:
    assert speech_clips
    for audio in speech_clips:
        assert_matches_nemo(frontend, audio)


def test_digital_silence_normalises_to_zero(frontend: NemoMelFrontend) -> None:
    ours = assert_matches_nemo(frontend, np.zeros(32000, dtype=np.float32))
    assert ours.shape == (frontend.config.n_mels, 200)
    assert not ours.any()


def test_short_clip_matches_nemo(frontend: NemoMelFrontend, speech_clips: list[Audio]) -> None:
    middle = speech_clips[0].shape[0] // 2
    ours = assert_matches_nemo(frontend, speech_clips[0][middle : middle + 1600])
    assert ours.shape == (frontend.config.n_mels, 10)


@pytest.mark.parametrize("num_samples", [320, 399, 400, 401, 511, 512, 513])
def test_very_short_clips_match_nemo(
    frontend: NemoMelFrontend, speech_clips: list[Audio], num_samples: int
) -> None:
    """Two or three frames, around the window and n_fft lengths."""
    middle = speech_clips[0].shape[0] // 2
    ours = assert_matches_nemo(frontend, speech_clips[0][middle : middle + num_samples])
    assert ours.shape == (frontend.config.n_mels, num_samples // 160)


def test_sixty_seconds_match_nemo(frontend: NemoMelFrontend, speech_clips: list[Audio]) -> None:
    samples = 60 * 16000
    repeats = -(-samples // sum(clip.shape[0] for clip in speech_clips))
    audio = np.concatenate(speech_clips * repeats)[:samples]
    ours = assert_matches_nemo(frontend, audio)
    assert ours.shape == (frontend.config.n_mels, 6000)


@pytest.mark.parametrize(
    "config",
    [
        # Every other parameter off its default, odd n_fft and window included.
        FrontendConfig(
            sample_rate=8000,
            n_fft=255,
            win_length=199,
            hop_length=80,
            n_mels=40,
            preemph=0.9,
            fmin=50.0,
            fmax=3800.0,
            mag_power=1.0,
            log_guard=1e-6,
            normalize_std_eps=1e-3,
        ),
    ],
    ids=["everything_else"],
)
def test_parameters_come_from_config(config: FrontendConfig, speech_clips: list[Audio]) -> None:
    frontend = NemoMelFrontend(config)
    # At 8 kHz, every other sample of the 16 kHz clip: aliased, but it is just a signal here.
    audio = speech_clips[1][:: 16000 // config.sample_rate].copy()
    ours = assert_matches_nemo(frontend, audio)
    assert ours.shape[0] == config.n_mels


def test_pre_2_5_nemo_stft_matches_its_reference(speech_clips: list[Audio]) -> None:
    """Reflect padding and len // hop + 1 frames, as NeMo computed before release 2.5."""
    frontend = NemoMelFrontend(FrontendConfig(stft_pad_mode="reflect", valid_frames="all"))
    for audio in speech_clips[:4]:
        features = assert_matches_nemo(frontend, audio)
        assert features.shape[1] == audio.shape[0] // 160 + 1


@pytest.mark.parametrize("guard", [2.0**-24, float(np.finfo(np.float32).eps)])
def test_clamped_log_guard_matches_nemo(speech_clips: list[Audio], guard: float) -> None:
    """log_zero_guard_type: clamp, log(max(x, guard)); it differs from "add" only where the
    mel energy is near the guard, so digital silence is spliced in to reach it."""
    frontend = NemoMelFrontend(FrontendConfig(log_guard_type="clamp", log_guard=guard))
    audio = np.concatenate([speech_clips[3], np.zeros(8000, np.float32), speech_clips[4]])
    clamped = assert_matches_nemo(frontend, audio)
    added = NemoMelFrontend(FrontendConfig(log_guard=guard))(audio)
    assert np.abs(clamped - added).max() > 1e-3


def test_unnormalised_features_match_nemo(speech_clips: list[Audio]) -> None:
    frontend = NemoMelFrontend(FrontendConfig(normalize=None))
    assert_matches_nemo(frontend, speech_clips[2])


@pytest.mark.parametrize(
    "params",
    [
        {"sr": 16000, "n_fft": 512, "n_mels": 64, "fmin": 0.0, "fmax": 8000.0},
        {"sr": 16000, "n_fft": 512, "n_mels": 80, "fmin": 0.0, "fmax": 8000.0},
        {"sr": 22050, "n_fft": 2048, "n_mels": 128, "fmin": 30.0, "fmax": 11025.0},
        {"sr": 8000, "n_fft": 255, "n_mels": 40, "fmin": 50.0, "fmax": 3800.0},
        # GigaAM's torchaudio filterbank: HTK scale, no norm.
        {"sr": 16000, "n_fft": 400, "n_mels": 64, "fmin": 0.0, "fmax": 8000.0, "htk": True},
        {"sr": 16000, "n_fft": 320, "n_mels": 64, "fmin": 0.0, "fmax": 8000.0, "htk": True},
    ],
)
def test_mel_filterbank_matches_librosa(params: dict[str, Any]) -> None:
    norm: Literal["slaney"] | None = None if params.get("htk") else "slaney"
    ours = mel_filterbank(
        params["sr"],
        params["n_fft"],
        params["n_mels"],
        fmin=params["fmin"],
        fmax=params["fmax"],
        norm=norm,
        htk=params.get("htk", False),
    )
    expected = librosa.filters.mel(**params, norm=norm, dtype=np.float64)
    assert ours.shape == (params["n_mels"], params["n_fft"] // 2 + 1)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_num_frames_is_nemo_valid_length(frontend: NemoMelFrontend) -> None:
    for num_samples in [*range(0, 1000), 16000, 16159, 960000]:
        assert frontend.num_frames(num_samples) == num_samples // 160
    with pytest.raises(ValueError, match="num_samples"):
        frontend.num_frames(-1)


@pytest.mark.parametrize("num_samples", [0, 1, 159])
def test_less_than_a_hop_gives_no_frames(frontend: NemoMelFrontend, num_samples: int) -> None:
    audio = np.random.default_rng(0).standard_normal(num_samples).astype(np.float32)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        features = frontend(audio)
    assert features.shape == (frontend.config.n_mels, 0)
    assert features.dtype == np.float32


@pytest.mark.parametrize("num_samples", [160, 319])
def test_one_frame_normalises_to_zero(frontend: NemoMelFrontend, num_samples: int) -> None:
    # NeMo >= 2.5 on CPU: std of one value is NaN, replaced by 0, so the frame becomes 0.
    audio = 0.1 * np.random.default_rng(1).standard_normal(num_samples).astype(np.float32)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        features = assert_matches_nemo(frontend, audio)
    assert features.shape == (frontend.config.n_mels, 1)
    assert not features.any()


def test_input_is_left_alone_and_must_be_mono(frontend: NemoMelFrontend) -> None:
    audio = np.random.default_rng(2).standard_normal(4000).astype(np.float32)
    original = audio.copy()
    frontend(audio)
    np.testing.assert_array_equal(audio, original)
    with pytest.raises(ValueError, match="mono"):
        frontend(np.zeros((2, 4000), dtype=np.float32))
