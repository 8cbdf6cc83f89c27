"""Property-based fuzzing of POST /transcribe (through the Lambda handler) and of decode_audio.

Inputs: random bytes (bare and behind real magic numbers), real files (WAV, FLAC, MP3, OGG,
M4A, WebM made from a real clip) truncated, bit-flipped or with a valid header over a
garbage body, WAV and FLAC headers declaring gigabytes, zero-length audio, NaN/inf float
WAVs, 8 channels at 192 kHz (libsndfile and ffmpeg paths), odd sample rates, silence longer
than the synchronous limit, and, for the API only, malformed requests: wrong base64, JSON
of the wrong shape or types, bad S3 references, mismatched content types.

Every example must end in a 4xx with a code from ``asr.errors.stable_codes()`` or, where
the input is honestly valid audio (a header-valid PCM file with a noise body, a truncated
file whose decoder recovers), a 200 transcript: never a 5xx, never past the invocation's
deadline, and never a file left in the temporary directory. The examples tried and the
outcome tallies are written to bench/results/fuzz.json.

The examples are derandomized (a fixed seed per test). Hypothesis also mixes in constants
it finds in the project modules that are loaded, so the tallies reproduce exactly for
``pytest tests/test_fuzz.py`` and shift slightly when other test files run first.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from types import ModuleType
from typing import Any

import hypothesis
import numpy as np
import pytest
import soundfile
from asr.audio import decode_audio
from asr.errors import AsrError, stable_codes
from asr.ffmpeg import find_ffmpeg
from asr.limits import AudioLimits
from asr_service import model_cache
from asr_service.settings import Settings
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from local.server import build_event
from tests.conftest import REPO, speech_dir

RESULTS = REPO / "bench" / "results" / "fuzz.json"
SR = 16000
SYNC_LIMIT_S = 60.0
# Each invocation gets this much of Lambda's remaining time.
BUDGET_S = 20.0
SECRET_TOKEN = "Bearer fuzz-secret-7f3a9c1e"
API_EXAMPLES = 2000
DECODER_EXAMPLES = 2000
FUZZ_SETTINGS = settings(
    derandomize=True,  # a fixed seed: the same examples on every run
    database=None,
    deadline=None,  # time is asserted per call against the Lambda budget instead
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Every code an AsrError can carry (errors.py): a refusal must use one of these.
STABLE = stable_codes()


# --- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """A real clip in every format, and prepared hostile files."""

    files: dict[str, bytes]
    hostile: dict[str, bytes]


def _ffmpeg(*args: str) -> None:
    binary = find_ffmpeg()
    assert binary is not None
    subprocess.run(
        [str(binary), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=120,
    )


def _sf_bytes(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format=fmt, subtype=subtype)
    return out.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    if find_ffmpeg() is None:
        pytest.skip("no ffmpeg binary: run python scripts/place_ffmpeg.py")
    work = tmp_path_factory.mktemp("fuzz-corpus")
    clip = speech_dir() / "ru" / "golos_01.wav"  # 3.4 s, 16 kHz mono
    samples, rate = soundfile.read(clip, dtype="float32")
    files = {
        "wav": clip.read_bytes(),
        "flac": _sf_bytes(samples, rate, "FLAC"),
        "mp3": _sf_bytes(samples, rate, "MP3"),
        "ogg": _sf_bytes(samples, rate, "OGG", "VORBIS"),
    }
    for name, codec in (("m4a", ["-c:a", "aac", "-b:a", "64k"]), ("webm", ["-c:a", "libopus"])):
        _ffmpeg("-i", str(clip), *codec, str(work / f"clip.{name}"))
        files[name] = (work / f"clip.{name}").read_bytes()

    silence_s = SYNC_LIMIT_S + 5.0
    silence = np.zeros(int(silence_s * 8000), np.float32)
    wide = np.zeros((19_200, 8), np.float32)  # 0.1 s of 8 channels at 192 kHz
    hostile = {
        "silence.wav": _sf_bytes(silence, 8000, "WAV", "PCM_16"),
        "silence.flac": _sf_bytes(silence, 8000, "FLAC"),
        "8ch-192k.wav": _sf_bytes(wide, 192_000, "WAV", "FLOAT"),
        "8ch-192k.flac": _sf_bytes(wide, 192_000, "FLAC", "PCM_24"),
    }
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"anullsrc=r=48000:cl=mono:d={silence_s}",
        "-c:a",
        "libopus",
        str(work / "silence.webm"),
    )
    wav8 = work / "8ch.wav"
    wav8.write_bytes(hostile["8ch-192k.wav"])
    _ffmpeg("-i", str(wav8), "-c:a", "pcm_f32le", str(work / "8ch-192k.mka"))
    for name in ("silence.webm", "8ch-192k.mka"):
        hostile[name] = (work / name).read_bytes()
    return Corpus(files, hostile)


@dataclass(frozen=True)
class Payload:
    """Audio bytes and what they are; ``may_decode``: honest valid audio is possible."""

    kind: str
    data: bytes
    may_decode: bool


MAGICS = [
    b"RIFF\xff\xff\xff\xffWAVE",
    b"fLaC",
    b"OggS\x00\x02",
    b"ID3\x04\x00",
    b"\xff\xfb",
    b"\x00\x00\x00\x20ftypM4A ",
    b"\x1a\x45\xdf\xa3",
    b"FORM\x00\x00\x00\x00AIFF",
    b"#EXTM3U\n",
    b"ffconcat version 1.0\n",
    b"wvpk",
    b"MAC ",
]


def wav_header(channels: int, rate: int, bits: int, fmt_tag: int, data_size: int) -> bytes:
    block = channels * bits // 8
    # Forged headers overflow the derived fields; they are written as a forger would.
    fmt = struct.pack(
        "<HHIIHH", fmt_tag, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits
    )
    riff_size = min(0xFFFFFFFF, 4 + 8 + len(fmt) + 8 + data_size)
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", min(data_size, 0xFFFFFFFF))
    )


def flac_header(rate: int, channels: int, bits: int, total: int) -> bytes:
    """``fLaC`` + a last-block STREAMINFO declaring ``total`` samples (up to 2**36 - 1)."""
    packed = (rate << 44) | ((channels - 1) << 41) | ((bits - 1) << 36) | total
    info = struct.pack(">HH", 4096, 4096) + (0).to_bytes(3, "big") * 2
    info += packed.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info


RATES = st.one_of(
    st.sampled_from([8000, 16000, 22050, 44100, 48000, 96000, 192_000, 384_000]),
    st.integers(1, 400_000),
)


def payloads(corpus: Corpus) -> st.SearchStrategy[Payload]:
    formats = sorted(corpus.files)
    # Random bytes never decoded in 3,000 trials: a 200 would be a finding, so it fails.
    random_bytes = st.binary(max_size=4096).map(lambda b: Payload("random", b, False))
    behind_magic = st.builds(
        lambda m, b: Payload("magic+random", m + b, False),
        st.sampled_from(MAGICS),
        st.binary(max_size=4096),
    )

    @st.composite
    def truncated(draw: st.DrawFn) -> Payload:
        name = draw(st.sampled_from(formats))
        data = corpus.files[name]
        return Payload(f"truncated-{name}", data[: draw(st.integers(0, len(data) - 1))], True)

    @st.composite
    def garbage_body(draw: st.DrawFn) -> Payload:
        name = draw(st.sampled_from(formats))
        data = corpus.files[name]
        header = data[: draw(st.integers(4, 600))]
        body = draw(st.binary(min_size=1, max_size=8192))
        return Payload(f"garbage-body-{name}", header + body, True)

    @st.composite
    def bit_flipped(draw: st.DrawFn) -> Payload:
        name = draw(st.sampled_from(formats))
        data = bytearray(corpus.files[name])
        for _ in range(draw(st.integers(1, 16))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return Payload(f"bit-flipped-{name}", bytes(data), True)

    @st.composite
    def huge_wav(draw: st.DrawFn) -> Payload:
        """A WAV header declaring 1-4 GB of data over a few KB, plausible or forged."""
        declared = draw(st.integers(2**30, 2**32 - 1))
        body = draw(st.binary(max_size=4096))
        if draw(st.booleans()):
            channels, bits, tag = draw(st.integers(1, 2)), 16, 1
            rate = draw(st.sampled_from([8000, 16000, 44100, 48000]))
        else:
            channels = draw(st.integers(0, 65535) | st.integers(1, 8))
            bits = draw(st.sampled_from([0, 7, 8, 16, 24, 32, 64]))
            tag = draw(st.sampled_from([0, 1, 2, 3, 85, 0xFFFE]))
            rate = draw(RATES)
        header = wav_header(channels, rate, bits, tag, declared)
        return Payload("huge-wav", header + body, True)

    @st.composite
    def huge_flac(draw: st.DrawFn) -> Payload:
        rate = draw(st.integers(1, 655_350))
        header = flac_header(
            rate,
            draw(st.integers(1, 8)),
            draw(st.sampled_from([8, 16, 24])),
            draw(st.integers(2**31, 2**36 - 1)),
        )
        return Payload("huge-flac", header + draw(st.binary(max_size=4096)), False)

    @st.composite
    def non_finite(draw: st.DrawFn) -> Payload:
        frames = draw(st.integers(1600, 16000))
        samples = np.zeros(frames, np.float32)
        bad = draw(st.lists(st.integers(0, frames - 1), min_size=1, max_size=8))
        samples[bad] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        subtype = draw(st.sampled_from(["FLOAT", "DOUBLE"]))
        return Payload("non-finite-wav", _sf_bytes(samples, SR, "WAV", subtype), False)

    @st.composite
    def odd_rate(draw: st.DrawFn) -> Payload:
        rate = draw(RATES)
        channels = draw(st.integers(1, 10))
        samples = np.zeros((max(1, min(rate, 48_000) // 10), channels), np.int16)
        header = wav_header(channels, rate, 16, 1, samples.nbytes)
        # Hand-built (libsndfile refuses to write some of these rates): valid if in range.
        return Payload("odd-rate-wav", header + samples.tobytes(), True)

    zero_length = st.sampled_from(
        [
            Payload("zero-length", b"", False),
            Payload("zero-length", _sf_bytes(np.zeros(0, np.float32), SR, "WAV"), False),
            Payload("zero-length", wav_header(1, SR, 16, 1, 0), False),
        ]
    )
    hostile = st.sampled_from(sorted(corpus.hostile)).map(
        lambda name: Payload(f"hostile-{name}", corpus.hostile[name], False)
    )
    return st.one_of(
        random_bytes,
        behind_magic,
        truncated(),
        garbage_body(),
        bit_flipped(),
        huge_wav(),
        huge_flac(),
        non_finite(),
        odd_rate(),
        zero_length,
        hostile,
    )


@dataclass(frozen=True)
class Request:
    """An HTTP request to POST /transcribe; ``may_succeed`` as for payloads."""

    kind: str
    content_type: str
    body: bytes
    may_succeed: bool
    base64_mismatch: bool = False  # a text body flagged isBase64Encoded


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def requests(corpus: Corpus) -> st.SearchStrategy[Request]:
    audio = payloads(corpus)
    as_json = audio.map(
        lambda p: Request(
            f"json/{p.kind}",
            "application/json",
            json.dumps({"audio": base64.b64encode(p.data).decode()}).encode(),
            p.may_decode,
        )
    )
    as_raw = st.builds(
        lambda p, ctype: Request(f"raw/{p.kind}", ctype, p.data, p.may_decode),
        audio,
        st.sampled_from(["audio/wav", "application/octet-stream", "audio/mpeg", ""]),
    )

    @st.composite
    def wrong_base64(draw: st.DrawFn) -> Request:
        valid = base64.b64encode(corpus.files[draw(st.sampled_from(sorted(corpus.files)))])
        text = draw(
            st.one_of(
                st.text(min_size=1, max_size=64),
                st.just(valid.decode()[:-1]),  # cut padding
                st.just(valid.decode().replace("A", "-", 1)),  # urlsafe alphabet
                st.just("data:audio/wav;base64," + valid.decode()),
                st.just(valid.decode()[:100] + " \n" + valid.decode()[100:]),
            )
        )
        try:
            base64.b64decode(text, validate=True)
        except ValueError:
            return Request(
                "wrong-base64", "application/json", json.dumps({"audio": text}).encode(), False
            )
        return Request(
            "base64-of-text", "application/json", json.dumps({"audio": text}).encode(), True
        )

    wrong_types = st.one_of(
        st.builds(lambda v: {"audio": v}, JSON_VALUES.filter(lambda v: not isinstance(v, str))),
        st.builds(lambda v: {"s3": v}, JSON_VALUES),
        st.builds(lambda a, s: {"audio": a, "s3": s}, JSON_VALUES, JSON_VALUES),
        JSON_VALUES.filter(lambda v: not isinstance(v, dict)),
        st.dictionaries(
            st.text(max_size=8).filter(lambda k: k not in ("audio", "s3")), JSON_VALUES, max_size=3
        ),
    ).map(
        lambda doc: Request("json-wrong-shape", "application/json", json.dumps(doc).encode(), False)
    )
    s3_refs = st.builds(
        lambda b, k: Request(
            "s3-ref",
            "application/json",
            json.dumps({"s3": {"bucket": b, "key": k}}).encode(),
            False,
        ),
        st.text(max_size=70),
        st.text(max_size=40),
    )
    broken_json = st.binary(max_size=200).map(
        lambda b: Request("broken-json", "application/json", b"{" + b, False)
    )
    mismatch = st.text(min_size=1, max_size=200).map(
        lambda t: Request(
            "base64-flag-on-text", "audio/wav", t.encode(), False, base64_mismatch=True
        )
    )
    return st.one_of(as_json, as_raw, wrong_base64(), wrong_types, s3_refs, broken_json, mismatch)


# --- the function under test --------------------------------------------------------------


class BudgetContext:
    """A Lambda context whose remaining time runs down from ``BUDGET_S``."""

    aws_request_id = "fuzz-request"
    function_name = "asr"
    memory_limit_in_mb = 1769
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:asr"

    def __init__(self) -> None:
        self._deadline = time.monotonic() + BUDGET_S

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Tally:
    examples: int = 0
    seconds: float = 0.0
    slowest_s: float = 0.0
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, kind: str, outcome: str, seconds: float) -> None:
        self.examples += 1
        self.seconds += seconds
        self.slowest_s = max(self.slowest_s, seconds)
        self.outcomes[kind.rsplit("/", maxsplit=1)[-1]][outcome] += 1

    def to_json(self, max_examples: int) -> dict[str, Any]:
        totals: Counter[str] = Counter()
        for counts in self.outcomes.values():
            totals.update(counts)
        return {
            "examples": self.examples,
            "max_examples": max_examples,
            "seconds": round(self.seconds, 1),
            "slowest_call_s": round(self.slowest_s, 3),
            "outcomes": dict(sorted(totals.items())),
            "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(self.outcomes.items())},
        }


def write_results(section: str, tally: Tally, max_examples: int) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[section] = tally.to_json(max_examples)
    results["command"] = "pytest tests/test_fuzz.py"
    results["hypothesis"] = hypothesis.__version__
    results["budget_s"] = BUDGET_S
    results["sync_limit_s"] = SYNC_LIMIT_S
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def private_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("private-tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(tmp))
        patch.setattr(tempfile, "tempdir", str(tmp))
        yield tmp


class LogCapture(logging.Handler):
    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def api(tiny_bundle: Path, private_tmp: Path) -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("POWERTOOLS_METRICS_NAMESPACE", "test")
        patch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
        import handler as module

        patch.setattr(
            module,
            "settings",
            Settings(
                model_dir=tiny_bundle, output_bucket="out", max_sync_audio_seconds=SYNC_LIMIT_S
            ),
        )
        model_cache.reset()
        with mock_aws():
            from asr_service.s3_objects import s3_client

            s3_client.cache_clear()
            yield module
            s3_client.cache_clear()
        model_cache.reset()


@pytest.fixture
def logs(api: ModuleType) -> Iterator[LogCapture]:
    """Everything the handler's Powertools logger writes, formatted as it would be."""
    logger = api.logger
    capture = LogCapture(logger.registered_formatter)
    logger.addHandler(capture)
    try:
        yield capture
    finally:
        logger._logger.removeHandler(capture)


