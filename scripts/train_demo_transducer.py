"""Train the small Russian demo transducer (GigaAM v3 RNNT layout) and save it as a GigaAM .ckpt.

The demo Conformer's RNNT twin: the same espeak-ng phrases, voices, augmentation, front end
and held-out clips (scripts/train_demo_conformer.py), with GigaAM's RNNTHead (an LSTM
prediction network and a joint) trained with the RNN-T loss (scripts/rnnt_loss.py). The
encoder starts from the trained demo Conformer's (``--encoder-from``), as a transducer is
often trained on a CTC-pretrained encoder; every weight is then trained. It is saved as
upstream publishes checkpoints (``{"state_dict", "cfg"}``, ``model_class: rnnt``,
``head.decoder.*`` / ``head.joint.*``), so ``export.gigaam.load_gigaam`` reads it.

    python scripts/train_demo_transducer.py --out demo/model \
        --encoder-from demo/model/demo_gigaam_ru.ckpt [--minutes 30] [--seed 0]

writes ``<out>/demo_gigaam_rnnt_ru.ckpt`` and ``<out>/transducer_training_report.json``,
then reloads the checkpoint through ``load_gigaam`` and decodes every held-out clip with
upstream's greedy rules.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from asr.frontend import make_frontend
from omegaconf import DictConfig
from torch import Tensor, nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python scripts/train_demo_transducer.py`
    sys.path.insert(0, str(REPO_ROOT))

from export.gigaam import load_gigaam  # noqa: E402
from export.transducer import (  # noqa: E402
    GIGAAM_KEYS,
    TransducerModel,
    TransducerSpec,
    greedy_path,
)
from scripts.rnnt_loss import rnnt_loss  # noqa: E402
from scripts.train_demo_conformer import (  # noqa: E402
    FRONTEND,
    DemoShape,
    conformer_spec,
    demo_audio,
    finish,
    gigaam_cfg,
    preprocessor_state,
    training_report,
    wrong_clips,
)
from scripts.train_demo_conformer import train_settings as conformer_train_settings  # noqa: E402
from scripts.train_demo_model import (  # noqa: E402
    BLANK,
    VOCABULARY,
    Batch,
    Clip,
    TrainSettings,
    parameter_count,
    train,
    training_sets,
)

MODEL_FILE = "demo_gigaam_rnnt_ru.ckpt"
MODEL_NAME = "demo_gigaam_rnnt_ru"
REPORT_FILE = "transducer_training_report.json"
# Prediction network and joint sizes: GigaAM v3 RNNT's own (onnx-asr, for one, runs only
# GigaAM's 320-wide prediction network).
PRED_HIDDEN = 320
PRED_LAYERS = 1
JOINT_HIDDEN = 320
MAX_SYMBOLS_PER_STEP = 10


def transducer_spec(shape: DemoShape | None = None) -> TransducerSpec:
    """The demo Conformer's encoder with a small RNNT head."""
    return TransducerSpec(
        encoder=conformer_spec(shape or DemoShape()),
        pred_hidden=PRED_HIDDEN,
        pred_layers=PRED_LAYERS,
        joint_hidden=JOINT_HIDDEN,
        activation="relu",
        max_symbols_per_step=MAX_SYMBOLS_PER_STEP,
    )


def train_settings(minutes: float, seed: int) -> TrainSettings:
    """The Conformer's recipe with fewer epochs, a shorter warm-up and a lower peak: the
    encoder starts trained, the heads do not."""
    conformer = conformer_train_settings(minutes, seed)
    return replace(conformer, max_epochs=16, lr=1e-3, warmup_steps=150)


