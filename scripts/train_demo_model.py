"""Train the small Russian demo QuartzNet on espeak-ng speech and save it as a real .nemo.

The model exists so tests and the README demo have a *trained* checkpoint: it must keep
its transcripts through the numpy front end, ONNX export and int8 quantisation. It learns
~60 everyday phrases spoken by several espeak-ng voices and is validated on voice
variants and speeds it never heard.

    python scripts/train_demo_model.py --out demo/model [--minutes 30] [--seed 0]

writes ``<out>/demo_quartznet_ru.nemo`` (NeMo layout, preprocessor buffers included),
``<out>/training_report.json`` and held-out clips with a NeMo manifest in
``<out>/../audio/``, then reloads the checkpoint and checks every held-out transcript.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import soundfile as sf
import torch
from asr.frontend import Frontend, NemoMelFrontend
from asr.resample import resample
from torch import Tensor, nn

from export.checkpoint import build_quartznet, load_checkpoint, write_nemo
from export.nemo_config import quartznet_config
from export.nemo_preprocessor import frontend_from_nemo, preprocessor_state
from export.quartznet import JasperBlockSpec, QuartzNetCTC, QuartzNetSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python scripts/train_demo_model.py`
    sys.path.insert(0, str(REPO_ROOT))

from export.synth import (  # noqa: E402
    SAMPLE_RATE,
    FloatArray,
    Voice,
    synthesize_clips,
    write_wav,
)
from export.verify import edit_distance  # noqa: E402

MODEL_FILE = "demo_quartznet_ru.nemo"
REPORT_FILE = "training_report.json"
MANIFEST_FILE = "manifest.jsonl"

# Golos QuartzNet's labels: space + а..я without ё (U+0451 lies outside а..я); blank is last.
VOCABULARY: tuple[str, ...] = (" ", *(chr(code) for code in range(ord("а"), ord("я") + 1)))
BLANK = len(VOCABULARY)

PHRASES: tuple[str, ...] = (
    "привет",
    "сколько времени",
    "какая сегодня погода",
    "включи свет на кухне",
    "выключи свет в спальне",
    "поставь будильник на семь утра",
    "позвони маме",
    "открой карту москвы",
    "расскажи новости",
    "включи музыку",
    "сделай погромче",
    "сделай потише",
    "следующий трек",
    "останови воспроизведение",
    "напомни купить хлеб",
    "один два три четыре пять",
    "шесть семь восемь девять десять",
    "сто двадцать пять",
    "тысяча девятьсот девяносто",
    "доброе утро",
    "спокойной ночи",
    "спасибо большое",
    "до свидания",
    "как дела",
    "что ты умеешь",
    "найди ближайшую аптеку",
    "вызови такси до вокзала",
    "сколько стоит билет до казани",
    "курс доллара на сегодня",
    "запиши меня к врачу",
    "какой сегодня день недели",
    "сколько градусов на улице",
    "будет ли завтра дождь",
    "открой почту",
    "прочитай сообщение",
    "отправь сообщение папе",
    "включи радио",
    "покажи фотографии",
    "где находится екатеринбург",
    "расстояние до владивостока",
    "поезд до нижнего новгорода",
    "погода в сочи на выходные",
    "самара ростов уфа",
    "красноярск воронеж пермь",
    "Ещё раз, пожалуйста!",
    "отмена",
    "да конечно",
    "нет спасибо",
    "включи кондиционер",
    "закрой шторы",
    "сколько будет два плюс два",
    "таймер на десять минут",
    "добавь молоко в список покупок",
    "какие у меня планы на завтра",
    "поставь на паузу",
    "громкость на пятьдесят процентов",
    "включи первый канал",
    "новосибирск омск тюмень",
    "какая погода будет завтра в москве",
    "сколько стоит билет до Санкт-Петербурга",
)

# Training voices: 48 espeak-ng variants, each at one speed and pitch (cycled, so every
# speed meets several timbres); each epoch trains on a random half of the clips. Validation
# uses variants and speeds never used in training.
TRAIN_VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f5", "klatt",
    "klatt2", "klatt3", "klatt4", "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "anika",
    "Denis", "Diogo", "Gene", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael",
    "Mike", "Nguyen", "aunty", "belinda", "benjamin", "boris", "david", "ed", "edward",
    "grandpa", "gustave", "iven", "john", "linda", "max", "norbert",
)  # fmt: skip
TRAIN_SPEEDS: tuple[int, ...] = (125, 140, 155, 165, 185, 200)
TRAIN_PITCHES: tuple[int, ...] = (35, 45, 55, 65, 75)
EPOCH_EXAMPLES = 1440
VAL_VOICES: tuple[Voice, ...] = (Voice("m4", 145, 45), Voice("f4", 175, 55))
# Share of training clips replaced by a telephone-band (8 kHz) copy, so the model also
# transcribes audio that reaches it at 8 kHz.
NARROWBAND_FRACTION = 0.4
NARROWBAND_RATE = 8000
# Share of training clips played faster or slower (tempo and pitch), and by how much.
SPEED_PERTURB_FRACTION = 0.5
SPEED_FACTORS: tuple[float, ...] = (0.9, 0.95, 1.05, 1.1)
# Held-out clips written to demo/audio: (phrase, validation voice index).
DEMO_CLIPS: tuple[tuple[str, int], ...] = (
    ("включи свет на кухне", 0),
    ("поставь будильник на семь утра", 1),
    ("сколько стоит билет до казани", 0),
    ("погода в сочи на выходные", 1),
)


# Acceptance: every demo clip exact, and at most this CER over all held-out clips.
MAX_HELDOUT_CER = 0.01

# Anything ``train`` can fit: a fresh CTC model, ``model(features [B, F, T], lengths [B])``
# → ``(log_probs [B, T', len(VOCABULARY) + 1], out_lengths [B])``, blank last.
ModelFactory = Callable[[], nn.Module]
# What SpecAugment writes into masked regions (see ``spec_augment``).
MaskFill = Literal["zero", "feature_mean"]


def train_voices() -> list[Voice]:
    return [
        Voice(variant, TRAIN_SPEEDS[i % len(TRAIN_SPEEDS)], TRAIN_PITCHES[i % len(TRAIN_PITCHES)])
        for i, variant in enumerate(TRAIN_VARIANTS)
    ]


def demo_blocks(filters: int = 192, repeat: int = 2, head: int = 256) -> list[JasperBlockSpec]:
    """A small QuartzNet: C1 (stride 2), four residual blocks of ``repeat`` separable
    convolutions, C2 (dilated), C3 (1x1).

    Kernels are QuartzNet's shape scaled down: short phrases need less context, and CPU
    depthwise convolutions cost time in proportion to their width. Wider blocks with two
    repeats generalised to unheard voices better than narrower ones with three, at the
    same training time. No dropout: SpecAugment regularises enough, dropout only slowed
    convergence.
    """
    return [
        JasperBlockSpec(filters, 1, 33, stride=2),
        JasperBlockSpec(filters, repeat, 21, residual=True),
        JasperBlockSpec(filters, repeat, 25, residual=True),
        JasperBlockSpec(filters, repeat, 29, residual=True),
        JasperBlockSpec(filters, repeat, 33, residual=True),
        JasperBlockSpec(filters, 1, 29, dilation=2),
        JasperBlockSpec(head, 1, 1, separable=False),
    ]


def normalize_text(text: str) -> str:
    """Lower case, ё→е, punctuation dropped (hyphens become spaces), spaces collapsed."""
    text = text.lower().replace("ё", "е").replace("-", " ")
    text = "".join(char for char in text if char in VOCABULARY)
    return re.sub(r" +", " ", text).strip()


def encode(text: str) -> list[int]:
    return [VOCABULARY.index(char) for char in normalize_text(text)]


def greedy_ctc(log_probs: Tensor, length: int) -> str:
    """Argmax per frame, merge repeats, drop blanks."""
    best = log_probs[:length].argmax(dim=-1).tolist()
    tokens = [t for i, t in enumerate(best) if t != BLANK and (i == 0 or t != best[i - 1])]
    return "".join(VOCABULARY[t] for t in tokens)


@dataclass(frozen=True)
class Clip:
    text: str
    audio: FloatArray
    voice: str  # Voice.label, plus "+8k" for telephone-band copies


@dataclass
class Example:
    text: str
    voice: str
    features: Tensor  # [n_mels, T]
    targets: Tensor  # [L] int64


def synthesize_set(voices: Sequence[Voice], seed: int) -> list[Clip]:
    """Every phrase in every voice, phrase-major."""
    spoken = synthesize_clips(PHRASES, voices, seed=seed)
    labels = [voice.label for _ in PHRASES for voice in voices]
    return [Clip(text, audio, label) for (text, audio), label in zip(spoken, labels, strict=True)]


def narrowband(audio: FloatArray, *, decimate: bool) -> FloatArray:
    """Through 8 kHz and back: properly low-passed, or by dropping every other sample
    (aliasing included, as a careless client would send it)."""
    low = audio[::2] if decimate else resample(audio, SAMPLE_RATE, NARROWBAND_RATE)
    return resample(low, NARROWBAND_RATE, SAMPLE_RATE)


def narrowband_clip(clip: Clip, *, decimate: bool) -> Clip:
    return Clip(clip.text, narrowband(clip.audio, decimate=decimate), f"{clip.voice}+8k")


def change_speed(audio: FloatArray, factor: float) -> FloatArray:
    """Play ``factor`` times faster, tempo and pitch together (speed perturbation)."""
    return resample(audio, round(SAMPLE_RATE * factor), SAMPLE_RATE)


def augment_clips(clips: Sequence[Clip], seed: int) -> list[Clip]:
    """Seeded speed perturbation and telephone-band copies for shares of the clips."""
    rng = np.random.default_rng(seed)
    augmented = []
    for original in clips:
        speed_draw, band_draw, decimate_draw = rng.random(3)
        factor = SPEED_FACTORS[int(rng.integers(len(SPEED_FACTORS)))]
        clip = original
        if speed_draw < SPEED_PERTURB_FRACTION:
            clip = Clip(clip.text, change_speed(clip.audio, factor), f"{clip.voice}x{factor}")
        if band_draw < NARROWBAND_FRACTION:
            clip = narrowband_clip(clip, decimate=bool(decimate_draw < 0.5))
        augmented.append(clip)
    return augmented


def make_examples(clips: Sequence[Clip], frontend: Frontend) -> list[Example]:
    """Features once per clip with the runtime's numpy front end."""
    return [
        Example(
            text=normalize_text(clip.text),
            voice=clip.voice,
            features=torch.from_numpy(frontend(clip.audio)),
            targets=torch.tensor(encode(clip.text), dtype=torch.int64),
        )
        for clip in clips
    ]


