"""Read and write NeMo checkpoints without nemo_toolkit.

A ``.nemo`` file is a tar archive (sometimes gzip-compressed) holding
``model_config.yaml`` and ``model_weights.ckpt`` (a plain PyTorch state_dict). Members
may sit under ``./``. A plain state_dict (``.pt``/``.ckpt``, optionally Lightning's
``{"state_dict": ...}``) is accepted together with its config YAML.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from asr.bundle import sha256_of
from asr.tokens import Vocabulary

from .nemo_preprocessor import NemoStft, check_preprocessor_buffers, read_preprocessor
from .quartznet import CheckpointError, QuartzNetCTC, QuartzNetSpec
from .source_model import SourceModel

CONFIG_MEMBER = "model_config.yaml"
WEIGHTS_MEMBER = "model_weights.ckpt"
# Buffers of NeMo's preprocessor and augmentation modules: not part of the acoustic model.
NON_MODEL_PREFIXES = ("preprocessor.", "spec_augmentation.", "spec_augment.")


@dataclass
class LoadedCheckpoint:
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    sha256: str
    path: Path

    @property
    def preprocessor_buffers(self) -> dict[str, torch.Tensor]:
        prefix = "preprocessor.featurizer."
        return {k[len(prefix) :]: v for k, v in self.state_dict.items() if k.startswith(prefix)}


def load_checkpoint(path: Path, config_path: Path | None = None) -> LoadedCheckpoint:
    """Load a ``.nemo`` archive, or a state_dict file plus its ``model_config.yaml``."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if tarfile.is_tarfile(path):
        config, state_dict = _read_nemo_archive(path)
        if config_path is not None:
            config = _read_yaml(config_path.read_bytes(), str(config_path))
    else:
        if config_path is None:
            raise CheckpointError(
                f"{path} is not a .nemo archive; pass its model_config.yaml with --config"
            )
        config = _read_yaml(config_path.read_bytes(), str(config_path))
        state_dict = _read_state_dict(path.read_bytes(), str(path))
    return LoadedCheckpoint(config, state_dict, sha256_of(path), path)


def build_quartznet(checkpoint: LoadedCheckpoint) -> QuartzNetCTC:
    """Instantiate the architecture the config describes and load the weights strictly."""
    spec = QuartzNetSpec.from_nemo_config(checkpoint.config)
    if not spec.conv_mask:
        raise CheckpointError("encoder.conv_mask=false checkpoints are not supported")
    model = QuartzNetCTC(spec)
    weights = {
        k: v for k, v in checkpoint.state_dict.items() if not k.startswith(NON_MODEL_PREFIXES)
    }
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            "checkpoint keys do not match the QuartzNet the config describes: "
            f"{len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    for key, tensor in weights.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{key}: checkpoint shape {tuple(tensor.shape)} != "
                f"config shape {tuple(expected[key].shape)}"
            )
    model.load_state_dict(weights, strict=True)
    return model.eval()


def load_quartznet(checkpoint: LoadedCheckpoint, nemo_stft: NemoStft = "2.5") -> SourceModel:
    """A QuartzNet/Jasper ``.nemo`` as the export pipeline's input."""
    model = build_quartznet(checkpoint)
    preprocessor = read_preprocessor(checkpoint.config, nemo_stft)
    check_preprocessor_buffers(checkpoint.preprocessor_buffers, preprocessor)
    return SourceModel(
        model=model,
        family="quartznet",
        frontend=preprocessor.frontend,
        vocabulary=Vocabulary.from_labels(model.spec.vocabulary),
        token_kind="char",
        subsampling=model.spec.subsampling,
        source={
            "checkpoint": checkpoint.path.name,
            "checkpoint_sha256": checkpoint.sha256,
            "architecture": "QuartzNet/Jasper (NeMo ConvASREncoder + ConvASRDecoder)",
            **preprocessor.provenance(),
        },
    )


def write_nemo(
    path: Path, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
) -> None:
    """Write a ``.nemo`` archive in NeMo's layout (uncompressed tar, ``./`` members)."""
    weights = io.BytesIO()
    torch.save(dict(state_dict), weights)
    members = {
        CONFIG_MEMBER: yaml.safe_dump(dict(config), allow_unicode=True, sort_keys=False).encode(),
        WEIGHTS_MEMBER: weights.getvalue(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(payload)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(payload))


def _read_nemo_archive(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            payloads: dict[str, bytes] = {}
            for name in (CONFIG_MEMBER, WEIGHTS_MEMBER):
                member = members.get(name)
                handle = archive.extractfile(member) if member is not None else None
                if handle is None:
                    raise CheckpointError(f"{path} is not a .nemo archive: it has no {name}")
                payloads[name] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is a damaged archive: {exc}") from exc
    config = _read_yaml(payloads[CONFIG_MEMBER], f"{path}:{CONFIG_MEMBER}")
    return config, _read_state_dict(payloads[WEIGHTS_MEMBER], f"{path}:{WEIGHTS_MEMBER}")


def _read_yaml(data: bytes, where: str) -> dict[str, Any]:
    try:
        config = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{where} is not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{where} does not hold a mapping")
    # Hydra-style files wrap the model under "model:".
    inner = config.get("model")
    return inner if isinstance(inner, dict) and "encoder" in inner else config


def _read_state_dict(data: bytes, where: str) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe pickles
        raise CheckpointError(f"{where} is not a loadable PyTorch state_dict: {exc}") from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise CheckpointError(f"{where} does not hold a state_dict of tensors")
    return {str(k): v for k, v in loaded.items()}
