"""Load on the API Gateway emulator: a mix of requests fired at once, checked and timed.

The emulator runs in its own process (``python -m local serve``), so its memory is its own:
``EmulatorProcess.memory()`` reads the kernel's resident-set figures for it. Requests are
raw WAV and FLAC bodies, base64 audio in JSON, references to objects in the fake S3, and
a few invalid ones that must get their stable 4xx error code. ``fire`` sends them from as
many client threads as there are requests, all at once; ``problems`` checks each answer:
a transcript must equal the one a single request for the same clip got.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import soundfile as sf

from . import REPO_ROOT
from .runtime import DEFAULT_INPUT_BUCKET

STOP_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 120.0
UPLOAD_PREFIX = "uploads/"


@dataclass(frozen=True)
class Memory:
    """Resident set of a process, in MB: now, and the most it has ever been."""

    rss_mb: float
    peak_mb: float


def process_memory(pid: int) -> Memory:
    """From /proc/PID/status: VmRSS (resident now) and VmHWM (its high-water mark)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            fields[name] = int(value.split()[0]) / 1024  # kB
    return Memory(rss_mb=fields["VmRSS"], peak_mb=fields["VmHWM"])


class EmulatorProcess:
    """``python -m local serve`` on a free loopback port, stopped on exit."""

    def __init__(
        self, bundle: Path, *, concurrency: int, uploads: Sequence[Path] = (), threads: int = 0
    ) -> None:
        self.command = [
            sys.executable, "-m", "local", "serve", "--port", "0",
            "--bundle", str(bundle), "--concurrency", str(concurrency),
        ]  # fmt: skip
        for path in uploads:
            self.command += ["--upload", str(path)]
        self.env = dict(os.environ)
        if threads:
            self.env["ASR_THREADS"] = str(threads)
        self.url = ""
        self._process: subprocess.Popen[str] | None = None
        # Its access log and warnings go to a file (a pipe nobody reads would fill and block
        # the server), kept as text once it stops.
        self._stderr: IO[str] | None = None
        self._stderr_text = ""

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def memory(self) -> Memory:
        return process_memory(self.pid)

    def __enter__(self) -> EmulatorProcess:
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self._process = subprocess.Popen(
            self.command,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert self._process.stdout is not None
        seen: list[str] = []
        # The server announces its address once the model is loaded and it is listening; it
        # ends its output (EOF) if it exits instead.
        for line in self._process.stdout:
            seen.append(line)
            match = re.search(r"emulator on (http://\S+)", line)
            if match:
                self.url = match.group(1)
                return self
        self.__exit__(None, None, None)
        raise RuntimeError(f"the emulator did not start:\n{''.join(seen)}{self.stderr()[-4000:]}")

    def stderr(self) -> str:
        """What the emulator has written to stderr so far."""
        if self._stderr is not None:
            self._stderr.seek(0)
            self._stderr_text = self._stderr.read()
        return self._stderr_text

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # serve's clean stop (KeyboardInterrupt)
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self.stderr()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


@dataclass(frozen=True)
class Clip:
    path: Path
    seconds: float

    @classmethod
    def of(cls, path: Path) -> Clip:
        return cls(path, float(sf.info(str(path)).duration))

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Request:
    """What to send, and what must come back: ``clip``'s transcript, or ``error_code``."""

    label: str
    method: str
    path: str
    body: bytes = b""
    content_type: str | None = None
    clip: Clip | None = None
    status: int = 200
    error_code: str | None = None


@dataclass(frozen=True)
class Outcome:
    request: Request
    status: int  # 0: no HTTP answer at all
    body: Any
    seconds: float
    failure: str | None = None  # why there was no HTTP answer


@dataclass(frozen=True)
class Round:
    outcomes: list[Outcome]
    wall_seconds: float
    memory_after: Memory
    problems: list[str] = field(default_factory=list)

    @property
    def audio_seconds(self) -> float:
        return sum(o.request.clip.seconds for o in self.outcomes if o.request.clip is not None)


def wav_request(clip: Clip) -> Request:
    return Request(
        f"wav {clip.name}", "POST", "/transcribe", clip.path.read_bytes(), "audio/wav", clip
    )


def flac_request(clip: Clip) -> Request:
    samples, rate = sf.read(str(clip.path), dtype="int16")
    encoded = io.BytesIO()
    sf.write(encoded, samples, rate, format="FLAC", subtype="PCM_16")
    return Request(
        f"flac {clip.name}", "POST", "/transcribe", encoded.getvalue(), "audio/flac", clip
    )


def base64_json_request(clip: Clip) -> Request:
    document = {"audio": base64.b64encode(clip.path.read_bytes()).decode("ascii")}
    body = json.dumps(document).encode("utf-8")
    return Request(f"json {clip.name}", "POST", "/transcribe", body, "application/json", clip)


def s3_request(clip: Clip) -> Request:
    """Needs the clip uploaded to the emulator's fake S3 (``EmulatorProcess(uploads=...)``)."""
    ref = {"s3": {"bucket": DEFAULT_INPUT_BUCKET, "key": UPLOAD_PREFIX + clip.name}}
    body = json.dumps(ref).encode("utf-8")
    return Request(f"s3 {clip.name}", "POST", "/transcribe", body, "application/json", clip)


def invalid_requests() -> list[Request]:
    """One of each kind of bad request; the status and code each must get."""
    missing = {"s3": {"bucket": DEFAULT_INPUT_BUCKET, "key": UPLOAD_PREFIX + "missing.wav"}}
    json_type = "application/json"
    return [
        Request("not audio", "POST", "/transcribe", b"RIFF, but not audio", "audio/wav",
                status=422, error_code="audio_undecodable"),
        Request("bad base64", "POST", "/transcribe", b'{"audio": "@@not base64@@"}', json_type,
                status=400, error_code="invalid_base64"),
        Request("bad json", "POST", "/transcribe", b'{"audio": ', json_type,
                status=400, error_code="invalid_json"),
        Request("empty body", "POST", "/transcribe", b"", "audio/wav",
                status=400, error_code="empty_body"),
        Request("missing s3 object", "POST", "/transcribe", json.dumps(missing).encode(), json_type,
                status=404, error_code="s3_object_not_found"),
        Request("unknown route", "GET", "/nowhere", status=404, error_code="not_found"),
    ]  # fmt: skip


def request_mix(clips: Sequence[Clip], count: int, *, invalid_every: int = 10) -> list[Request]:
    """``count`` requests: clips cycled through the four body kinds, and every
    ``invalid_every``-th request one of the invalid ones."""
    kinds = (wav_request, flac_request, base64_json_request, s3_request)
    valid = [kind(clip) for clip in clips for kind in kinds]
    invalid = invalid_requests()
    mix: list[Request] = []
    for index in range(count):
        if invalid_every and index % invalid_every == invalid_every - 1:
            mix.append(invalid[(index // invalid_every) % len(invalid)])
        else:
            mix.append(valid[(index - index // invalid_every) % len(valid)])
    return mix


def send(url: str, request: Request) -> Outcome:
    data = request.body if request.method != "GET" else None
    http = urllib.request.Request(url + request.path, data=data, method=request.method)
    if request.content_type:
        http.add_header("Content-Type", request.content_type)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(http, timeout=REQUEST_TIMEOUT_S) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except OSError as error:  # refused, reset, timed out: no HTTP answer
        return Outcome(request, 0, None, time.perf_counter() - started, repr(error))
    seconds = time.perf_counter() - started
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return Outcome(request, status, body, seconds)


def fire(url: str, requests: Sequence[Request]) -> tuple[list[Outcome], float]:
    """Every request at once, each from its own client thread; the answers in request order
    and the wall time from the first send to the last answer."""
    with ThreadPoolExecutor(len(requests), thread_name_prefix="client") as clients:
        started = time.perf_counter()
        outcomes = list(clients.map(lambda request: send(url, request), requests))
        return outcomes, time.perf_counter() - started


def reference_transcripts(url: str, clips: Sequence[Clip]) -> dict[str, str]:
    """Each clip's transcript from a request sent alone."""
    references = {}
    for clip in clips:
        outcome = send(url, wav_request(clip))
        if outcome.status != 200:
            raise RuntimeError(f"{clip.name}: single request got {outcome.status} {outcome.body}")
        references[clip.name] = outcome.body["text"]
    return references


def problems(outcomes: Sequence[Outcome], references: dict[str, str]) -> list[str]:
    """Every answer that is not the expected one, described."""
    found = []
    for number, outcome in enumerate(outcomes):
        request, body = outcome.request, outcome.body
        where = f"#{number} {request.label}"
        if outcome.failure is not None:
            found.append(f"{where}: no answer ({outcome.failure})")
        elif outcome.status != request.status:
            found.append(f"{where}: status {outcome.status}, expected {request.status}: {body}")
        elif request.clip is not None:
            expected = references[request.clip.name]
            if not isinstance(body, dict) or body.get("text") != expected:
                found.append(f"{where}: {body!r} is not the single-request text {expected!r}")
        elif not isinstance(body, dict) or body.get("error", {}).get("code") != request.error_code:
            found.append(f"{where}: expected error code {request.error_code}, got {body!r}")
    return found


def run_round(
    emulator: EmulatorProcess, requests: Sequence[Request], references: dict[str, str]
) -> Round:
    outcomes, wall = fire(emulator.url, requests)
    return Round(outcomes, wall, emulator.memory(), problems(outcomes, references))


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in (0, 1])."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * fraction)) - 1]
