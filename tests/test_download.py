from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from export.download import REGISTRY, DownloadError, PublishedCheckpoint, download


def entry_for(path: Path, sha256: str | None, *, gunzip: bool = False) -> PublishedCheckpoint:
    return PublishedCheckpoint(
        name="local",
        url=path.resolve().as_uri(),
        filename="model.nemo",
        size_bytes=None,
        sha256=sha256,
        notes="test",
        gunzip=gunzip,
    )


def test_downloads_and_verifies_a_file_url(tmp_path: Path, tiny_nemo: Path) -> None:
    digest = hashlib.sha256(tiny_nemo.read_bytes()).hexdigest()
    seen: list[int] = []
    path = download(
        entry_for(tiny_nemo, digest), tmp_path / "dl", progress=lambda d, t: seen.append(d)
    )
    assert path.read_bytes() == tiny_nemo.read_bytes()
    assert seen[-1] == tiny_nemo.stat().st_size
    assert not list((tmp_path / "dl").glob("*.part"))


def test_gzipped_download_is_unpacked_after_its_checksum(tmp_path: Path, tiny_nemo: Path) -> None:
    packed = tmp_path / "model.nemo.gz"
    packed.write_bytes(gzip.compress(tiny_nemo.read_bytes()))
    digest = hashlib.sha256(packed.read_bytes()).hexdigest()
    path = download(entry_for(packed, digest, gunzip=True), tmp_path / "dl")
    assert path.read_bytes() == tiny_nemo.read_bytes()


def test_checksum_mismatch_leaves_nothing(tmp_path: Path, tiny_nemo: Path) -> None:
    with pytest.raises(DownloadError, match="does not match the expected"):
        download(entry_for(tiny_nemo, "0" * 64), tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []


def test_unpublished_checksum_needs_an_explicit_choice(tmp_path: Path, tiny_nemo: Path) -> None:
    with pytest.raises(DownloadError, match="no published sha256"):
        download(entry_for(tiny_nemo, None), tmp_path / "dl")
    digest = hashlib.sha256(tiny_nemo.read_bytes()).hexdigest()
    assert download(entry_for(tiny_nemo, None), tmp_path / "a", sha256=digest).is_file()
    assert download(entry_for(tiny_nemo, None), tmp_path / "b", accept_unverified=True).is_file()


def test_unreachable_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="download from"):
        download(entry_for(tmp_path / "absent.nemo", None), tmp_path / "dl", accept_unverified=True)


def test_registry_names_the_published_russian_quartznets() -> None:
    assert {"golos_quartznet15x5", "stt_ru_quartznet15x5"} <= REGISTRY.keys()
    for entry in REGISTRY.values():
        assert entry.url.startswith("https://")
