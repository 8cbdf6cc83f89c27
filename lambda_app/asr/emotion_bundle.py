"""The emotion bundle: a directory ``python -m export gigaam emo.ckpt`` writes.

    config.json        EmotionBundleConfig: ``kind: "emotion_classifier"``, the class
                       labels in the model's order, the front end, the graph's I/O names
    model.onnx         features [B, n_mels, T] + feature_lengths [B] → probs [B, classes]
                       (padded frames masked out of the mean over time)
    verification.json  the export's verification report (must say it passed)
    SHA256SUMS         sha256 of every other file

Loaded with the speech-recognition bundles' checks (asr.bundle): a missing, unlisted or
corrupt file is refused, and so is a bundle of another kind.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from .bundle import CONFIG_FILE, check_bundle_files, read_json
from .config import GigaamMelConfig, frontend_config_from_dict
from .errors import BundleError

EMOTION_KIND: Final = "emotion_classifier"
EMOTION_FORMAT_VERSION: Final = 1


@dataclass(frozen=True)
class EmotionModelConfig:
    file: str = "model.onnx"
    features_input: str = "features"
    lengths_input: str = "feature_lengths"
    probs_output: str = "probs"
    precision: Literal["int8", "fp32"] = "int8"
    subsampling: int = 4
    # Longest audio one pass may see (attention is quadratic); longer clips are cut into
    # equal pieces whose probabilities are averaged, weighted by length.
    max_window_seconds: float = 25.0
    # The export measured padded batches giving every clip its one-by-one probabilities
    # (within 1e-4); otherwise the runtime runs one clip at a time.
    batch_invariant: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("int8", "fp32"):
            raise BundleError(f"invalid config: model.precision {self.precision!r}")
        if self.subsampling < 1 or self.max_window_seconds < 1.0:
            raise BundleError("invalid config: model.subsampling >= 1, max_window_seconds >= 1")


@dataclass(frozen=True)
class EmotionBundleConfig:
    model_id: str
    labels: tuple[str, ...]
    frontend: GigaamMelConfig
    model: EmotionModelConfig = field(default_factory=EmotionModelConfig)
    kind: str = EMOTION_KIND
    format_version: int = EMOTION_FORMAT_VERSION
    verification_file: str = "verification.json"
    checksums_file: str = "SHA256SUMS"
    # Free-form provenance: source checkpoint, its sha256, exporter versions.
    source: dict[str, Any] = field(default_factory=dict)

    def files(self) -> list[str]:
        """Every file the bundle holds besides its checksum list."""
        return [CONFIG_FILE, self.model.file, self.verification_file]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> EmotionBundleConfig:
        if not isinstance(data, dict):
            raise BundleError("config.json must hold a JSON object")
        if data.get("kind") != EMOTION_KIND:
            raise BundleError(
                f"config.json has kind {data.get('kind')!r}, not {EMOTION_KIND!r}: not an "
                "emotion-classifier bundle (a speech-recognition bundle loads with "
                "asr.bundle.load_bundle)"
            )
        if data.get("format_version") != EMOTION_FORMAT_VERSION:
            raise BundleError(
                f"config.json has format_version {data.get('format_version')!r}; this runtime "
                f"reads emotion bundles of version {EMOTION_FORMAT_VERSION}: re-export it"
            )
        frontend = frontend_config_from_dict(_section(data, "frontend"))
        if not isinstance(frontend, GigaamMelConfig):
            raise BundleError("config.json: an emotion bundle needs a gigaam_mel front end")
        rest = {k: v for k, v in data.items() if k not in ("frontend", "model", "labels")}
        try:
            model = EmotionModelConfig(**_section(data, "model"))
            labels = _labels(data.get("labels"))
            config = cls(frontend=frontend, model=model, labels=labels, **rest)
        except TypeError as exc:  # unknown or missing keys
            raise BundleError(f"config.json does not fit the emotion bundle schema: {exc}") from exc
        if not config.model_id or not isinstance(config.model_id, str):
            raise BundleError("config.json needs a non-empty model_id")
        return config


@dataclass(frozen=True)
class EmotionBundle:
    """A loaded emotion bundle: its directory, config and verification report."""

    root: Path
    config: EmotionBundleConfig
    verification: dict[str, Any]

    def path(self, name: str) -> Path:
        return self.root / name


def read_emotion_config(root: Path | str) -> EmotionBundleConfig:
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"emotion bundle directory {root} does not exist")
    return EmotionBundleConfig.from_dict(read_json(root / CONFIG_FILE))


def load_emotion_bundle(root: Path | str, *, verify_checksums: bool = True) -> EmotionBundle:
    """Load and validate the emotion bundle in ``root`` (BundleError when it is not one,
    or is incomplete, corrupt or unverified)."""
    root = Path(root)
    config = read_emotion_config(root)
    verification = check_bundle_files(
        root, config.files(), config, verify_checksums=verify_checksums
    )
    return EmotionBundle(root, config, verification)


def is_emotion_bundle(root: Path | str) -> bool:
    """Whether ``root``'s config.json says it is an emotion classifier (no checksums read)."""
    try:
        data = read_json(Path(root) / CONFIG_FILE)
    except BundleError:
        return False
    return isinstance(data, dict) and data.get("kind") == EMOTION_KIND


def _labels(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) < 2:
        raise BundleError("config.json: labels must list at least two class names")
    if not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
        raise BundleError("config.json: labels must be distinct non-empty strings")
    return tuple(value)


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    section = data.get(name)
    if not isinstance(section, dict):
        raise BundleError(f"config.json is missing its {name!r} section")
    return section