def training_sets(frontend: Frontend, seed: int) -> tuple[list[Clip], list[Example], list[Example]]:
    """The augmented training clips and the held-out validation clips (seeded ``seed + 1``) as
    examples: (validation clips, training examples, validation examples)."""
    train_clips = augment_clips(synthesize_set(train_voices(), seed), seed)
    val_clips = validation_clips(seed + 1)
    return val_clips, make_examples(train_clips, frontend), make_examples(val_clips, frontend)


def collate(examples: Sequence[Example]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Padded features [B, F, T], lengths [B], concatenated targets, target lengths [B]."""
    lengths = torch.tensor([e.features.shape[1] for e in examples], dtype=torch.int64)
    features = torch.zeros(len(examples), examples[0].features.shape[0], int(lengths.max()))
    for row, example in enumerate(examples):
        features[row, :, : example.features.shape[1]] = example.features
    targets = torch.cat([e.targets for e in examples])
    target_lengths = torch.tensor([len(e.targets) for e in examples], dtype=torch.int64)
    return features, lengths, targets, target_lengths


def length_batches(
    examples: Sequence[Example], batch_size: int, generator: torch.Generator
) -> list[list[Example]]:
    """Batches of similar length (little padding), in a random order."""
    order = sorted(range(len(examples)), key=lambda i: examples[i].features.shape[1])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [[examples[i] for i in batches[b]] for b in shuffled]


def spec_augment(
    features: Tensor,
    lengths: Tensor,
    generator: torch.Generator,
    *,
    freq_masks: int = 2,
    freq_width: int = 8,
    time_masks: int = 2,
    time_width: int = 10,
    fill: MaskFill = "zero",
) -> Tensor:
    """SpecAugment: mask random mel bands and frame spans of each clip's valid frames.

    ``zero`` suits per-feature-normalised features (NeMo), where 0 is each mel bin's mean.
    ``feature_mean`` writes each bin's own mean over the clip's valid frames, which is the
    same thing for features that are not normalised (GigaAM's raw log-mel): a masked span
    looks like the clip's average spectrum, not like silence (log 1e-9) or like a loud
    frame (log 1 = 0). The random draws do not depend on ``fill``.
    """
    out = features.clone()
    n_mels = features.shape[1]
    for row in range(features.shape[0]):
        length = int(lengths[row])
        if fill == "zero":
            value = torch.zeros(n_mels, 1)
        else:
            value = features[row, :, :length].mean(dim=1, keepdim=True)
        for _ in range(freq_masks):
            width = int(torch.randint(0, freq_width + 1, (1,), generator=generator))
            start = int(torch.randint(0, n_mels - width + 1, (1,), generator=generator))
            out[row, start : start + width, :length] = value[start : start + width]
        for _ in range(time_masks):
            width = int(
                torch.randint(0, min(time_width, length // 8) + 1, (1,), generator=generator)
            )
            start = int(torch.randint(0, length - width + 1, (1,), generator=generator))
            out[row, :, start : start + width] = value
    return out


@dataclass
class TrainSettings:
    minutes: float = 8.0
    max_epochs: int = 28  # also the length of the cosine learning-rate schedule
    batch_size: int = 16
    lr: float = 6e-3
    weight_decay: float = 1e-3
    warmup_steps: int = 100
    max_steps: int | None = None  # for smoke tests
    # Clips per epoch, drawn afresh each epoch (None: all of them).
    epoch_examples: int | None = None
    spec_augment: bool = True
    mask_fill: MaskFill = "zero"
    # Validation and the saved model use an exponential moving average of the weights:
    # smoother than the last step's weights, and better on unheard voices.
    ema_decay: float = 0.995
    seed: int = 0


@dataclass
class Evaluation:
    cer: float
    exact: int
    total: int
    loss: float
    errors: list[tuple[str, str]] = field(default_factory=list)  # (reference, hypothesis)


@dataclass
class TrainResult:
    model: nn.Module
    steps: int
    epochs: int
    seconds: float
    losses: list[float]  # mean training loss per epoch (or per step in step-limited runs)
    step_losses: list[float]
    validation: Evaluation | None


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seeded, deterministic torch inside the block; the caller's RNG and mode restored."""
    previous = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous)


Batch = tuple[Tensor, Tensor, Tensor, Tensor]  # collate(): features, lengths, targets, lengths


class Objective(Protocol):
    """What ``train`` minimises and how it reads a model's hypotheses."""

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The training loss of a batch (a scalar)."""

    def score(self, model: nn.Module, batch: Batch) -> tuple[float, list[str]]:
        """The batch's summed per-utterance loss, and one hypothesis per utterance."""


class CtcObjective:
    """CTC (blank last): the mean over the batch of the length-normalised loss for
    training; summed per-utterance losses and greedy CTC for validation."""

    def __init__(self) -> None:
        self.mean = nn.CTCLoss(blank=BLANK, zero_infinity=True)
        self.total = nn.CTCLoss(blank=BLANK, zero_infinity=True, reduction="sum")

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        features, lengths, targets, target_lengths = batch
        log_probs, out_lengths = model(features, lengths)
        loss: Tensor = self.mean(log_probs.transpose(0, 1), targets, out_lengths, target_lengths)
        return loss

    def score(self, model: nn.Module, batch: Batch) -> tuple[float, list[str]]:
        features, lengths, targets, target_lengths = batch
        log_probs, out_lengths = model(features, lengths)
        total = float(self.total(log_probs.transpose(0, 1), targets, out_lengths, target_lengths))
        rows = range(log_probs.shape[0])
        return total, [greedy_ctc(log_probs[r], int(out_lengths[r])) for r in rows]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    examples: Sequence[Example],
    batch_size: int = 64,
    objective: Objective | None = None,
) -> Evaluation:
    objective = objective or CtcObjective()
    was_training = model.training
    model.eval()
    errors: list[tuple[str, str]] = []
    distance = characters = 0
    loss = 0.0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch_loss, hypotheses = objective.score(model, collate(chunk))
        loss += batch_loss
        for example, hypothesis in zip(chunk, hypotheses, strict=True):
            distance += edit_distance(example.text, hypothesis)
            characters += len(example.text)
            if hypothesis != example.text:
                errors.append((example.text, hypothesis))
    model.train(was_training)
    return Evaluation(
        cer=distance / max(characters, 1),
        exact=len(examples) - len(errors),
        total=len(examples),
        loss=loss / max(len(examples), 1),
        errors=errors,
    )


