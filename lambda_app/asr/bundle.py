"""The model bundle: a directory the export step writes and the runtime serves.

    config.json        BundleConfig (front end, model I/O names, tokens, family)
    model.onnx         the acoustic model (int8 unless exported otherwise): CTC log-probs,
                       or a transducer's encoder
    decoder.onnx       transducers only: the prediction network (one LSTM step)
    joint.onnx         transducers only: the joint network
    tokens.txt         the token list, blank included
    lm.ngram           optional: a word LM for the beam search (python -m export attach-lm;
                       or lm.bin, a KenLM binary, with its unigrams.txt)
    verification.json  the export's verification report (must say it passed)
    SHA256SUMS         sha256 of every other file, ``sha256sum`` format
    .verified.json     optional: size and mtime of each file when SHA256SUMS was written
                       (asr.checksum_stamp): files that still match are not hashed again

Loading refuses a bundle with a missing, unlisted, mismatched or corrupt file, so a
partial copy or a bad download never serves requests. Another kind of bundle (config.json
with a top-level ``kind``: an emotion classifier, asr.emotion_bundle) is refused by name.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .checksum_stamp import stamped_digests, write_stamp
from .config import BundleConfig
from .errors import BundleError
from .tokens import Vocabulary

CONFIG_FILE = "config.json"
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class ModelBundle:
    root: Path
    config: BundleConfig
    vocabulary: Vocabulary
    verification: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.root / self.config.model.file


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_files(config: BundleConfig) -> list[str]:
    """Every file a bundle must hold besides its checksum list."""
    files = [CONFIG_FILE, config.model.file, config.tokens.file, config.verification_file]
    if config.transducer is not None:
        files += [config.transducer.decoder_file, config.transducer.joint_file]
    if config.decoder.lm is not None:
        files += config.decoder.lm.files()
    return files


def write_checksums(root: Path, config: BundleConfig) -> None:
    write_checksum_file(root, bundle_files(config), config.checksums_file)


def write_checksum_file(root: Path, files: Sequence[str], checksums_file: str) -> None:
    lines = [f"{sha256_of(root / name)}  {name}\n" for name in sorted(files)]
    text = "".join(lines)
    (root / checksums_file).write_text(text, encoding="utf-8")
    write_stamp(root, files, text)


def load_bundle(
    root: Path | str,
    *,
    verify_checksums: bool = True,
    known_digests: Mapping[str, str] | None = None,
) -> ModelBundle:
    """Load and validate the bundle in ``root``.

    ``known_digests`` maps file names to the sha256 of the file now at ``root/name``, as
    computed by a caller that has just written and verified it (a download): those files
    are checked against SHA256SUMS without being read again.
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"model bundle directory {root} does not exist")
    data = read_json(root / CONFIG_FILE)
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind is not None:
        raise BundleError(
            f"{root} holds a {kind!r} bundle, not a speech-recognition model bundle "
            "(an emotion classifier loads with asr.emotion.EmotionClassifier)"
        )
    config = BundleConfig.from_dict(data)
    verification = check_bundle_files(
        root,
        bundle_files(config),
        config,
        verify_checksums=verify_checksums,
        known_digests=known_digests or {},
    )
    vocabulary = Vocabulary.read(root / config.tokens.file, config.tokens.blank_id)
    return ModelBundle(root, config, vocabulary, verification)


class BundleLayout(Protocol):
    @property
    def checksums_file(self) -> str: ...

    @property
    def verification_file(self) -> str: ...


def check_bundle_files(
    root: Path,
    files: Sequence[str],
    layout: BundleLayout,
    *,
    verify_checksums: bool = True,
    known_digests: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Every file present, inside ``root``, matching SHA256SUMS; the verification report,
    which must say it passed."""
    for name in [*files, layout.checksums_file]:
        if Path(name).name != name or name in {".", ".."}:
            raise BundleError(f"model bundle {root}: config.json names a file outside it: {name!r}")
        if not (root / name).is_file():
            raise BundleError(f"model bundle {root} is missing {name}")
    if verify_checksums:
        _verify_checksums(root, files, layout.checksums_file, known_digests or {})
    verification = read_json(root / layout.verification_file)
    if not isinstance(verification, dict) or verification.get("passed") is not True:
        raise BundleError(f"model bundle {root} did not pass export verification; re-export it")
    return verification


def parse_checksums(text: str, source: str = "SHA256SUMS") -> dict[str, str]:
    """``sha256sum`` output (``<64 hex>  <name>``, or ``<64 hex> *<name>``) → {name: digest}."""
    listed: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        digest, separator, name = line[:64], line[64:66], line[66:]
        if not _SHA256_HEX.fullmatch(digest) or separator not in {"  ", " *"} or not name:
            raise BundleError(f"{source} has a malformed line: {line!r}")
        if name in listed:
            raise BundleError(f"{source} lists {name!r} twice")
        listed[name] = digest.lower()
    return listed


def _verify_checksums(
    root: Path, files: Sequence[str], checksums_file: str, known: Mapping[str, str]
) -> None:
    text = (root / checksums_file).read_text(encoding="utf-8")
    listed = parse_checksums(text, checksums_file)
    known = {**stamped_digests(root, files, text, listed), **known}
    for name in files:
        if name not in listed:
            raise BundleError(f"{checksums_file} does not list {name}")
        actual = known[name] if name in known else sha256_of(root / name)
        if actual.lower() != listed[name]:
            raise BundleError(
                f"model bundle file {name} does not match its sha256: corrupt or partial copy"
            )


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"model bundle is missing {path.name} ({path.parent})") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path.name} in {path.parent} is not valid JSON: {exc}") from exc
