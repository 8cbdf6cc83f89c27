"""GigaAM's published checkpoints: names, upstream MD5s, and the verified download.

Upstream (gigaam/__init__.py) downloads ``<name>.ckpt`` from its CDN and checks the MD5 in
``_MODEL_HASHES``; e2e models come with ``<name>_tokenizer.model`` (SentencePiece).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .download import DownloadError, PublishedCheckpoint, download

GIGAAM_CDN = "https://cdn.chatwm.opensmodel.sberdevices.ru/GigaAM"
# Short names upstream load_model resolves to the current release (v3).
_SHORT_NAMES = ("ctc", "rnnt", "e2e_ctc", "e2e_rnnt", "ssl")


@dataclass(frozen=True)
class GigaamRelease:
    """A published GigaAM checkpoint (upstream gigaam/__init__.py ``_MODEL_HASHES``)."""

    name: str
    md5: str
    notes: str
    # e2e models (and v1_rnnt) decode with ``<name>_tokenizer.model`` (SentencePiece).
    sentencepiece: bool = False

    def checkpoint(self, base_url: str = GIGAAM_CDN) -> PublishedCheckpoint:
        return PublishedCheckpoint(
            name=self.name,
            url=f"{base_url.rstrip('/')}/{self.name}.ckpt",
            filename=f"{self.name}.ckpt",
            size_bytes=None,
            sha256=None,
            notes=self.notes,
            family="conformer",
            md5=self.md5,
        )

    def tokenizer(
        self, base_url: str = GIGAAM_CDN, sha256: str | None = None
    ) -> PublishedCheckpoint:
        return PublishedCheckpoint(
            name=f"{self.name}_tokenizer",
            url=f"{base_url.rstrip('/')}/{self.name}_tokenizer.model",
            filename=f"{self.name}_tokenizer.model",
            size_bytes=None,
            sha256=sha256,
            notes=f"SentencePiece model of {self.name}",
        )


GIGAAM_RELEASES: dict[str, GigaamRelease] = {
    release.name: release
    for release in (
        GigaamRelease(
            "v1_ctc",
            "f027f199e590a391d015aeede2e66174",
            "GigaAM v1 CTC: first published under a non-commercial licence; check it",
        ),
        GigaamRelease(
            "v2_ctc",
            "e00f59cb5d39624fb30d1786044795bf",
            "GigaAM v2 CTC (MIT): Golos crowd WER 2.5, Russian LibriSpeech 5.2",
        ),
        GigaamRelease(
            "v3_ctc",
            "73413e7be9c6a5935827bfab5c0dd678",
            "GigaAM v3 CTC (MIT): Golos crowd WER 2.8, Russian LibriSpeech 4.7",
        ),
        GigaamRelease(
            "v3_e2e_ctc",
            "367074d6498f426d960b25f49531cf68",
            "GigaAM v3 end-to-end CTC (MIT): punctuation, case, digits (SentencePiece)",
            sentencepiece=True,
        ),
        GigaamRelease(
            "v1_rnnt",
            "02c758999bcdc6afcb2087ef256d47ef",
            "GigaAM v1 RNNT: first published under a non-commercial licence; check it",
            sentencepiece=True,  # upstream fetches v1_rnnt_tokenizer.model for it too
        ),
        GigaamRelease(
            "v2_rnnt",
            "547460139acfebd842323f59ed54ab54",
            "GigaAM v2 RNNT (MIT)",
        ),
        GigaamRelease(
            "v3_rnnt",
            "0fd2c9a1ff66abd8d32a3a07f7592815",
            "GigaAM v3 RNNT (MIT): Golos crowd WER 2.4, Russian LibriSpeech 4.4",
        ),
        GigaamRelease(
            "v3_e2e_rnnt",
            "2730de7545ac43ad256485a462b0a27a",
            "GigaAM v3 end-to-end RNNT (MIT): punctuation, case, digits (SentencePiece)",
            sentencepiece=True,
        ),
        GigaamRelease(
            "emo",
            "7ce76f9535cb254488985057c0d33006",
            "GigaAM-Emo: speech emotion (Dusha classes angry, sad, neutral, positive); "
            "exported as an emotion bundle",
        ),
    )
}


def resolve_release_name(name: str) -> str:
    """Upstream's short names (``ctc``, ``e2e_ctc``, …) mean the v3 release."""
    return f"v3_{name}" if name in _SHORT_NAMES else name


def download_gigaam(
    release: GigaamRelease | str,
    dest_dir: Path,
    *,
    base_url: str = GIGAAM_CDN,
    tokenizer_sha256: str | None = None,
    progress: Callable[[int, int | None], None] = lambda done, total: None,
) -> tuple[Path, Path | None]:
    """Fetch a release (and its tokenizer) into ``dest_dir``: ``(checkpoint, tokenizer)``.

    The checkpoint is verified against upstream's MD5 (``.part`` file, renamed only after
    it matched); a verified copy already in ``dest_dir`` is reused. Upstream publishes no
    digest for tokenizers: it is verified against ``tokenizer_sha256`` when given,
    otherwise accepted as downloaded (its sha256 is recorded in the bundle's provenance,
    and ``load_gigaam`` checks that its piece count matches the model's head).
    """
    if isinstance(release, str):
        name = resolve_release_name(release)
        if name not in GIGAAM_RELEASES:
            raise DownloadError(
                f"unknown GigaAM model {release!r}; known: {', '.join(GIGAAM_RELEASES)}"
            )
        release = GIGAAM_RELEASES[name]
    cached = dest_dir / f"{release.name}.ckpt"
    if cached.is_file() and file_digests(cached)[1] == release.md5:
        checkpoint = cached
    else:
        checkpoint = download(release.checkpoint(base_url), dest_dir, progress=progress)
    tokenizer = None
    if release.sentencepiece:
        entry = release.tokenizer(base_url, tokenizer_sha256)
        tokenizer = download(
            entry, dest_dir, accept_unverified=tokenizer_sha256 is None, progress=progress
        )
    return checkpoint, tokenizer


def file_digests(path: Path) -> tuple[str, str]:
    """sha256 and MD5 of a file in one pass (upstream identifies releases by MD5)."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def release_by_md5(md5: str) -> str | None:
    return next((r.name for r in GIGAAM_RELEASES.values() if r.md5 == md5), None)