def learning_rate(step: int, total_steps: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to 2% of the peak over the planned steps."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    decay_steps = max(1, total_steps - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / decay_steps)
    return settings.lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress)))


class WeightAverage:
    """Exponential moving average of a model's weights and batch-norm statistics."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.state = {key: value.detach().clone() for key, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        # A short memory at first, so the random initialisation fades out quickly.
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.state[key].lerp_(value, 1.0 - decay)
            else:
                self.state[key].copy_(value)


@dataclass
class _Run:
    """Mutable training state shared by the epochs of one ``train`` call."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    average: WeightAverage
    settings: TrainSettings
    generator: torch.Generator
    total_steps: int
    deadline: float
    objective: Objective = field(default_factory=CtcObjective)
    step: int = 0
    step_losses: list[float] = field(default_factory=list)

    def out_of_budget(self) -> bool:
        limit = self.settings.max_steps
        return (limit is not None and self.step >= limit) or time.monotonic() > self.deadline

    def train_step(self, batch: Sequence[Example]) -> float:
        features, lengths, targets, target_lengths = collate(batch)
        if self.settings.spec_augment:
            features = spec_augment(features, lengths, self.generator, fill=self.settings.mask_fill)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.total_steps, self.settings)
        loss = self.objective.loss(self.model, (features, lengths, targets, target_lengths))
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        self.average.update(self.model)
        self.step += 1
        self.step_losses.append(loss.item())
        return self.step_losses[-1]

    def train_epoch(self, examples: Sequence[Example]) -> float:
        """Mean loss of the epoch's steps; stops mid-epoch when the budget runs out."""
        self.model.train()
        count = self.settings.epoch_examples
        if count is not None and count < len(examples):
            chosen = torch.randperm(len(examples), generator=self.generator)[:count].tolist()
            examples = [examples[i] for i in chosen]
        losses = []
        for batch in length_batches(examples, self.settings.batch_size, self.generator):
            losses.append(self.train_step(batch))
            if self.out_of_budget():
                break
        return float(np.mean(losses))


