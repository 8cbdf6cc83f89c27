"""Model bundles too big for the zip: fetched from S3 into /tmp at init, verified, reused.

``MODEL_S3_URI`` names a bundle directory as ``python -m export`` writes it and
``aws s3 sync bundles/x s3://bucket/models/x/`` uploads it. The cache directory
(``MODEL_CACHE_DIR``, default /tmp/asr-model) holds ``bundle/`` (the files),
``verified.json`` (the marker) and ``.lock``; nothing else in it is touched.

1. HEAD ``SHA256SUMS``. If the marker names this URI and that object's ETag, and every
   cached file has its recorded size, the cached copy is used: no GET at all.
2. GET ``SHA256SUMS`` (small). Its file names are untrusted data: plain names only. If its
   sha256 is the marker's (re-uploaded unchanged), the cached copy is used.
3. Otherwise the marker and the old copy are deleted, the sizes read (HEAD), free space
   checked, and each file downloaded into ``<name>.part`` (ranged GETs in parallel for
   big files) and hashed once. Size and sha256 must match before the part is renamed; a
   mismatch or a broken stream deletes it and retries with backoff.
4. The marker is written last, so a sandbox that dies mid-download leaves none and the
   next init starts over. Files under a marker are trusted without being hashed again:
   /tmp belongs to this sandbox, and they were verified when written.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asr.bundle import parse_checksums, sha256_of
from asr.errors import BundleError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer import exceptions as s3transfer_errors

from .s3_objects import MISSING_CODES, s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CHECKSUMS = "SHA256SUMS"
BUNDLE_SUBDIR = "bundle"
MARKER = "verified.json"
LOCK = ".lock"
PART_SUFFIX = ".part"
MAX_CHECKSUMS_BYTES = 64 * 1024
MAX_LISTED_FILES = 64
# A plain file name: no separators, no leading dot (so no "..", no hidden files), no
# control characters or spaces, not a download's own ".part".
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Big files arrive as 8 MiB ranged GETs, 8 at a time, written in place (a seekable file:
# s3transfer's retries of a broken range then rewrite that range and nothing else).
DEFAULT_TRANSFER = TransferConfig(
    multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024, max_concurrency=8
)
# Failures of one attempt that another may not have (s3transfer has retried ranges already).
# S3DownloadFailedError exists from s3transfer 0.13 (boto3 1.38.27); the Lambda runtime's
# boto3 may be older, so it is looked up rather than imported.
_TRANSIENT: tuple[type[Exception], ...] = (
    BotoCoreError,
    s3transfer_errors.RetriesExceededError,
    *(
        [s3transfer_errors.S3DownloadFailedError]
        if hasattr(s3transfer_errors, "S3DownloadFailedError")
        else []
    ),
)


class ModelDownloadError(BundleError):
    """S3 refused or kept failing to deliver a bundle file."""

    code = "model_download_failed"


class ModelChecksumMismatch(BundleError):
    """A downloaded file kept arriving with the wrong size or sha256."""

    code = "model_checksum_mismatch"


class ModelCacheNoSpace(BundleError):
    """The cache directory's file system cannot hold the bundle."""

    code = "model_cache_no_space"


class ModelCacheUnwritable(BundleError):
    """The cache directory cannot be created or written (not ENOSPC: that is no_space)."""

    code = "model_cache_unwritable"


@dataclass(frozen=True)
class S3Prefix:
    bucket: str
    prefix: str  # "" or ending in "/"

    def key(self, name: str) -> str:
        return self.prefix + name

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_s3_uri(uri: str) -> S3Prefix:
    """``s3://bucket/prefix/`` (the trailing slash is optional) → S3Prefix."""
    bucket, _, prefix = uri.strip().removeprefix("s3://").partition("/")
    if (
        not uri.strip().startswith("s3://")
        or not _BUCKET_NAME.fullmatch(bucket)
        or any(ord(char) < 0x20 or char == "\x7f" for char in prefix)
    ):
        raise BundleError(
            f"MODEL_S3_URI {uri!r} is not s3://<bucket>/<prefix>/ of a model bundle",
            code="model_uri_invalid",
        )
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return S3Prefix(bucket, prefix)


