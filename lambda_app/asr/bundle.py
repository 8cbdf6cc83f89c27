"""The model bundle: a directory the export step writes and the runtime serves.

    config.json        BundleConfig (front end, model I/O names, tokens, family)
    model.onnx         the acoustic model (int8 unless exported otherwise)
    tokens.txt         the token list, blank included
    verification.json  the export's verification report (must say it passed)
    SHA256SUMS         sha256 of every other file, ``sha256sum`` format

Loading refuses a bundle with a missing, unlisted, mismatched or corrupt file, so a
partial copy or a bad download never serves requests.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import BundleConfig
from .errors import BundleError
from .tokens import Vocabulary

CONFIG_FILE = "config.json"


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
    return [CONFIG_FILE, config.model.file, config.tokens.file, config.verification_file]


def write_checksums(root: Path, config: BundleConfig) -> None:
    lines = [f"{sha256_of(root / name)}  {name}\n" for name in sorted(bundle_files(config))]
    (root / config.checksums_file).write_text("".join(lines), encoding="utf-8")


def load_bundle(root: Path | str, *, verify_checksums: bool = True) -> ModelBundle:
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"model bundle directory {root} does not exist")
    config = BundleConfig.from_dict(_read_json(root / CONFIG_FILE))
    for name in [*bundle_files(config), config.checksums_file]:
        if not (root / name).is_file():
            raise BundleError(f"model bundle {root} is missing {name}")
    if verify_checksums:
        _verify_checksums(root, config)
    verification = _read_json(root / config.verification_file)
    if not isinstance(verification, dict) or verification.get("passed") is not True:
        raise BundleError(f"model bundle {root} did not pass export verification; re-export it")
    vocabulary = Vocabulary.read(root / config.tokens.file, config.tokens.blank_id)
    return ModelBundle(root, config, vocabulary, verification)


def _verify_checksums(root: Path, config: BundleConfig) -> None:
    listed: dict[str, str] = {}
    for line in (root / config.checksums_file).read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise BundleError(f"{config.checksums_file} has a malformed line: {line!r}")
        listed[name.lstrip("*")] = digest.lower()
    for name in bundle_files(config):
        if name not in listed:
            raise BundleError(f"{config.checksums_file} does not list {name}")
        if sha256_of(root / name) != listed[name]:
            raise BundleError(
                f"model bundle file {name} does not match its sha256: corrupt or partial copy"
            )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"model bundle is missing {path.name} ({path.parent})") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path.name} in {path.parent} is not valid JSON: {exc}") from exc