def call_api(api: ModuleType, request: Request) -> tuple[int, dict[str, Any], float]:
    headers = Message()
    if request.content_type:
        headers["content-type"] = request.content_type
    headers["authorization"] = SECRET_TOKEN
    event = build_event("POST", "/transcribe", headers, request.body, "198.51.100.7")
    if request.base64_mismatch:
        event["body"], event["isBase64Encoded"] = request.body.decode(), True
    started = time.monotonic()
    response = api.lambda_handler(event, BudgetContext())
    seconds = time.monotonic() - started
    return int(response["statusCode"]), json.loads(response["body"]), seconds


# --- the properties -----------------------------------------------------------------------


def check_refusal(status: int, body: dict[str, Any]) -> str:
    """A 4xx with a stable code and a message free of tracebacks; returns the code."""
    assert 400 <= status < 500, (status, body)
    code = body["error"]["code"]
    assert code in STABLE, code
    assert code != "deadline_exceeded"  # malformed input is refused, never left to time out
    message = body["error"]["message"]
    assert message and "Traceback" not in message and tempfile.gettempdir() not in message
    return str(code)


def test_fuzz_api_route(
    api: ModuleType, corpus: Corpus, private_tmp: Path, logs: LogCapture
) -> None:
    tally = Tally()

    @settings(FUZZ_SETTINGS, max_examples=API_EXAMPLES)
    @given(request=requests(corpus))
    def run(request: Request) -> None:
        status, body, seconds = call_api(api, request)
        assert seconds < BUDGET_S
        assert list(private_tmp.iterdir()) == []
        if status == 200:
            assert request.may_succeed, (request.kind, body)
            assert isinstance(body["text"], str) and body["duration"] > 0
            outcome = "200"
        else:
            outcome = f"{status} {check_refusal(status, body)}"
        tally.add(request.kind, outcome, seconds)

    run()
    write_results("api", tally, API_EXAMPLES)
    assert tally.examples >= API_EXAMPLES
    assert not any(SECRET_TOKEN.split()[1] in line for line in logs.lines)
    # Every malformed-request family was exercised, not just the audio ones.
    for kind in (
        "wrong-base64",
        "json-wrong-shape",
        "s3-ref",
        "broken-json",
        "hostile-8ch-192k.wav",
    ):
        assert kind in tally.outcomes, kind