@dataclass(frozen=True)
class FetchedBundle:
    directory: Path
    # sha256 of every file in ``directory`` (name → digest), verified: load_bundle(...,
    # known_digests=digests) need not read them again.
    digests: dict[str, str]
    reused: bool
    downloaded_bytes: int
    seconds: float


@dataclass(frozen=True)
class _Marker:
    source: str
    checksums_etag: str
    checksums_sha256: str
    sizes: dict[str, int]

    def to_json(self) -> str:
        return json.dumps(
            {
                "source": self.source,
                "checksums_etag": self.checksums_etag,
                "checksums_sha256": self.checksums_sha256,
                "sizes": self.sizes,
            },
            indent=2,
        )

    @classmethod
    def read(cls, path: Path) -> _Marker | None:
        """The marker, or None if absent or unreadable (then the cache is rebuilt)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            sizes = {str(name): int(size) for name, size in data["sizes"].items()}
            return cls(
                str(data["source"]),
                str(data["checksums_etag"]),
                str(data["checksums_sha256"]),
                sizes,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


class _DownloadAttemptFailed(Exception):
    def __init__(self, problem: str, *, corrupt: bool) -> None:
        super().__init__(problem)
        self.problem = problem
        self.corrupt = corrupt  # wrong bytes (vs. no bytes): decides the final error code


def fetch_bundle(
    uri: str,
    cache_dir: Path,
    *,
    client: S3Client | None = None,
    attempts: int = 3,
    backoff_seconds: float = 0.5,
    sleep: Callable[[float], None] | None = None,
    transfer_config: TransferConfig = DEFAULT_TRANSFER,
) -> FetchedBundle:
    """Make ``cache_dir/bundle`` a verified copy of the bundle at ``uri`` and describe it."""
    fetcher = _Fetcher(
        parse_s3_uri(uri),
        Path(cache_dir),
        client=client if client is not None else s3_client(),
        attempts=max(1, attempts),
        backoff_seconds=backoff_seconds,
        sleep=sleep or time.sleep,
        transfer_config=transfer_config,
    )
    return fetcher.fetch()


class _Fetcher:
    def __init__(
        self,
        source: S3Prefix,
        cache_dir: Path,
        *,
        client: S3Client,
        attempts: int,
        backoff_seconds: float,
        sleep: Callable[[float], None],
        transfer_config: TransferConfig,
    ) -> None:
        self.source = source
        self.cache_dir = cache_dir
        self.bundle_dir = cache_dir / BUNDLE_SUBDIR
        self.marker_path = cache_dir / MARKER
        self.client = client
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep
        self.transfer_config = transfer_config
        self.started = time.perf_counter()

    def fetch(self) -> FetchedBundle:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelCacheUnwritable(
                f"cannot create the model cache {self.cache_dir}: {exc.strerror}"
            ) from exc
        with _exclusive_lock(self.cache_dir / LOCK):
            return self._fetch_locked()

    def _fetch_locked(self) -> FetchedBundle:
        marker = _Marker.read(self.marker_path)
        if marker is not None and marker.source != str(self.source):
            marker = None
        head = self._head(CHECKSUMS)
        if marker is not None and marker.checksums_etag == head.get("ETag"):
            digests = self._cached_digests(marker)
            if digests is not None:
                return self._result(digests, reused=True, downloaded=0)

        checksums, etag = self._get_checksums(int(head.get("ContentLength", 0)))
        checksums_sha256 = hashlib.sha256(checksums).hexdigest()
        listed = _listed_files(checksums, str(self.source))
        if marker is not None and marker.checksums_sha256 == checksums_sha256:
            digests = self._cached_digests(marker)
            if digests is not None:  # re-uploaded unchanged: remember the new ETag
                self._write_marker(_Marker(marker.source, etag, checksums_sha256, marker.sizes))
                return self._result(digests, reused=True, downloaded=0)

        sizes = self._download_all(checksums, listed)
        self._write_marker(_Marker(str(self.source), etag, checksums_sha256, sizes))
        return self._result(listed, reused=False, downloaded=sum(sizes.values()))

    def _result(self, digests: dict[str, str], *, reused: bool, downloaded: int) -> FetchedBundle:
        seconds = time.perf_counter() - self.started
        return FetchedBundle(self.bundle_dir, digests, reused, downloaded, seconds)

    # --- the cached copy

    def _cached_digests(self, marker: _Marker) -> dict[str, str] | None:
        """The cached files' digests if the copy is exactly what the marker recorded."""
        try:
            checksums = (self.bundle_dir / CHECKSUMS).read_bytes()
            if hashlib.sha256(checksums).hexdigest() != marker.checksums_sha256:
                return None
            listed = parse_checksums(checksums.decode("utf-8"))
            if set(listed) != set(marker.sizes):
                return None
            for name, size in marker.sizes.items():
                if (self.bundle_dir / name).stat().st_size != size:
                    return None
        except (OSError, UnicodeDecodeError, BundleError):
            return None
        return listed

    def _write_marker(self, marker: _Marker) -> None:
        part = self.marker_path.with_name(MARKER + PART_SUFFIX)
        try:
            part.write_text(marker.to_json(), encoding="utf-8")
            part.replace(self.marker_path)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise _cache_error(exc, self.cache_dir) from exc

    # --- downloading

    def _download_all(self, checksums: bytes, listed: Mapping[str, str]) -> dict[str, int]:
        try:
            self.marker_path.unlink(missing_ok=True)
            if self.bundle_dir.exists():
                shutil.rmtree(self.bundle_dir)
            self.bundle_dir.mkdir()
        except OSError as exc:
            raise _cache_error(exc, self.cache_dir) from exc
        sizes = {name: int(self._head(name).get("ContentLength", 0)) for name in listed}
        needed = sum(sizes.values()) + len(checksums)
        free = shutil.disk_usage(self.cache_dir).free
        if free < needed:
            raise ModelCacheNoSpace(
                f"the model bundle at {self.source} needs {needed:,} bytes but only {free:,} "
                f"are free in {self.cache_dir}: raise the function's ephemeral storage (/tmp, "
                "up to 10,240 MB) or point MODEL_CACHE_DIR at a larger file system"
            )
        self._write_file(CHECKSUMS, checksums)
        for name, digest in listed.items():
            self._download_with_retries(name, digest, sizes[name])
        return sizes

    def _write_file(self, name: str, data: bytes) -> None:
        part = self.bundle_dir / (name + PART_SUFFIX)
        try:
            part.write_bytes(data)
            part.replace(self.bundle_dir / name)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise _cache_error(exc, self.cache_dir) from exc

    def _download_with_retries(self, name: str, digest: str, size: int) -> None:
        failure = _DownloadAttemptFailed("not attempted", corrupt=False)
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                self.sleep(self.backoff_seconds * 2 ** (attempt - 2))
            try:
                self._download_once(name, digest, size)
                return
            except _DownloadAttemptFailed as exc:
                failure = exc
        where = f"{self.source}{name}"
        if failure.corrupt:
            raise ModelChecksumMismatch(
                f"{where} failed verification {self.attempts} times ({failure.problem}); the "
                "object in S3 does not match SHA256SUMS: re-upload the whole bundle"
            )
        raise ModelDownloadError(
            f"{where} could not be downloaded in {self.attempts} attempts: {failure.problem}"
        )

    def _download_once(self, name: str, digest: str, size: int) -> None:
        part = self.bundle_dir / (name + PART_SUFFIX)
        try:
            with part.open("wb") as handle:
                self.client.download_fileobj(
                    self.source.bucket,
                    self.source.key(name),
                    handle,
                    Config=self.transfer_config,
                )
            received = part.stat().st_size
            if received != size:
                raise _DownloadAttemptFailed(
                    f"received {received:,} of {size:,} bytes", corrupt=True
                )
            # The only read of these bytes: load_bundle gets the digest, not the file.
            if sha256_of(part) != digest:
                raise _DownloadAttemptFailed("sha256 differs from SHA256SUMS", corrupt=True)
            part.replace(self.bundle_dir / name)
        except ClientError as exc:
            self._raise_if_missing(exc, name)
            raise _DownloadAttemptFailed(f"S3 error {_error_code(exc)}", corrupt=False) from exc
        except OSError as exc:
            if exc.errno in {errno.ENOSPC, errno.EDQUOT}:
                raise _cache_error(exc, self.cache_dir) from exc
            raise _DownloadAttemptFailed(f"{type(exc).__name__}: {exc}", corrupt=False) from exc
        except _TRANSIENT as exc:
            raise _DownloadAttemptFailed(f"{type(exc).__name__}: {exc}", corrupt=False) from exc
        finally:
            part.unlink(missing_ok=True)

    # --- small requests (botocore retries transient failures of these itself)

    def _head(self, name: str) -> Mapping[str, Any]:
        try:
            return self.client.head_object(Bucket=self.source.bucket, Key=self.source.key(name))
        except ClientError as exc:
            self._raise_if_missing(exc, name)
            raise ModelDownloadError(
                f"cannot read {self.source}{name}: S3 error {_error_code(exc)}"
            ) from exc
        except BotoCoreError as exc:
            raise ModelDownloadError(f"cannot read {self.source}{name}: {exc}") from exc

    def _get_checksums(self, size: int) -> tuple[bytes, str]:
        where = f"{self.source}{CHECKSUMS}"
        if size > MAX_CHECKSUMS_BYTES:
            raise BundleError(f"{where} is {size:,} bytes; a bundle's is a few hundred")
        try:
            response = self.client.get_object(
                Bucket=self.source.bucket, Key=self.source.key(CHECKSUMS)
            )
            data = response["Body"].read(MAX_CHECKSUMS_BYTES + 1)
        except ClientError as exc:
            self._raise_if_missing(exc, CHECKSUMS)
            raise ModelDownloadError(f"cannot read {where}: S3 error {_error_code(exc)}") from exc
        except BotoCoreError as exc:
            raise ModelDownloadError(f"cannot read {where}: {exc}") from exc
        if len(data) > MAX_CHECKSUMS_BYTES:
            raise BundleError(f"{where} is over {MAX_CHECKSUMS_BYTES:,} bytes")
        return data, str(response.get("ETag", ""))

    def _raise_if_missing(self, exc: ClientError, name: str) -> None:
        if _error_code(exc) in MISSING_CODES:
            raise ModelDownloadError(
                f"{self.source}{name} does not exist or is not readable: check MODEL_S3_URI "
                "and that the function may s3:GetObject under it"
            ) from exc


