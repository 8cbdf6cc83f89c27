"""Train a small emotion-shaped classifier on espeak-ng Russian speech and save it as a
GigaAM-Emo ``.ckpt`` (upstream's layout: ``{"state_dict", "cfg"}``, ``cfg.id2name``, a
``torch.nn.Linear`` head on the mean of the encoder output over time).

The labels are speaking styles we control, named after Dusha's classes:

    angry     fast (230 wpm), raised pitch (65)
    sad       slow (100 wpm), low pitch (15)
    neutral   moderate (160 wpm), middle pitch (45)
    positive  lively (180 wpm), high pitch (90)

jittered per sentence (±10 wpm, ±5 pitch), spoken by four espeak-ng voices. Loudness is no
cue: the synthesiser gives every clip a random peak gain (export.synth). It recognises
espeak-ng's speaking rate and pitch, not human emotion.
``python scripts/train_demo_emotion.py --out demo/model [--seed 0]`` writes
``demo_gigaam_emo_ru.ckpt``, ``emotion_training_report.json`` and a few held-out clips per
style (``emotion_clips/``, the export verifies on them) into ``--out``, after reloading the
checkpoint through ``export.gigaam_emo`` and checking held-out sentences (never trained on).
Seeded and deterministic (one torch thread); 70-100 s on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from asr.config import GigaamMelConfig
from asr.emotion import pad_features
from asr.frontend import make_frontend
from omegaconf import DictConfig
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python scripts/train_demo_emotion.py`
    sys.path.insert(0, str(REPO_ROOT))

from export.conformer import ConformerSpec  # noqa: E402
from export.gigaam import FILTERBANK_KEY, WINDOW_KEY  # noqa: E402
from export.gigaam_emo import EmotionModel, load_gigaam_emo  # noqa: E402
from export.synth import FloatArray, Voice, synthesize_clips, write_wav  # noqa: E402
from scripts.train_demo_conformer import gigaam_cfg as conformer_cfg  # noqa: E402
from scripts.train_demo_conformer import torchaudio_buffers  # noqa: E402
from scripts.train_demo_model import (  # noqa: E402
    PHRASES,
    Example,
    deterministic,
    length_batches,
)

MODEL_FILE = "demo_gigaam_emo_ru.ckpt"
MODEL_NAME = "demo_gigaam_emo_ru"
REPORT_FILE = "emotion_training_report.json"
CLIPS_DIR = "emotion_clips"
# GigaAM-Emo's front end (GigaAM v1's): 25 ms windows every 10 ms, centred, 64 HTK mel bins.
FRONTEND = GigaamMelConfig(n_fft=400, win_length=400, hop_length=160, n_mels=64, center=True)


@dataclass(frozen=True)
class Style:
    label: str  # the Dusha class it stands for
    wpm: int
    pitch: int


STYLES: tuple[Style, ...] = (
    Style("angry", 230, 65),
    Style("sad", 100, 15),
    Style("neutral", 160, 45),
    Style("positive", 180, 90),
)
LABELS: tuple[str, ...] = tuple(style.label for style in STYLES)
VARIANTS: tuple[str, ...] = ("m1", "m3", "m5", "f2")
WPM_JITTER: tuple[int, ...] = (-10, 0, 10)
PITCH_JITTER: tuple[int, ...] = (-5, 5, 0)
TRAIN_PHRASES: tuple[str, ...] = PHRASES[:30]
# Sentences no training clip says: the held-out check, and the test's.
HELDOUT_PHRASES: tuple[str, ...] = (
    "завтра мы поедем на дачу",
    "я забыл ключи дома",
    "поезд опаздывает на час",
    "сегодня очень холодно",
    "мне нужно подумать",
    "это была отличная идея",
    "он опять не позвонил",
    "давай встретимся у метро",
)
# Held-out clips per style written for the export's verification.
EXPORT_CLIPS_PER_STYLE = 4


@dataclass(frozen=True)
class Settings:
    epochs: int = 14
    batch_size: int = 24
    lr: float = 3e-3
    warmup_steps: int = 40
    weight_decay: float = 1e-2
    seed: int = 0


def encoder_spec(d_model: int = 48) -> ConformerSpec:
    """GigaAM v1's layout at ~0.17 M parameters: conv2d subsampling x4 (kernel 3), 2 layers,
    4 heads, relative-position attention, conv kernel 15 with batch norm. The subsampling
    (d_model channels over every mel bin) is most of a step: d_model 64 costs 1.4x as much."""
    return ConformerSpec(
        feat_in=FRONTEND.n_mels,
        n_layers=2,
        d_model=d_model,
        n_heads=4,
        num_classes=len(LABELS),
        conv_kernel_size=15,
        conv_norm="batch_norm",
        attention="rel_pos",
        subsampling="conv2d",
        subsampling_kernel=3,
    )


def voices(index: int) -> list[tuple[Style, Voice]]:
    """Every style in every variant, jittered by the phrase's index (deterministic)."""
    wpm, pitch = WPM_JITTER[index % 3], PITCH_JITTER[(index // 3) % 3]
    return [(s, Voice(v, s.wpm + wpm, s.pitch + pitch)) for s in STYLES for v in VARIANTS]


def styled_clips(phrases: Sequence[str], seed: int) -> list[tuple[str, str, FloatArray]]:
    """(label, voice label, audio) for every phrase × style × variant."""
    clips = []
    for index, phrase in enumerate(phrases):
        styled = voices(index)
        spoken = synthesize_clips([phrase], [voice for _, voice in styled], seed=seed)
        for (_, audio), (style, voice) in zip(spoken, styled, strict=True):
            clips.append((style.label, voice.label, audio))
    return clips


def examples(clips: Sequence[tuple[str, str, FloatArray]]) -> list[Example]:
    frontend = make_frontend(FRONTEND)
    return [
        Example(label, voice, torch.from_numpy(frontend(audio)), torch.tensor(LABELS.index(label)))
        for label, voice, audio in clips
    ]


def train(model: EmotionModel, data: Sequence[Example], settings: Settings) -> list[float]:
    """AdamW, linear warm-up then cosine decay, cross-entropy on the logits; epoch losses."""
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    steps = settings.epochs * -(-len(data) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / settings.warmup_steps)
            * 0.5
            * (1.0 + np.cos(np.pi * min(step, steps) / steps))
        ),
    )
    losses = []
    started = time.monotonic()
    for epoch in range(settings.epochs):
        model.train()
        total = 0.0
        for batch in length_batches(data, settings.batch_size, generator):
            padded, frames = pad_features([example.features.numpy() for example in batch])
            features, lengths = torch.from_numpy(padded), torch.from_numpy(frames)
            targets = torch.stack([example.targets for example in batch])
            loss = nn.functional.cross_entropy(model.logits(features, lengths), targets)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(data))
        elapsed = time.monotonic() - started
        print(f"epoch {epoch + 1:2d}  loss {losses[-1]:.4f}  {elapsed:5.1f}s", flush=True)
    model.eval()
    return losses


