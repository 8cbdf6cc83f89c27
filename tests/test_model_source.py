"""Bundles fetched from MODEL_S3_URI (moto S3): verified, retried, reused, never used corrupt."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from asr import bundle as bundle_module
from asr.bundle import load_bundle, write_checksums
from asr.bundle import sha256_of as real_sha256_of
from asr.checksum_stamp import STAMP_FILE
from asr.config import BundleConfig
from asr.errors import BundleError
from asr.transcribe import Transcriber
from asr_service import model_source
from asr_service.model_cache import ModelCache
from asr_service.model_source import (
    CHECKSUMS,
    MARKER,
    FetchedBundle,
    fetch_bundle,
    parse_s3_uri,
)
from asr_service.s3_objects import s3_client
from asr_service.settings import Settings
from botocore.exceptions import EndpointConnectionError
from botocore.response import StreamingBody
from moto import mock_aws

from tests.conftest import speech_dir

BUCKET = "models"
URI = f"s3://{BUCKET}/tiny/"


class S3Calls:
    """Counts the client's requests per (operation, key)."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        for operation in ("GetObject", "HeadObject"):
            client.meta.events.register(
                f"provide-client-params.s3.{operation}", self._recorder(operation)
            )

    def _recorder(self, operation: str) -> Any:
        def record(params: dict[str, Any], **_: Any) -> None:
            self.calls[(operation, params["Key"])] += 1

        return record

    def count(self, operation: str, key: str | None = None) -> int:
        return sum(n for (op, k), n in self.calls.items() if op == operation and key in {None, k})


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3_client.cache_clear()
        client = s3_client()  # the client the function itself would use
        client.create_bucket(Bucket=BUCKET)
        yield client
        s3_client.cache_clear()


def upload(client: Any, bundle: Path, prefix: str = "tiny/") -> dict[str, bytes]:
    # The bundle as exported, less the local stamp of its checksums (asr.checksum_stamp).
    files = {
        path.name: path.read_bytes()
        for path in sorted(bundle.iterdir())
        if path.is_file() and path.name != STAMP_FILE
    }
    for name, data in files.items():
        client.put_object(Bucket=BUCKET, Key=prefix + name, Body=data)
    return files


def fetch(cache: Path, delays: list[float] | None = None) -> FetchedBundle:
    return fetch_bundle(URI, cache, sleep=(delays if delays is not None else []).append)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.endswith(".part"))


def _recording_sha256(names: list[str]) -> Callable[[Path], str]:
    def sha256_of(path: Path) -> str:
        names.append(path.name)
        return real_sha256_of(path)

    return sha256_of


@pytest.fixture
def clip() -> Path:
    return speech_dir() / "ru" / "golos_04.wav"


