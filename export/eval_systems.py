"""The systems an evaluation compares: model bundles, and the PyTorch original of one.

A bundle (any family, fp32 or int8) is transcribed by ``asr.transcribe.Transcriber``: the
runtime's one audio → text path, the one the Lambda handler and ``python -m asr`` use, with
its decoding, resampling, long-recording segmentation and greedy CTC.

The PyTorch original (a ``.nemo`` QuartzNet/Conformer, a state_dict + config, or a GigaAM
``.ckpt``) is loaded by the export's own loaders into this project's PyTorch models and fed
the runtime's numpy front-end features (``asr.frontend``, configured from the checkpoint),
then decoded greedily (CTC, or upstream's transducer loop in torch) — exactly as the
export's verification gate does (``export.verify_systems``). So a difference between it and
a bundle is the ONNX graph's or the quantisation's, never the front end's: the numpy front
ends' parity with the upstream torch front ends (≤ 1e-4) is unit-tested separately
(tests/test_frontend*.py). The PyTorch system
transcribes every utterance in one pass, whatever its length; a bundle cuts audio longer
than its window at pauses, so utterances over 25 s (Conformer) or 30 s (QuartzNet) can
differ for that reason alone.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

import numpy as np
from asr.acoustic_model import OnnxAcousticModel
from asr.audio import decode_audio
from asr.decoding import DecodingOptions
from asr.frontend import make_frontend
from asr.limits import AudioLimits
from asr.transcribe import Transcriber

from .checkpoint import load_checkpoint, load_quartznet
from .gigaam import load_gigaam
from .nemo_conformer import NemoHead, load_nemo_conformer
from .nemo_preprocessor import NemoStft
from .quartznet import CheckpointError
from .source_model import SourceModel
from .verify_systems import torch_system

CheckpointKind = Literal["nemo", "gigaam"]
# Evaluation reads its own files: no duration cap (the API's limits protect a service).
EVAL_LIMITS = AudioLimits()


@dataclass(frozen=True)
class Recognition:
    """One system's output for one utterance."""

    text: str
    # The greedy decoder's token ids, when the system exposes them (None: text only).
    token_ids: tuple[int, ...] | None
    duration: float  # seconds of audio, as decoded