def _listed_files(checksums: bytes, source: str) -> dict[str, str]:
    """SHA256SUMS → {name: sha256}, refusing every name that is not a plain file name."""
    where = f"{source}{CHECKSUMS}"
    try:
        listed = parse_checksums(checksums.decode("utf-8"), where)
    except UnicodeDecodeError as exc:
        raise BundleError(f"{where} is not UTF-8 text") from exc
    if not listed:
        raise BundleError(f"{where} lists no files")
    if len(listed) > MAX_LISTED_FILES:
        raise BundleError(f"{where} lists {len(listed)} files; at most {MAX_LISTED_FILES}")
    for name in listed:
        if not _PLAIN_NAME.fullmatch(name) or name.endswith(PART_SUFFIX) or name == CHECKSUMS:
            raise BundleError(
                f"{where} lists {name!r}: bundle files must be plain names "
                "(letters, digits, '.', '_', '-'; no paths)",
                code="bundle_file_name_invalid",
            )
    return listed


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


def _cache_error(exc: OSError, cache_dir: Path) -> BundleError:
    if exc.errno in {errno.ENOSPC, errno.EDQUOT}:
        return ModelCacheNoSpace(
            f"{cache_dir} ran out of space while writing the model bundle: raise the "
            "function's ephemeral storage (/tmp)"
        )
    return ModelCacheUnwritable(f"cannot write the model cache {cache_dir}: {exc.strerror}")


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """One fetch per cache directory at a time, across threads and processes."""
    try:
        handle = path.open("a")
    except OSError as exc:
        raise _cache_error(exc, path.parent) from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