def test_downloads_verifies_once_loads_and_transcribes(
    tiny_bundle: Path,
    s3: Any,
    tmp_path: Path,
    clip: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = upload(s3, tiny_bundle)
    settings = Settings(
        model_dir=tmp_path / "no-such-dir", model_s3_uri=URI, model_cache_dir=tmp_path / "cache"
    )
    hashed: dict[str, list[str]] = {"download": [], "load_bundle": []}
    for module, step in ((model_source, "download"), (bundle_module, "load_bundle")):
        monkeypatch.setattr(module, "sha256_of", _recording_sha256(hashed[step]))
    cache = ModelCache()

    transcriber = cache.get(settings)

    # Each file is hashed once, as it is downloaded; load_bundle only compares digests.
    assert sorted(hashed["download"]) == sorted(
        f"{name}.part" for name in files if name != CHECKSUMS
    )
    assert hashed["load_bundle"] == []
    bundle_dir = tmp_path / "cache" / "bundle"
    assert {p.name: p.read_bytes() for p in bundle_dir.iterdir()} == files
    assert transcriber.bundle.root == bundle_dir
    expected = Transcriber.from_dir(tiny_bundle).transcribe(clip).text
    assert transcriber.transcribe(clip).text == expected
    load = cache.last_load
    assert load is not None and load.source == "s3" and load.location == URI
    listed = {name: data for name, data in files.items() if name != CHECKSUMS}
    assert load.downloaded_bytes == sum(len(data) for data in listed.values())
    assert 0 < load.download_seconds <= load.load_seconds == cache.load_seconds
    assert cache.get(settings) is transcriber  # warm invocation: nothing fetched again


def test_a_second_init_reuses_the_cache_without_a_single_get(
    tiny_bundle: Path, s3: Any, tmp_path: Path
) -> None:
    upload(s3, tiny_bundle)
    settings = Settings(model_dir=tmp_path, model_s3_uri=URI, model_cache_dir=tmp_path / "cache")
    ModelCache().get(settings)
    calls = S3Calls(s3)

    again = ModelCache()  # a re-init in the same sandbox: /tmp survived, memory did not
    again.get(settings)

    assert calls.count("GetObject") == 0
    assert calls.calls == Counter({("HeadObject", "tiny/SHA256SUMS"): 1})
    assert again.last_load is not None and again.last_load.source == "s3_cached"
    assert again.last_load.downloaded_bytes == 0


def test_a_reupload_with_a_new_etag_but_the_same_checksums_is_reused(
    tiny_bundle: Path, s3: Any, tmp_path: Path
) -> None:
    upload(s3, tiny_bundle)
    cache = tmp_path / "cache"
    fetch(cache)
    marker = json.loads((cache / MARKER).read_text())
    (cache / MARKER).write_text(json.dumps({**marker, "checksums_etag": '"older"'}))
    calls = S3Calls(s3)

    fetched = fetch(cache)

    assert fetched.reused
    assert calls.count("GetObject") == 1 == calls.count("GetObject", "tiny/SHA256SUMS")
    assert json.loads((cache / MARKER).read_text())["checksums_etag"] == marker["checksums_etag"]


def _relabelled(bundle: Path, target: Path, model_id: str) -> Path:
    shutil.copytree(bundle, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "model_id": model_id}))
    write_checksums(target, BundleConfig.from_dict(config))
    return target


def test_a_changed_bundle_in_s3_replaces_the_cached_one(
    tiny_bundle: Path, s3: Any, tmp_path: Path
) -> None:
    upload(s3, tiny_bundle)
    cache = tmp_path / "cache"
    first = fetch(cache)
    (first.directory / "stale-extra-file").write_text("from the old copy")
    upload(s3, _relabelled(tiny_bundle, tmp_path / "v2", "tiny-v2"))

    second = fetch(cache)

    assert not second.reused and second.downloaded_bytes > 0
    assert load_bundle(second.directory).config.model_id == "tiny-v2"
    assert not (second.directory / "stale-extra-file").exists()
    assert fetch(cache).reused


