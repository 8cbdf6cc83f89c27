"""GigaAM's front end against torchaudio's MelSpectrogram + log(clamp), rebuilt here in torch.

torchaudio is not installed, so the reference repeats what MelSpectrogram does: a periodic
Hann window and an HTK filterbank built in float32 (melscale_fbanks, written out below),
torch.stft (reflection padding when centred), |X| ** 2, the filterbank product, then
log(clamp(x, 1e-9, 1e9)). v3 checkpoints hold both buffers rounded to bfloat16.

Two runs of the reference: float32, as GigaAM runs, and float64 on the same float32 buffers.
Ours computes in float64, so it must agree with the float64 run to TOLERANCE (measured: up to
1e-6 with v3's bfloat16 buffers, which we reproduce bit for bit; up to 6.1e-5 on v2, all from
the dozen window values where torch's float32 cos is one ulp off the correctly rounded one,
felt in mel bins ~87 dB under their frame's loudest). Against the float32 run, float32 STFT
rounding is the limit: the float32 run itself strays up to 1.24e-3 (v2) and 3.6e-4 (v3)
from the float64 one on these clips, again in bins 70-90 dB down; FLOAT32_TOLERANCE is twice
the worst measured.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile
import torch
from asr.config import FrontendConfig, GigaamMelConfig
from asr.frontend import (
    Frontend,
    GigaamMelFrontend,
    NemoMelFrontend,
    gigaam_buffers,
    make_frontend,
    round_to_bfloat16,
)
from asr.mel import mel_filterbank
from asr.resample import resample

from tests.conftest import SpeechClip, speech_dir

V2 = GigaamMelConfig()
V3 = GigaamMelConfig(n_fft=320, win_length=320, center=False, bf16_buffers=True)
pytestmark = pytest.mark.usefixtures("single_torch_thread")
BOTH = pytest.mark.parametrize("config", [V2, V3], ids=["v2", "v3"])
TOLERANCE = 1e-4
FLOAT32_TOLERANCE = 2.5e-3

Audio = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]


def torch_melscale_fbanks(
    n_freqs: int, n_mels: int, sample_rate: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """torchaudio.functional.melscale_fbanks(n_freqs, 0, sr // 2, n_mels, sr): [n_freqs, n_mels]."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=dtype)
    m_max = 2595.0 * math.log10(1.0 + (sample_rate // 2) / 700.0)
    m_pts = torch.linspace(0.0, m_max, n_mels + 2, dtype=dtype)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up_slopes = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1, dtype=dtype), torch.min(down_slopes, up_slopes))


def torch_buffers(config: GigaamMelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """MelSpectrogram's window and fb buffers (float32), as a checkpoint of this config holds."""
    window = torch.hann_window(config.win_length)
    fb = torch_melscale_fbanks(config.n_fft // 2 + 1, config.n_mels, config.sample_rate)
    if config.bf16_buffers:
        window = window.to(torch.bfloat16).to(torch.float32)
        fb = fb.to(torch.bfloat16).to(torch.float32)
    return window, fb


def gigaam_reference(audio: Audio, config: GigaamMelConfig, dtype: torch.dtype) -> Float64Array:
    """FeatureExtractor.forward on a batch of one: log-mel [n_mels, T]."""
    window, fb = torch_buffers(config)
    spectrum = torch.stft(
        torch.from_numpy(audio).to(dtype).unsqueeze(0),
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window=window.to(dtype),
        center=config.center,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    power = spectrum.abs().pow(2.0)
    mel = torch.matmul(power.transpose(-1, -2), fb.to(dtype)).transpose(-1, -2)
    features = torch.log(mel.clamp(config.clamp_min, config.clamp_max))
    result: Float64Array = features[0].to(torch.float64).numpy()
    return result


def max_abs_diff(ours: npt.NDArray[np.float32], reference: Float64Array) -> float:
    assert ours.shape == reference.shape
    return float(np.abs(ours.astype(np.float64) - reference).max(initial=0.0))


def assert_matches_gigaam(config: GigaamMelConfig, audio: Audio) -> npt.NDArray[np.float32]:
    frontend = GigaamMelFrontend(config)
    ours = frontend(audio)
    assert ours.dtype == np.float32
    assert ours.shape == (config.n_mels, frontend.num_frames(audio.shape[0]))
    assert np.isfinite(ours).all()
    assert max_abs_diff(ours, gigaam_reference(audio, config, torch.float64)) <= TOLERANCE
    assert max_abs_diff(ours, gigaam_reference(audio, config, torch.float32)) <= FLOAT32_TOLERANCE
    return ours


def load_16k(path: Path) -> Audio:
    audio, sample_rate = soundfile.read(path, dtype="float32")
    assert audio.ndim == 1
    return resample(audio, sample_rate, 16000)


@pytest.fixture(scope="module")
def clips(ru_clips: list[SpeechClip]) -> list[Audio]:
    """The Russian manifest's clips (16 kHz) and one recorded at 48 kHz, resampled."""
    clips = [load_16k(clip.path) for clip in ru_clips]
    clips.append(load_16k(speech_dir() / "ru_untranscribed" / "tinkoff_sample_4.wav"))  # 48 kHz
    return clips


def test_bfloat16_rounding_matches_torch() -> None:
    rng = np.random.default_rng(0)
    random_bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    # Ties (low half 0x8000) and their neighbours, below even and odd upper halves.
    uppers = rng.integers(0, 2**16, size=2000, dtype=np.uint64).astype(np.uint32) << 16
    near_ties = (uppers[:, None] | np.array([0x7FFF, 0x8000, 0x8001, 0xFFFF, 0])).ravel()
    edges = np.array(
        [0, 0x80000000, 1, 0x8000, 0x18000, 0x807FFFFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000,
         0x7F800000, 0xFF800000, 0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7FC00000, 0x7F800001,
         0xFFFFFFFF, 0x7FFF8000],
        dtype=np.uint32,
    )  # fmt: skip
    for bits in (random_bits, near_ties, edges, edges[:3]):
        values = bits.view(np.float32)
        ours = round_to_bfloat16(values)
        expected = torch.from_numpy(values).to(torch.bfloat16).to(torch.float32).numpy()
        assert ours.dtype == np.float32 and ours.shape == values.shape
        nan = np.isnan(expected)
        np.testing.assert_array_equal(np.isnan(ours), nan)
        np.testing.assert_array_equal(ours[~nan].view(np.uint32), expected[~nan].view(np.uint32))
    assert round_to_bfloat16(1.0 + 2.0**-8) == 1.0  # a tie, to the even neighbour
    assert round_to_bfloat16(1.0 + 3 * 2.0**-8) == 1.0 + 2**-6


@pytest.mark.parametrize(("n_fft", "n_mels"), [(400, 64), (320, 64), (512, 80), (256, 40)])
def test_mel_filterbank_is_torchaudios_maths(n_fft: int, n_mels: int) -> None:
    """mel_filterbank(htk=True, norm=None) is melscale_fbanks' maths; torch's float32 moves it."""
    ours = mel_filterbank(16000, n_fft, n_mels, fmin=0.0, fmax=8000.0, norm=None, htk=True)
    in_float64 = torch_melscale_fbanks(n_fft // 2 + 1, n_mels, 16000, torch.float64)
    np.testing.assert_allclose(ours.T, in_float64.numpy(), rtol=0, atol=1e-12)
    as_torch_holds = torch_melscale_fbanks(n_fft // 2 + 1, n_mels, 16000).numpy()
    assert np.abs(ours.T - as_torch_holds).max() < 1e-5


@pytest.mark.parametrize(
    "config",
    [V2, V3, GigaamMelConfig(bf16_buffers=True), GigaamMelConfig(n_fft=512, n_mels=80)],
    ids=["v2", "v3", "v2_bf16", "512_80"],
)
def test_buffers_are_torchaudios(config: GigaamMelConfig) -> None:
    window, filterbank = gigaam_buffers(config)
    torch_window, torch_fb = (buffer.numpy() for buffer in torch_buffers(config))
    assert window.dtype == filterbank.dtype == np.float32
    assert filterbank.shape == (config.n_mels, config.n_fft // 2 + 1) == torch_fb.T.shape
    if config.bf16_buffers:
        np.testing.assert_array_equal(window, torch_window)
        np.testing.assert_array_equal(filterbank, torch_fb.T)
        np.testing.assert_array_equal(round_to_bfloat16(filterbank), filterbank)
    else:
        # torch's float32 cos and pow are not correctly rounded, ours are: one-ulp
        # differences in a few window values and mel edges (see _torchaudio_htk_filterbank).
        np.testing.assert_allclose(window, torch_window, rtol=0, atol=6e-8)
        np.testing.assert_allclose(filterbank, torch_fb.T, rtol=0, atol=1e-5)


@BOTH
def test_real_clips_match_gigaam(config: GigaamMelConfig, clips: list[Audio]) -> None:
    assert len(clips) >= 4
    for audio in clips:
        assert_matches_gigaam(config, audio)


@BOTH
def test_digital_silence_is_the_clamp_floor(config: GigaamMelConfig) -> None:
    ours = assert_matches_gigaam(config, np.zeros(32000, dtype=np.float32))
    assert ours.shape == (64, 201 if config.center else 199)
    assert (ours == np.float32(math.log(config.clamp_min))).all()
    as_gigaam_runs = gigaam_reference(np.zeros(32000, dtype=np.float32), config, torch.float32)
    np.testing.assert_array_equal(ours, as_gigaam_runs)


@BOTH
@pytest.mark.parametrize("num_samples", [0, 1, 100, 200, 201, 319, 320, 321, 400, 401, 480])
def test_short_inputs(config: GigaamMelConfig, num_samples: int, clips: list[Audio]) -> None:
    middle = clips[0].shape[0] // 2
    audio = clips[0][middle : middle + num_samples]
    frontend = GigaamMelFrontend(config)
    if frontend.num_frames(num_samples) > 0:
        assert_matches_gigaam(config, audio)
        return
    # torch.stft raises (reflection padding longer than the clip, or a clip shorter than
    # n_fft); we give no frames, which the transcriber reports as audio too short.
    with pytest.raises(RuntimeError):
        gigaam_reference(audio, config, torch.float32)
    assert frontend(audio).shape == (64, 0)


@BOTH
def test_sixty_seconds_match_gigaam(config: GigaamMelConfig, clips: list[Audio]) -> None:
    samples = 60 * 16000
    repeats = -(-samples // sum(clip.shape[0] for clip in clips))
    audio = np.concatenate(clips * repeats)[:samples]
    ours = assert_matches_gigaam(config, audio)
    assert ours.shape == (64, 6001 if config.center else 5999)


@BOTH
def test_num_frames_is_upstreams(config: GigaamMelConfig) -> None:
    frontend = GigaamMelFrontend(config)
    for num_samples in [*range(0, 2000), 16000, 16159, 960000]:
        if config.center:  # reflection needs more samples than the n_fft // 2 pad
            expected = num_samples // 160 + 1 if num_samples > 200 else 0
        else:
            expected = (num_samples - 320) // 160 + 1 if num_samples >= 320 else 0
        assert frontend.num_frames(num_samples) == expected
    with pytest.raises(ValueError, match="num_samples"):
        frontend.num_frames(-1)


def test_make_frontend_follows_the_config() -> None:
    nemo: Frontend = make_frontend(FrontendConfig())
    gigaam: Frontend = make_frontend(V3)
    assert isinstance(nemo, NemoMelFrontend) and nemo.config == FrontendConfig()
    assert isinstance(gigaam, GigaamMelFrontend) and gigaam.config == V3
    with pytest.raises(TypeError, match="no front end"):
        make_frontend(object())  # type: ignore[arg-type]


def test_input_is_left_alone_and_must_be_mono() -> None:
    frontend = GigaamMelFrontend(V2)
    audio = np.random.default_rng(2).standard_normal(4000).astype(np.float32)
    original = audio.copy()
    frontend(audio)
    np.testing.assert_array_equal(audio, original)
    with pytest.raises(ValueError, match="mono"):
        frontend(np.zeros((2, 4000), dtype=np.float32))
