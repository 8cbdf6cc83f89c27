"""Download published checkpoints by name, verifying their checksums.

Machines that build this project cannot reach these hosts; the code path is exercised in
the tests against ``file://`` URLs. A download lands in ``<dest>/<file>.part`` and is
renamed only after its checksum matched, so an interrupted or corrupted download is never
mistaken for a checkpoint.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asr.config import ModelFamily

from .nemo_preprocessor import NemoStft


@dataclass(frozen=True)
class PublishedCheckpoint:
    name: str
    url: str
    filename: str
    size_bytes: int | None
    # sha256 of the downloaded file, when its publisher gives one (or we recorded it);
    # None means "unpublished": the user must pass --sha256 or --accept-unverified.
    sha256: str | None
    notes: str
    gunzip: bool = False
    # The STFT of the NeMo release that trained it (see export.nemo_config.frontend_from_nemo).
    nemo_stft: NemoStft = "legacy"
    # Which loader reads it: QuartzNet/Jasper, or NeMo Conformer/FastConformer (CTC head).
    family: ModelFamily = "quartznet"
    # MD5 of the downloaded file, for publishers that give only that (GigaAM): verified too.
    md5: str | None = None


# Published Russian checkpoints (see README "Where the models come from"). The NGC URLs are
# the ones NeMo's own list_available_models() names; NGC publishes no sha256 for them.
REGISTRY: dict[str, PublishedCheckpoint] = {
    "golos_quartznet15x5": PublishedCheckpoint(
        name="golos_quartznet15x5",
        url="https://us.openslr.org/resources/114/QuartzNet15x5_golos.nemo.gz",
        filename="QuartzNet15x5_golos.nemo",
        size_bytes=None,
        sha256=None,
        notes="Sber Golos QuartzNet15x5 (OpenSLR 114), 68 MB .nemo; Golos crowd WER 4.389",
        gunzip=True,
    ),
    "stt_ru_quartznet15x5": PublishedCheckpoint(
        name="stt_ru_quartznet15x5",
        url=(
            "https://api.ngc.nvidia.com/v2/models/nvidia/nemo/stt_ru_quartznet15x5/"
            "versions/1.0.0/files/stt_ru_quartznet15x5.nemo"
        ),
        filename="stt_ru_quartznet15x5.nemo",
        size_bytes=None,
        sha256=None,
        notes="NVIDIA NGC stt_ru_quartznet15x5 1.0.0; MCV dev WER 16.23",
    ),
    "stt_ru_conformer_ctc_large": PublishedCheckpoint(
        name="stt_ru_conformer_ctc_large",
        url=(
            "https://api.ngc.nvidia.com/v2/models/nvidia/nemo/stt_ru_conformer_ctc_large/"
            "versions/1.13.0/files/stt_ru_conformer_ctc_large.nemo"
        ),
        filename="stt_ru_conformer_ctc_large.nemo",
        size_bytes=None,
        sha256=None,
        notes=(
            "NVIDIA NGC stt_ru_conformer_ctc_large 1.13.0: Conformer-CTC large, SentencePiece "
            "BPE; Golos crowd WER 2.8, farfield 7.1, MCV10 test 4.3"
        ),
        family="conformer",
    ),
    "stt_ru_fastconformer_hybrid_large_pc": PublishedCheckpoint(
        name="stt_ru_fastconformer_hybrid_large_pc",
        url=(
            "https://api.ngc.nvidia.com/v2/models/nvidia/nemo/"
            "stt_ru_fastconformer_hybrid_large_pc/versions/1.21.0/files/"
            "stt_ru_fastconformer_hybrid_large_pc.nemo"
        ),
        filename="stt_ru_fastconformer_hybrid_large_pc.nemo",
        size_bytes=None,
        sha256=None,
        notes=(
            "NVIDIA NGC stt_ru_fastconformer_hybrid_large_pc 1.21.0 (CC-BY-4.0; also "
            "huggingface.co/nvidia/stt_ru_fastconformer_hybrid_large_pc): FastConformer hybrid "
            "RNNT-CTC with punctuation and case, exported through its CTC head; Golos crowd "
            "WER 1.9, CV12 test 5.3"
        ),
        family="conformer",
    ),
}


class DownloadError(RuntimeError):
    pass


def download(
    entry: PublishedCheckpoint,
    dest_dir: Path,
    *,
    sha256: str | None = None,
    accept_unverified: bool = False,
    progress: Callable[[int, int | None], None] = lambda done, total: None,
) -> Path:
    """Fetch ``entry`` into ``dest_dir`` and return the checkpoint path.

    The expected digest is ``sha256`` if given, else the registry's; a registry MD5 is
    checked as well. With no digest at all, the download is refused unless
    ``accept_unverified`` (the digest is then printed so the user can pin it).
    """
    expected = (sha256 or entry.sha256 or "").lower() or None
    expected_md5 = (entry.md5 or "").lower() or None
    if expected is None and expected_md5 is None and not accept_unverified:
        raise DownloadError(
            f"{entry.name} has no published sha256; pass --sha256 <hex> (from a copy you "
            "trust) or --accept-unverified to record the digest of this download"
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / entry.filename
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(entry.url, timeout=60) as response:
            total = _content_length(response.headers.get("Content-Length"))
            done = 0
            with part.open("wb") as out:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    md5.update(chunk)
                    done += len(chunk)
                    progress(done, total)
        if total is not None and done != total:
            raise DownloadError(f"{entry.name}: got {done} of {total} bytes")
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            raise DownloadError(
                f"{entry.name}: sha256 {actual} does not match the expected {expected}"
            )
        if expected_md5 is not None and md5.hexdigest() != expected_md5:
            raise DownloadError(
                f"{entry.name}: md5 {md5.hexdigest()} does not match the published {expected_md5}"
            )
        if entry.gunzip:
            _gunzip(part, target)
            part.unlink()
        else:
            part.replace(target)
    except OSError as exc:
        raise DownloadError(f"{entry.name}: download from {entry.url} failed: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)
    return target


def _gunzip(source: Path, target: Path) -> None:
    staging = target.with_name(target.name + ".unpacking")
    try:
        with gzip.open(source, "rb") as packed, staging.open("wb") as out:
            shutil.copyfileobj(packed, out, 1 << 20)
        staging.replace(target)
    except (OSError, EOFError) as exc:
        raise DownloadError(f"{source.name} is not a valid gzip file: {exc}") from exc
    finally:
        staging.unlink(missing_ok=True)


def _content_length(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None