def test_a_corrupt_object_is_retried_then_refused_and_never_loaded(
    tiny_bundle: Path, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = upload(s3, tiny_bundle)
    flipped = bytearray(files["model.onnx"])
    flipped[len(flipped) // 2] ^= 0xFF  # same size, one byte wrong
    s3.put_object(Bucket=BUCKET, Key="tiny/model.onnx", Body=bytes(flipped))
    calls = S3Calls(s3)
    delays: list[float] = []
    cache = tmp_path / "cache"

    with pytest.raises(model_source.ModelChecksumMismatch, match="model.onnx") as caught:
        fetch(cache, delays)

    assert caught.value.code == "model_checksum_mismatch"
    assert calls.count("GetObject", "tiny/model.onnx") == 3
    assert delays == [0.5, 1.0]
    assert not (cache / "bundle" / "model.onnx").exists()
    assert not (cache / MARKER).exists()
    assert leftovers(cache) == []

    # Through the model cache: the error surfaces with its code, nothing is kept loaded.
    monkeypatch.setattr(time, "sleep", delays.append)
    model = ModelCache()
    settings = Settings(model_dir=tiny_bundle, model_s3_uri=URI, model_cache_dir=cache)
    with pytest.raises(BundleError) as again:
        model.get(settings)
    assert again.value.code == "model_checksum_mismatch"
    assert model.last_load is None
    assert leftovers(cache) == []


def _truncate_first_get(client: Any, key: str, *, announce_full_length: bool) -> None:
    """The first GetObject of ``key`` delivers half its bytes: silently, or as a broken stream."""
    truncated: list[str] = []

    def mark(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["truncate"] = params["Key"] == key and not truncated

    def truncate(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if not context.get("truncate") or truncated:
            return
        truncated.append(key)
        data = parsed["Body"].read()
        half = data[: len(data) // 2]
        declared = len(data) if announce_full_length else len(half)
        parsed["Body"] = StreamingBody(io.BytesIO(half), declared)

    client.meta.events.register("provide-client-params.s3.GetObject", mark)
    client.meta.events.register("after-call.s3.GetObject", truncate)


@pytest.mark.parametrize("announce_full_length", [False, True], ids=["silent", "broken"])
def test_a_short_read_is_retried_and_succeeds(
    tiny_bundle: Path, s3: Any, tmp_path: Path, announce_full_length: bool
) -> None:
    files = upload(s3, tiny_bundle)
    _truncate_first_get(s3, "tiny/model.onnx", announce_full_length=announce_full_length)
    calls = S3Calls(s3)
    cache = tmp_path / "cache"

    fetched = fetch(cache)

    assert calls.count("GetObject", "tiny/model.onnx") == 2
    assert (fetched.directory / "model.onnx").read_bytes() == files["model.onnx"]
    assert fetched.digests["model.onnx"] == hashlib.sha256(files["model.onnx"]).hexdigest()
    assert leftovers(cache) == []


@pytest.mark.parametrize("failures", [1, 3])
def test_connection_failures_are_retried_then_reported(
    tiny_bundle: Path, s3: Any, tmp_path: Path, failures: int
) -> None:
    files = upload(s3, tiny_bundle)
    failed: list[str] = []

    def unreachable(params: dict[str, Any], **_: Any) -> None:
        if params["Key"] == "tiny/model.onnx" and len(failed) < failures:
            failed.append(params["Key"])
            raise EndpointConnectionError(endpoint_url="https://s3.amazonaws.com")

    s3.meta.events.register("provide-client-params.s3.GetObject", unreachable)
    delays: list[float] = []
    cache = tmp_path / "cache"

    if failures < 3:
        fetched = fetch(cache, delays)
        assert (fetched.directory / "model.onnx").read_bytes() == files["model.onnx"]
    else:
        with pytest.raises(model_source.ModelDownloadError, match="in 3 attempts") as caught:
            fetch(cache, delays)
        assert caught.value.code == "model_download_failed"
        assert not (cache / MARKER).exists()
    assert delays == [0.5, 1.0][:failures]
    assert leftovers(cache) == []


@pytest.mark.parametrize(
    "name",
    ["../x", "/etc/x", "a/b", "..", ".hidden", "x\x01y", "x y", "model.onnx.part", CHECKSUMS],
)
def test_unsafe_names_in_checksums_are_refused(s3: Any, tmp_path: Path, name: str) -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    s3.put_object(Bucket=BUCKET, Key="tiny/x", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="x", Body=b"x")
    s3.put_object(
        Bucket=BUCKET, Key="tiny/SHA256SUMS", Body=f"{digest}  x\n{digest}  {name}\n".encode()
    )
    calls = S3Calls(s3)
    work = tmp_path / "work"
    cache = work / "cache"

    with pytest.raises(BundleError, match="plain names") as caught:
        fetch(cache)

    assert caught.value.code == "bundle_file_name_invalid"
    assert calls.count("GetObject") == 1  # SHA256SUMS only
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == [
        "cache",
        "cache/.lock",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"not a checksum line\n", "malformed line"),
        (b"\xff\xfe\n", "not UTF-8"),
        (b"", "lists no files"),
        (((64 * "a" + "  x\n") * 2).encode(), "twice"),
    ],
)
def test_malformed_checksums_are_refused(
    s3: Any, tmp_path: Path, text: bytes, message: str
) -> None:
    s3.put_object(Bucket=BUCKET, Key="tiny/SHA256SUMS", Body=text)
    with pytest.raises(BundleError, match=message) as caught:
        fetch(tmp_path / "cache")
    assert caught.value.code == "bundle_invalid"


class _Usage(NamedTuple):
    total: int
    used: int
    free: int


def test_not_enough_space_fails_before_downloading(
    tiny_bundle: Path, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(s3, tiny_bundle)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(10**9, 0, 10_000))
    calls = S3Calls(s3)
    cache = tmp_path / "cache"

    with pytest.raises(model_source.ModelCacheNoSpace, match="only 10,000 are free") as caught:
        fetch(cache)

    assert caught.value.code == "model_cache_no_space"
    assert "ephemeral storage" in caught.value.message
    assert calls.count("GetObject") == 1  # SHA256SUMS only
    assert not any((cache / "bundle").iterdir())


def test_running_out_of_space_mid_download_is_not_retried(
    tiny_bundle: Path, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(s3, tiny_bundle)

    def full_disk(bucket: str, key: str, fileobj: Any, **_: Any) -> None:
        s3.get_object(Bucket=bucket, Key=key)
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write would

    monkeypatch.setattr(s3, "download_fileobj", full_disk)
    calls = S3Calls(s3)
    cache = tmp_path / "cache"

    with pytest.raises(model_source.ModelCacheNoSpace, match="ran out of space"):
        fetch(cache)

    assert calls.count("GetObject", "tiny/config.json") == 1
    assert leftovers(cache) == []
    assert not (cache / MARKER).exists()


@pytest.mark.parametrize("uploaded", ["nothing", "checksums only"])
def test_missing_objects_fail_at_once_with_a_clear_code(
    s3: Any, tmp_path: Path, uploaded: str
) -> None:
    if uploaded == "checksums only":  # model.onnx is listed but was never uploaded
        digest = hashlib.sha256(b"x").hexdigest()
        body = f"{digest}  model.onnx\n".encode()
        s3.put_object(Bucket=BUCKET, Key="tiny/SHA256SUMS", Body=body)
    delays: list[float] = []

    with pytest.raises(BundleError, match="does not exist or is not readable") as caught:
        fetch(tmp_path / "cache", delays)

    assert caught.value.code == "model_download_failed"
    assert delays == []  # a missing object is not retried
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://models/tiny/", "models", "tiny/"),
        ("s3://models/a/b", "models", "a/b/"),
        ("s3://my.models-1", "my.models-1", ""),
        (" s3://models/x/ ", "models", "x/"),
    ],
)
def test_s3_uris(uri: str, bucket: str, prefix: str) -> None:
    parsed = parse_s3_uri(uri)
    assert (parsed.bucket, parsed.prefix) == (bucket, prefix)
    assert parsed.key("config.json") == prefix + "config.json"


@pytest.mark.parametrize(
    "uri", ["models/tiny/", "https://models/tiny/", "s3://", "s3://UPPER/x/", "s3://ok/a\nb/"]
)
def test_bad_s3_uris_are_refused(uri: str) -> None:
    with pytest.raises(BundleError, match="MODEL_S3_URI") as caught:
        parse_s3_uri(uri)
    assert caught.value.code == "model_uri_invalid"


def test_settings_read_the_model_source_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MODEL_S3_URI", raising=False)
    monkeypatch.delenv("MODEL_CACHE_DIR", raising=False)
    defaults = Settings.from_env()
    assert defaults.model_s3_uri is None
    assert defaults.model_cache_dir == Path("/tmp/asr-model")
    monkeypatch.setenv("MODEL_S3_URI", URI)
    monkeypatch.setenv("MODEL_CACHE_DIR", "/tmp/other")
    configured = Settings.from_env()
    assert configured.model_s3_uri == URI
    assert configured.model_cache_dir == Path("/tmp/other")


def test_known_digests_are_compared_not_trusted(tiny_bundle: Path) -> None:
    wrong = {"model.onnx": "0" * 64}
    with pytest.raises(BundleError, match="model.onnx does not match its sha256"):
        load_bundle(tiny_bundle, known_digests=wrong)


def test_config_naming_a_file_outside_the_bundle_is_refused(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    config = json.loads((copy / "config.json").read_text())
    config["tokens"]["file"] = "../tokens.txt"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="names a file outside it"):
        load_bundle(copy)