class TransducerObjective:
    """The RNN-T loss per label (mean over the batch) for training; summed losses and
    greedy decoding (upstream's rules, all utterances at once) for validation."""

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        losses, target_lengths = self._losses(model, batch)
        return (losses / target_lengths.clamp(min=1)).mean()

    @torch.no_grad()
    def score(self, model: nn.Module, batch: Batch) -> tuple[float, list[str]]:
        losses, _ = self._losses(model, batch)
        assert isinstance(model, TransducerModel)
        encoded, lengths = model.encoder(batch[0], batch[1])
        hypotheses = [
            "".join(VOCABULARY[t] for t in greedy_path(model, encoded[row, :length]).token_ids)
            for row, length in enumerate(lengths.tolist())
        ]
        return float(losses.sum()), hypotheses

    def _losses(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        assert isinstance(model, TransducerModel)
        features, lengths, targets, target_lengths = batch
        padded = _pad_targets(targets, target_lengths)
        encoded, encoded_lengths = model.encoder(features, lengths)
        log_probs = model.joint(encoded, prediction_sequence(model, padded))
        losses = rnnt_loss(log_probs, padded, encoded_lengths, target_lengths, blank=BLANK)
        return losses, target_lengths


def prediction_sequence(model: TransducerModel, targets: Tensor) -> Tensor:
    """The prediction network over start + every label: targets [B, U] → [B, U + 1, H]
    (the start is the zero input, as in decoding)."""
    predictor = model.predictor
    labels = torch.cat([torch.full_like(targets[:, :1], BLANK), targets], dim=1)
    embedded = predictor.embed(labels).masked_fill((labels == BLANK).unsqueeze(-1), 0.0)
    output, _ = predictor.lstm(embedded.transpose(0, 1))
    result: Tensor = output.transpose(0, 1)
    return result


def _pad_targets(targets: Tensor, target_lengths: Tensor) -> Tensor:
    """Concatenated targets (collate's) → [B, U] padded with label 0."""
    rows = torch.split(targets, target_lengths.tolist())
    return nn.utils.rnn.pad_sequence(list(rows), batch_first=True, padding_value=0)


def encoder_factory(spec: TransducerSpec, encoder_from: Path | None) -> Any:
    """A fresh transducer, its encoder copied from a trained GigaAM CTC checkpoint."""
    encoder_state = None
    if encoder_from is not None:
        encoder = load_gigaam(encoder_from).model.encoder
        assert isinstance(encoder, nn.Module)
        encoder_state = encoder.state_dict()

    def build() -> nn.Module:
        model = TransducerModel(spec)
        if encoder_state is not None:
            model.encoder.load_state_dict(encoder_state)
        return model

    return build


def rnnt_cfg(spec: TransducerSpec, note: str | None = None) -> dict[str, Any]:
    """The cfg upstream GigaAM v3 RNNT checkpoints carry."""
    cfg = gigaam_cfg(spec.encoder, note)
    classes = spec.num_classes
    cfg["model_class"] = "rnnt"
    cfg["head"] = {
        "_target_": "gigaam.decoder.RNNTHead",
        "decoder": {
            "pred_hidden": spec.pred_hidden,
            "pred_rnn_layers": spec.pred_layers,
            "num_classes": classes,
        },
        "joint": {
            "enc_hidden": spec.encoder.d_model,
            "pred_hidden": spec.pred_hidden,
            "joint_hidden": spec.joint_hidden,
            "num_classes": classes,
        },
    }
    cfg["decoding"] = {
        "_target_": "gigaam.decoding.RNNTGreedyDecoding",
        "vocabulary": list(VOCABULARY),
    }
    cfg["model_name"] = MODEL_NAME
    return cfg


def gigaam_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Upstream key names: preprocessor buffers, ``encoder.*``, ``head.decoder.*``,
    ``head.joint.*`` (``export.transducer.GIGAAM_KEYS`` reversed)."""
    ours_to_theirs = {ours: theirs for theirs, ours in GIGAAM_KEYS.items()}
    state = preprocessor_state()
    for key, value in model.state_dict().items():
        prefix = next((p for p in ours_to_theirs if key.startswith(p)), None)
        name = ours_to_theirs[prefix] + key[len(prefix) :] if prefix else key
        if not name.startswith(("encoder.", "head.")):
            raise ValueError(f"unexpected model tensor {key}")
        state[name] = value.detach().clone().contiguous()
    return state


def save_gigaam(path: Path, cfg: dict[str, Any], model: nn.Module) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": gigaam_state_dict(model), "cfg": DictConfig(cfg)}, path)


def transcribe(model: TransducerModel, features: Tensor) -> str:
    with torch.no_grad():
        encoded, _ = model.encoder(features[None], torch.tensor([features.shape[1]]))
    return "".join(VOCABULARY[t] for t in greedy_path(model, encoded[0]).token_ids)


def verify_checkpoint(path: Path, clips: Sequence[Clip]) -> list[tuple[Clip, str]]:
    """Reload the .ckpt as the exporter does; return the clips it gets wrong."""
    source = load_gigaam(path)
    model = source.model
    if source.frontend != FRONTEND or not isinstance(model, TransducerModel):
        raise RuntimeError(f"{path} does not reload as a transducer with {FRONTEND}")
    frontend = make_frontend(source.frontend)
    return wrong_clips(clips, lambda audio: transcribe(model, torch.from_numpy(frontend(audio))))


def run(
    out_dir: Path,
    audio_dir: Path,
    settings: TrainSettings,
    encoder_from: Path | None,
) -> int:
    wall_start = time.monotonic()
    torch.set_num_threads(2)
    spec = transducer_spec()
    cfg = rnnt_cfg(
        spec,
        note=(
            "Demo model trained on espeak-ng synthetic Russian speech by "
            "scripts/train_demo_transducer.py; it only knows its fixed phrase list."
        ),
    )
    frontend = make_frontend(FRONTEND)
    val_clips, train_set, val_set = training_sets(frontend, settings.seed)
    factory = encoder_factory(spec, encoder_from)
    print(
        f"{len(train_set)} training / {len(val_set)} validation clips ready in "
        f"{time.monotonic() - wall_start:.0f}s; model: {parameter_count(factory()):,} "
        f"parameters; encoder from {encoder_from or 'scratch'}",
        flush=True,
    )
    result = train(factory, train_set, val_set, settings, objective=TransducerObjective())
    model_path = out_dir / MODEL_FILE
    save_gigaam(model_path, cfg, result.model)
    demo = demo_audio(audio_dir, val_clips)
    checks = [*val_clips, *demo]
    mismatches = verify_checkpoint(model_path, checks)

    seconds = time.monotonic() - wall_start
    counts = {"train_clips": len(train_set), "validation_clips": len(val_set)}
    report = training_report(result, settings, spec, counts, seconds, model_file=MODEL_FILE)
    report["encoder_initialised_from"] = encoder_from.name if encoder_from else None
    return finish(report, out_dir / REPORT_FILE, model_path, (checks, demo, mismatches))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model directory (demo/model)")
    parser.add_argument(
        "--audio-dir", type=Path, help="held-out demo clips (default: OUT/../audio)"
    )
    parser.add_argument(
        "--encoder-from", type=Path, help="a trained GigaAM CTC checkpoint to start the encoder"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=30.0,
        help="wall-clock safety cap; training ends on exact validation or max_epochs, so a "
        "busy machine gets the same model, later",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = train_settings(args.minutes, args.seed)
    return run(args.out, args.audio_dir or args.out.parent / "audio", settings, args.encoder_from)


if __name__ == "__main__":
    raise SystemExit(main())