def train(
    model_factory: QuartzNetSpec | ModelFactory,
    train_set: Sequence[Example],
    val_set: Sequence[Example],
    settings: TrainSettings,
    log: bool = True,
    *,
    objective: Objective | None = None,
) -> TrainResult:
    """Training (CTC unless another ``objective``) until validation is exact, the time
    budget ends or max_epochs pass.

    ``model_factory`` builds the model (called twice under the seed: the trained copy and
    the averaged one); a ``QuartzNetSpec`` means ``QuartzNetCTC(spec)``. Returns a model in
    eval mode with the averaged weights of its best validation (lowest CER, then lowest
    validation loss). Deterministic for a given seed and thread count.
    """
    if isinstance(model_factory, QuartzNetSpec):
        spec = model_factory

        def factory() -> nn.Module:
            return QuartzNetCTC(spec)
    else:
        factory = model_factory
    started = time.monotonic()
    with deterministic(settings.seed):
        model, averaged = factory(), factory().eval()
        epoch_size = min(settings.epoch_examples or len(train_set), len(train_set))
        steps_per_epoch = math.ceil(epoch_size / settings.batch_size)
        run = _Run(
            model=model,
            optimizer=torch.optim.AdamW(
                model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
            ),
            average=WeightAverage(model, settings.ema_decay),
            settings=settings,
            generator=torch.Generator().manual_seed(settings.seed),
            total_steps=settings.max_steps or steps_per_epoch * settings.max_epochs,
            deadline=started + settings.minutes * 60.0,
            objective=objective or CtcObjective(),
        )
        epoch_losses: list[float] = []
        best: tuple[tuple[float, float], dict[str, Tensor], Evaluation] | None = None
        while len(epoch_losses) < settings.max_epochs and not run.out_of_budget():
            epoch_losses.append(run.train_epoch(train_set))
            if not val_set:
                continue
            averaged.load_state_dict(run.average.state)
            evaluation = evaluate(averaged, val_set, objective=run.objective)
            if best is None or (evaluation.cer, evaluation.loss) < best[0]:
                best = (
                    (evaluation.cer, evaluation.loss),
                    copy.deepcopy(averaged.state_dict()),
                    evaluation,
                )
            if log:
                print(_progress(len(epoch_losses), run, epoch_losses[-1], evaluation, started))
            if evaluation.cer == 0.0:
                break
    averaged.load_state_dict(best[1] if best else run.average.state)
    return TrainResult(
        model=averaged,
        steps=run.step,
        epochs=len(epoch_losses),
        seconds=time.monotonic() - started,
        losses=epoch_losses,
        step_losses=run.step_losses,
        validation=best[2] if best else None,
    )