def test_fuzz_decoder(corpus: Corpus, private_tmp: Path) -> None:
    tally = Tally()
    limits = AudioLimits(max_duration_s=SYNC_LIMIT_S)

    @settings(FUZZ_SETTINGS, max_examples=DECODER_EXAMPLES)
    @given(payload=payloads(corpus))
    def run(payload: Payload) -> None:
        started = time.monotonic()
        try:
            decoded = decode_audio(payload.data, SR, limits=limits)
        except AsrError as exc:
            assert exc.code in STABLE and 400 <= exc.http_status < 500, (exc.code, exc.message)
            outcome = f"{exc.http_status} {exc.code}"
        else:
            assert payload.may_decode, payload.kind
            assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
            assert np.isfinite(decoded.samples).all()
            assert 0 < decoded.duration_s <= SYNC_LIMIT_S + 0.1
            outcome = "decoded"
        seconds = time.monotonic() - started
        assert seconds < BUDGET_S
        assert list(private_tmp.iterdir()) == []
        tally.add(payload.kind, outcome, seconds)

    run()
    write_results("decoder", tally, DECODER_EXAMPLES)
    assert tally.examples >= DECODER_EXAMPLES


# --- no secrets in responses or logs ------------------------------------------------------


def test_no_request_body_or_authorization_in_responses_or_logs(
    api: ModuleType, corpus: Corpus, logs: LogCapture, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = "SECRETBODYMARKER"
    bodies = [
        Request(
            "json-bad-base64",
            "application/json",
            json.dumps({"audio": marker + "!!"}).encode(),
            False,
        ),
        Request("json-broken", "application/json", ('{"audio": "' + marker).encode(), False),
        Request(
            "json-wrong-type",
            "application/json",
            json.dumps({"audio": {"x": marker}}).encode(),
            False,
        ),
        Request("raw-text", "audio/wav", (marker + " not audio ").encode() * 50, False),
        Request(
            "wav-with-text-body",
            "audio/wav",
            wav_header(1, SR, 16, 1, 16 * 200) + marker.encode() * 200,
            True,
        ),
        Request(
            "m4a-garbage", "audio/mp4", corpus.files["m4a"][:64] + marker.encode() * 100, False
        ),
        Request(
            "ok",
            "application/json",
            json.dumps(
                {"audio": base64.b64encode(corpus.files["wav"]).decode(), "note": marker}
            ).encode(),
            True,
        ),
    ]
    for request in bodies:
        status, body, _ = call_api(api, request)
        assert status == 200 if request.may_succeed else 400 <= status < 500, (request.kind, body)
        shown = json.dumps(body)
        assert marker not in shown and "fuzz-secret" not in shown, (request.kind, shown)
    captured = capsys.readouterr()
    everything = "\n".join([*logs.lines, captured.out, captured.err])
    assert logs.lines, "the logger wrote nothing: the capture is broken"
    assert marker not in everything
    assert "fuzz-secret" not in everything