def gigaam_cfg(spec: ConformerSpec) -> dict[str, Any]:
    """GigaAM-Emo's cfg: v1's two-key preprocessor, the encoder, the head, the class names."""
    return {
        "sample_rate": FRONTEND.sample_rate,
        "preprocessor": {
            "_target_": "gigaam.preprocess.FeatureExtractor",
            "sample_rate": FRONTEND.sample_rate,
            "features": FRONTEND.n_mels,
        },
        # The demo Conformer's encoder section, every option explicit (conv2d, rel_pos, BN).
        "encoder": conformer_cfg(spec)["encoder"],
        "head": {
            "_target_": "torch.nn.Linear",
            "in_features": spec.d_model,
            "out_features": len(LABELS),
        },
        "id2name": list(LABELS),
        "model_name": MODEL_NAME,
        "demo_model_note": (
            "Demo classifier trained by scripts/train_demo_emotion.py on espeak-ng speaking "
            "styles named after Dusha's classes; not an emotion recogniser for real speech."
        ),
    }


def save(path: Path, spec: ConformerSpec, model: EmotionModel) -> None:
    window, fb = torchaudio_buffers(FRONTEND)
    state = {WINDOW_KEY: window, FILTERBANK_KEY: fb}
    state.update({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "cfg": DictConfig(gigaam_cfg(spec))}, path)


def accuracy(path: Path, clips: Sequence[tuple[str, str, FloatArray]]) -> float:
    """Held-out accuracy of the checkpoint as the exporter reloads it."""
    source = load_gigaam_emo(path)
    frontend = make_frontend(source.frontend)
    right = 0
    for label, _, audio in clips:
        matrix = torch.from_numpy(frontend(audio))[None]
        probs = source.probabilities(matrix, torch.tensor([matrix.shape[2]]))
        right += source.labels[int(probs.argmax())] == label
    return right / len(clips)


def write_export_clips(directory: Path, clips: Sequence[tuple[str, str, FloatArray]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.wav"):
        old.unlink()
    for label in LABELS:
        mine = [clip for clip in clips if clip[0] == label][:: len(VARIANTS) + 1]
        for index, (_, _, audio) in enumerate(mine[:EXPORT_CLIPS_PER_STYLE]):
            write_wav(directory / f"{label}_{index}.wav", audio)


def run(out_dir: Path, settings: Settings, d_model: int) -> int:
    started = time.monotonic()
    # One thread: the same weights on any machine (a thread count changes float summation
    # order), and no spinning worker threads when the machine is busy (2 threads took 4x as
    # long as 1 next to another job on this 2-core machine).
    torch.set_num_threads(1)
    train_clips = styled_clips(TRAIN_PHRASES, settings.seed)
    heldout = styled_clips(HELDOUT_PHRASES, settings.seed + 1)
    data = examples(train_clips)
    synthesis_seconds = time.monotonic() - started
    print(f"{len(data)} training / {len(heldout)} held-out clips in {synthesis_seconds:.0f}s")
    spec = encoder_spec(d_model)
    with deterministic(settings.seed):
        model = EmotionModel(spec, len(LABELS))
        losses = train(model, data, settings)
    path = out_dir / MODEL_FILE
    save(path, spec, model)
    heldout_accuracy = accuracy(path, heldout)
    write_export_clips(out_dir / CLIPS_DIR, heldout)
    report = {
        "model_file": MODEL_FILE,
        "labels": list(LABELS),
        "styles": [asdict(style) for style in STYLES],
        "variants": list(VARIANTS),
        "architecture": asdict(spec),
        "frontend": asdict(FRONTEND),
        "settings": asdict(settings),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_clips": len(data),
        "heldout_clips": len(heldout),
        "epoch_losses": [round(loss, 5) for loss in losses],
        "reloaded_checkpoint_heldout_accuracy": round(heldout_accuracy, 4),
        "checkpoint_bytes": path.stat().st_size,
        "synthesis_seconds": round(synthesis_seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "process_cpu_seconds": round(time.process_time(), 1),
    }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}: held-out accuracy {heldout_accuracy:.2%}, {report['total_seconds']}s")
    return 0 if heldout_accuracy >= 0.9 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model directory (demo/model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=Settings.epochs)
    parser.add_argument("--d-model", type=int, default=48)
    args = parser.parse_args(argv)
    settings = Settings(epochs=args.epochs, seed=args.seed)
    return run(args.out, settings, args.d_model)


if __name__ == "__main__":
    raise SystemExit(main())