def _progress(epoch: int, run: _Run, loss: float, evaluation: Evaluation, started: float) -> str:
    return (
        f"epoch {epoch:3d}  step {run.step:5d}  loss {loss:7.3f}  "
        f"val loss {evaluation.loss:7.3f}  val CER {evaluation.cer:6.2%}  "
        f"exact {evaluation.exact:3d}/{evaluation.total}  "
        f"lr {run.optimizer.param_groups[0]['lr']:.2e}  {time.monotonic() - started:4.0f}s"
    )


def model_config(blocks: Sequence[JasperBlockSpec], note: str | None = None) -> dict[str, Any]:
    config = quartznet_config(VOCABULARY, blocks)
    if note:
        config["demo_model_note"] = note
    return config


def save_nemo(path: Path, config: dict[str, Any], model: nn.Module) -> None:
    """The real .nemo layout: model weights plus the preprocessor's window/fb buffers."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.update(preprocessor_state(frontend_from_nemo(config)))
    write_nemo(path, config, state)


def transcribe(model: nn.Module, frontend: Frontend, audio: FloatArray) -> str:
    features = torch.from_numpy(frontend(audio))[None]
    with torch.no_grad():
        log_probs, lengths = model(features, torch.tensor([features.shape[2]]))
    return greedy_ctc(log_probs[0], int(lengths[0]))


def write_demo_audio(audio_dir: Path, clips: Sequence[Clip]) -> None:
    """PCM16 WAVs plus a NeMo manifest (paths relative to the manifest)."""
    audio_dir.mkdir(parents=True, exist_ok=True)
    for stale in audio_dir.glob("heldout_*.wav"):
        stale.unlink()
    lines = []
    for index, clip in enumerate(clips, 1):
        name = f"heldout_{index:02d}.wav"
        write_wav(audio_dir / name, clip.audio)
        entry = {
            "audio_filepath": name,
            "text": normalize_text(clip.text),
            "duration": round(len(clip.audio) / SAMPLE_RATE, 3),
            "espeak_voice": f"ru+{clip.voice}",
        }
        lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
    (audio_dir / MANIFEST_FILE).write_text("".join(lines), encoding="utf-8")


def read_manifest(manifest: Path) -> list[tuple[Path, str]]:
    entries = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            entries.append((manifest.parent / entry["audio_filepath"], str(entry["text"])))
    return entries


def read_wav(path: Path) -> FloatArray:
    audio, rate = sf.read(str(path), dtype="float32")
    if rate != SAMPLE_RATE or audio.ndim != 1:
        raise RuntimeError(f"{path}: expected 16 kHz mono, got {rate} Hz shape {audio.shape}")
    return np.asarray(audio, dtype=np.float32)


def manifest_checks(manifest: Path) -> list[Clip]:
    """The written demo clips as read back, and as an 8 kHz int16 client would send them."""
    checks = []
    for path, text in read_manifest(manifest):
        audio = read_wav(path)
        as_8k_int16 = (audio[::2] * 32767).astype(np.int16).astype(np.float32) / 32768
        checks.append(Clip(text, audio, path.name))
        checks.append(Clip(text, resample(as_8k_int16, NARROWBAND_RATE, SAMPLE_RATE), "8k"))
    return checks


def verify_checkpoint(path: Path, clips: Sequence[Clip]) -> list[tuple[Clip, str]]:
    """Reload the .nemo as a consumer would; return the clips it gets wrong, with hypotheses."""
    checkpoint = load_checkpoint(path)
    missing = {"window", "fb"} - set(checkpoint.preprocessor_buffers)
    if missing:
        raise RuntimeError(f"{path} lacks preprocessor buffers {sorted(missing)}")
    model = build_quartznet(checkpoint)
    frontend = NemoMelFrontend(frontend_from_nemo(checkpoint.config))
    mismatches = []
    for clip in clips:
        hypothesis = transcribe(model, frontend, clip.audio)
        if hypothesis != normalize_text(clip.text):
            mismatches.append((clip, hypothesis))
    return mismatches


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def validation_clips(seed: int) -> list[Clip]:
    """Held-out voices, clean and decimated to 8 kHz."""
    clean = synthesize_set(VAL_VOICES, seed)
    return [*clean, *(narrowband_clip(clip, decimate=True) for clip in clean)]


def demo_clips(val_clips: Sequence[Clip]) -> list[Clip]:
    by_key = {(clip.text, clip.voice): clip for clip in val_clips}
    return [by_key[text, VAL_VOICES[voice].label] for text, voice in DEMO_CLIPS]


def training_report(
    result: TrainResult,
    settings: TrainSettings,
    blocks: Sequence[JasperBlockSpec],
    counts: dict[str, int],
    seconds: float,
) -> dict[str, Any]:
    architecture = {"blocks": [block.to_nemo() for block in blocks]}
    return report_fields(result, settings, architecture, counts, seconds)


def report_fields(
    result: TrainResult,
    settings: TrainSettings,
    architecture: dict[str, Any],
    counts: dict[str, int],
    seconds: float,
) -> dict[str, Any]:
    """The training report both demo models write: run, data and validation facts."""
    validation = result.validation
    return {
        "model_file": architecture.pop("model_file", MODEL_FILE),
        "seed": settings.seed,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "parameters": parameter_count(result.model),
        **architecture,
        "steps": result.steps,
        "epochs": result.epochs,
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(seconds, 1),
        "final_train_loss": round(result.losses[-1], 4),
        "validation_loss": round(validation.loss, 4) if validation else None,
        "validation_cer": validation.cer if validation else None,
        "validation_exact": f"{validation.exact}/{validation.total}" if validation else None,
        "settings": asdict(settings),
        **counts,
        "train_voices": [voice.label for voice in train_voices()],
        "train_narrowband_fraction": NARROWBAND_FRACTION,
        "train_speed_perturbation": {"fraction": SPEED_PERTURB_FRACTION, "factors": SPEED_FACTORS},
        "validation_voices": [voice.label for voice in VAL_VOICES],
        "validation_narrowband": "every validation clip also decimated to 8 kHz and back",
        "vocabulary": list(VOCABULARY),
        "phrases": [normalize_text(phrase) for phrase in PHRASES],
    }


def run(out_dir: Path, audio_dir: Path, settings: TrainSettings) -> int:
    wall_start = time.monotonic()
    torch.set_num_threads(2)
    blocks = demo_blocks()
    config = model_config(
        blocks,
        note=(
            "Demo model trained on espeak-ng synthetic Russian speech by "
            "scripts/train_demo_model.py; it only knows its fixed phrase list."
        ),
    )
    frontend = NemoMelFrontend(frontend_from_nemo(config))
    spec = QuartzNetSpec.from_nemo_config(config)

    val_clips, train_set, val_set = training_sets(frontend, settings.seed)
    print(
        f"{len(train_set)} training / {len(val_set)} validation clips ready in "
        f"{time.monotonic() - wall_start:.0f}s; model: {parameter_count(QuartzNetCTC(spec)):,} "
        "parameters",
        flush=True,
    )

    result = train(spec, train_set, val_set, settings)
    model_path = out_dir / MODEL_FILE
    save_nemo(model_path, config, result.model)
    write_demo_audio(audio_dir, demo_clips(val_clips))
    checks = [*val_clips, *manifest_checks(audio_dir / MANIFEST_FILE)]
    mismatches = verify_checkpoint(model_path, checks)

    counts = {"train_clips": len(train_set), "validation_clips": len(val_set)}
    seconds = time.monotonic() - wall_start
    report = training_report(result, settings, blocks, counts, seconds)
    report["reloaded_checkpoint_mismatches"] = len(mismatches)
    report["reloaded_checkpoint_heldout_cer"] = round(result_cer(checks, mismatches), 5)
    report_text = json.dumps(report, ensure_ascii=False, indent=2) + "\n"
    (out_dir / REPORT_FILE).write_text(report_text, encoding="utf-8")
    size_mb = model_path.stat().st_size / 1e6
    print(f"wrote {model_path} ({size_mb:.2f} MB); {seconds:.0f}s in all")
    return acceptance(checks, manifest_checks(audio_dir / MANIFEST_FILE), mismatches)


def acceptance(
    checks: Sequence[Clip], demo: Sequence[Clip], mismatches: Sequence[tuple[Clip, str]]
) -> int:
    """Exit status of a demo training run: 0 if the reloaded checkpoint gets every demo clip
    exact and the held-out CER is within MAX_HELDOUT_CER; prints what it got wrong."""
    demo_keys = {(clip.text, clip.voice) for clip in demo}
    demo_misses = [(c, h) for c, h in mismatches if (c.text, c.voice) in demo_keys]
    heldout_cer = result_cer(checks, mismatches)
    for clip, hypothesis in mismatches[:10]:
        print(f"  {clip.voice}: {clip.text!r} -> {hypothesis!r}", file=sys.stderr)
    if demo_misses or heldout_cer > MAX_HELDOUT_CER:
        print(
            f"error: the reloaded checkpoint misses {len(demo_misses)} demo clips and has "
            f"held-out CER {heldout_cer:.2%} (limit {MAX_HELDOUT_CER:.0%}); train longer "
            "(--minutes) or try another --seed",
            file=sys.stderr,
        )
        return 1
    print(
        f"verified: every demo clip exact; {len(checks) - len(mismatches)}/{len(checks)} "
        f"held-out clips exact, held-out CER {heldout_cer:.2%}"
    )
    return 0


def result_cer(checks: Sequence[Clip], mismatches: Sequence[tuple[Clip, str]]) -> float:
    """Character error rate over all held-out clips (the exact ones contribute no errors)."""
    errors = sum(edit_distance(clip.text, hypothesis) for clip, hypothesis in mismatches)
    return errors / max(sum(len(clip.text) for clip in checks), 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model directory (demo/model)")
    parser.add_argument(
        "--audio-out", type=Path, help="held-out clip directory (default: OUT/../audio)"
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
    settings = TrainSettings(minutes=args.minutes, seed=args.seed, epoch_examples=EPOCH_EXAMPLES)
    audio_dir = args.audio_out or args.out.parent / "audio"
    return run(args.out, audio_dir, settings)


if __name__ == "__main__":
    raise SystemExit(main())