class System(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    def recognise(self, audio: Path) -> Recognition:
        """Raises ``AsrError`` (stable code) for audio it cannot use."""


# ``export eval --decoders``: the decoders one bundle is compared under.
DECODER_SYSTEMS: Final = ("greedy", "beam", "beam+lm", "beam+hotwords", "beam+lm+hotwords")


def decoder_options(name: str, hotwords: Sequence[object] = ()) -> DecodingOptions:
    """The request options of a DECODER_SYSTEMS name (hotwords: ``asr.hotwords.Hotword``)."""
    if name not in DECODER_SYSTEMS:
        raise ValueError(f"unknown decoder {name!r}: choose from {', '.join(DECODER_SYSTEMS)}")
    if name == "greedy":
        return DecodingOptions(method="greedy")
    if "hotwords" in name and not hotwords:
        raise ValueError(f"{name} needs --hotwords")
    return DecodingOptions(
        method="beam",
        use_lm="+lm" in name,
        hotwords=tuple(hotwords) if "hotwords" in name else (),  # type: ignore[arg-type]
    )


class MemoisedModel:
    """The acoustic model with its outputs remembered by their features: systems that
    differ only in decoding run the model once per utterance."""

    def __init__(self, model: OnnxAcousticModel) -> None:
        self.model = model
        self._outputs: dict[str, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def batch(self, features: list[np.ndarray]) -> list[np.ndarray]:
        digest = hashlib.sha256()
        for item in features:
            digest.update(str(item.shape).encode())
            digest.update(np.ascontiguousarray(item).tobytes())
        key = digest.hexdigest()
        with self._lock:
            cached = self._outputs.get(key)
        if cached is None:
            cached = self.model.batch(features)
            with self._lock:
                self._outputs[key] = cached
        return cached


class BundleSystem:
    def __init__(
        self,
        bundle: Path,
        *,
        name: str | None = None,
        threads: int | None = None,
        decoding: DecodingOptions | None = None,
        transcriber: Transcriber | None = None,
    ):
        """``transcriber``: one already loaded for ``bundle`` (systems sharing it differ in
        ``decoding`` only, and share its memoised model outputs)."""
        self.transcriber = transcriber or Transcriber.from_dir(bundle, threads=threads)
        self.decoding = decoding
        config = self.transcriber.bundle.config
        self.name = name or bundle.name
        decoder = "CTC" if config.transducer is None else "RNNT"
        chosen = self.transcriber.decoding(decoding or DecodingOptions()).describe()
        self.description = (
            f"bundle {bundle} ({config.model_id}, {config.family} {decoder}, "
            f"{config.model.precision}, {chosen})"
        )

    def recognise(self, audio: Path) -> Recognition:
        transcript = self.transcriber.transcribe(audio, limits=EVAL_LIMITS, decoding=self.decoding)
        token_ids = tuple(t for segment in transcript.segments for t in segment.token_ids)
        return Recognition(transcript.text, token_ids, transcript.duration)


class TorchSystem:
    """The PyTorch model behind the numpy front end and greedy decoding (see the module doc)."""

    def __init__(self, source: SourceModel, *, name: str, description: str) -> None:
        self.source = source
        self.name = name
        self.description = description
        self.frontend = make_frontend(source.frontend)
        self._system = torch_system(source)
        self._lock = threading.Lock()  # one forward at a time: torch threads inside it

    def recognise(self, audio: Path) -> Recognition:
        rate = self.source.frontend.sample_rate
        samples = decode_audio(audio, rate, limits=EVAL_LIMITS).samples
        features = self.frontend(samples)
        with self._lock:
            output = self._system.run(features, with_log_probs=False)
        return Recognition(output.text, output.token_ids, samples.size / rate)


def checkpoint_kind(path: Path, config: Path | None) -> CheckpointKind:
    """``.nemo`` (or any file with ``--config``) is NeMo; ``.ckpt`` is GigaAM."""
    if config is not None or path.suffix.lower() == ".nemo":
        return "nemo"
    if path.suffix.lower() == ".ckpt":
        return "gigaam"
    raise CheckpointError(
        f"cannot tell what {path.name} is from its name: give --checkpoint-kind nemo|gigaam"
    )


def load_torch_system(
    path: Path,
    *,
    kind: CheckpointKind | None = None,
    config: Path | None = None,
    nemo_stft: NemoStft = "2.5",
    head: NemoHead | None = None,
    tokenizer: Path | None = None,
    base: Path | None = None,
    name: str | None = None,
) -> TorchSystem:
    """Load a checkpoint as the export does (``python -m export nemo|gigaam``)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    kind = kind or checkpoint_kind(path, config)
    if kind == "gigaam":
        if config is not None:
            raise CheckpointError("--config applies to NeMo state_dicts, not GigaAM checkpoints")
        source = load_gigaam(path, tokenizer=tokenizer, base=base)
    else:
        if tokenizer is not None or base is not None:
            raise CheckpointError("--tokenizer and --base apply to GigaAM checkpoints")
        if head is not None and kind != "nemo":
            raise CheckpointError("--head applies to NeMo hybrid checkpoints")
        checkpoint = load_checkpoint(path, config)
        target = str(checkpoint.config.get("encoder", {}).get("_target_", ""))
        if target.endswith("ConformerEncoder"):
            source = load_nemo_conformer(checkpoint, nemo_stft, head)
        else:
            source = load_quartznet(checkpoint, nemo_stft)
    stft = f", NeMo STFT {nemo_stft}" if kind == "nemo" else ""
    decoder = "CTC" if source.transducer is None else "RNNT"
    return TorchSystem(
        source,
        name=name or f"pytorch:{path.stem}",
        description=f"PyTorch {path} ({kind}, {source.family} {decoder}{stft}; numpy front end)",
    )


def unique_names(names: list[str]) -> list[str]:
    """``names`` with repeats suffixed "#2", "#3", … (they label columns and rows)."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique
