"""Train the small Russian demo Conformer (GigaAM v3 layout) and save it as a GigaAM .ckpt.

The QuartzNet demo's twin: the same espeak-ng phrases, voices, speed and telephone-band
augmentation and held-out clips (scripts/train_demo_model.py), but the model is a
Conformer CTC in GigaAM v3's layout, trained on GigaAM v3's features (the runtime's numpy
front end), and it is saved exactly as upstream publishes checkpoints:
``torch.save({"state_dict": ..., "cfg": omegaconf.DictConfig(...)})`` with upstream's key
names, so ``export.gigaam.load_gigaam`` (and upstream GigaAM itself) reads it.

    python scripts/train_demo_conformer.py --out demo/model [--minutes 30] [--seed 0]

writes ``<out>/demo_gigaam_ru.ckpt`` and ``<out>/conformer_training_report.json``, then
reloads the checkpoint through ``load_gigaam`` and checks every held-out clip, including
the QuartzNet demo's committed clips in ``<out>/../audio`` (written there only if missing),
so both demo models are judged on the same audio.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from asr.config import GigaamMelConfig
from asr.frontend import make_frontend
from omegaconf import DictConfig
from torch import Tensor, nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python scripts/train_demo_conformer.py`
    sys.path.insert(0, str(REPO_ROOT))

from export.conformer import ConformerCTC, ConformerSpec  # noqa: E402
from export.gigaam import FILTERBANK_KEY, WINDOW_KEY, load_gigaam  # noqa: E402
from export.synth import FloatArray  # noqa: E402
from scripts.train_demo_model import (  # noqa: E402
    EPOCH_EXAMPLES,
    MANIFEST_FILE,
    VOCABULARY,
    Clip,
    ModelFactory,
    TrainResult,
    TrainSettings,
    acceptance,
    demo_clips,
    manifest_checks,
    normalize_text,
    parameter_count,
    report_fields,
    result_cer,
    train,
    training_sets,
    transcribe,
    write_demo_audio,
)

MODEL_FILE = "demo_gigaam_ru.ckpt"
MODEL_NAME = "demo_gigaam_ru"
REPORT_FILE = "conformer_training_report.json"

# GigaAM v3's front end: 20 ms windows every 10 ms, not centred, 64 HTK mel bins, the
# window and filterbank rounded to bfloat16 (as v3 stores them); raw log-mel, no norm.
FRONTEND = GigaamMelConfig(
    n_fft=320, win_length=320, hop_length=160, n_mels=64, center=False, bf16_buffers=True
)
# GigaAM's character vocabulary is the QuartzNet demo's: space + а..я without ё, then blank.
NUM_CLASSES = len(VOCABULARY) + 1


@dataclass(frozen=True)
class DemoShape:
    """The sizes we choose; everything else is GigaAM v3's layout.

    d_model 144 / 4 layers / 4 heads (d_k 36) is ~2.1 M parameters (8.4 MB as float32): a
    ~0.1 s training step of 16 clips on 2 cores, so the planned 36 epochs (3240 steps) take
    ~6 minutes on an idle machine; validation is usually exact well before. d_model 96 trains
    as fast per epoch but stayed at 2 held-out errors after all 36 epochs.
    """

    d_model: int = 144
    n_layers: int = 4
    n_heads: int = 4


def conformer_spec(shape: DemoShape = DemoShape()) -> ConformerSpec:
    """GigaAM v3's encoder layout at the demo's size: conv1d subsampling x4 with kernel 5,
    rotary attention, conv module kernel 5 with layer norm, FF expansion 4."""
    return ConformerSpec(
        feat_in=FRONTEND.n_mels,
        n_layers=shape.n_layers,
        d_model=shape.d_model,
        n_heads=shape.n_heads,
        num_classes=NUM_CLASSES,
        ff_expansion_factor=4,
        conv_kernel_size=5,
        conv_norm="layer_norm",
        attention="rotary",
        xscaling=False,
        subsampling="conv1d",
        subsampling_factor=4,
        subsampling_kernel=5,
        pos_emb_max_len=5000,
    )


def conformer_factory(spec: ConformerSpec) -> ModelFactory:
    def build() -> nn.Module:
        return ConformerCTC(spec)

    return build


def train_settings(minutes: float, seed: int) -> TrainSettings:
    """Conformer training: AdamW with a longer warm-up and a lower peak than QuartzNet's.

    With QuartzNet's 6e-3 after 100 warm-up steps the Conformer never learned (validation
    CER still 78 % after 22 epochs); 2e-3 after 400 steps reaches an exact validation set
    in ~23 epochs. Cosine decay over ``max_epochs`` (planned to end inside the budget),
    SpecAugment masks filled with each mel bin's mean (GigaAM features are not normalised,
    so zero is not "no information"), EMA of the weights for validation and the saved model.
    """
    return TrainSettings(
        minutes=minutes,
        max_epochs=36,
        batch_size=16,
        lr=2e-3,
        weight_decay=1e-2,
        warmup_steps=400,
        epoch_examples=EPOCH_EXAMPLES,
        spec_augment=True,
        mask_fill="feature_mean",
        ema_decay=0.995,
        seed=seed,
    )


def gigaam_cfg(spec: ConformerSpec, note: str | None = None) -> dict[str, Any]:
    """The cfg upstream GigaAM v3 CTC checkpoints carry (hydra ``_target_`` sections)."""
    cfg: dict[str, Any] = {
        "model_class": "ctc",
        "sample_rate": FRONTEND.sample_rate,
        "preprocessor": {
            "_target_": "gigaam.preprocess.FeatureExtractor",
            "sample_rate": FRONTEND.sample_rate,
            "features": FRONTEND.n_mels,
            "win_length": FRONTEND.win_length,
            "hop_length": FRONTEND.hop_length,
            "mel_scale": "htk",
            "n_fft": FRONTEND.n_fft,
            "mel_norm": None,
            "center": FRONTEND.center,
        },
        "encoder": {
            "_target_": "gigaam.encoder.ConformerEncoder",
            "feat_in": spec.feat_in,
            "n_layers": spec.n_layers,
            "d_model": spec.d_model,
            "subsampling_factor": spec.subsampling_factor,
            "ff_expansion_factor": spec.ff_expansion_factor,
            "self_attention_model": spec.attention,
            "pos_emb_max_len": spec.pos_emb_max_len,
            "n_heads": spec.n_heads,
            "conv_kernel_size": spec.conv_kernel_size,
            "flash_attn": False,
            "subs_kernel_size": spec.subsampling_kernel,
            "subsampling": spec.subsampling,
            "conv_norm_type": spec.conv_norm,
        },
        "head": {
            "_target_": "gigaam.decoder.CTCHead",
            "feat_in": spec.d_model,
            "num_classes": spec.num_classes,
        },
        "decoding": {
            "_target_": "gigaam.decoding.CTCGreedyDecoding",
            "vocabulary": list(VOCABULARY),
        },
        "model_name": MODEL_NAME,
    }
    if note:
        cfg["demo_model_note"] = note
    return cfg


def torchaudio_buffers(config: GigaamMelConfig) -> tuple[Tensor, Tensor]:
    """float32 ``window`` [win_length] and ``fb`` [n_fft // 2 + 1, n_mels] as torchaudio's
    MelSpectrogram builds them for GigaAM: periodic Hann; ``melscale_fbanks`` with the HTK
    scale, fmin 0, fmax sample_rate // 2, no norm (the same torch operations, in order)."""
    window = torch.hann_window(config.win_length, periodic=True, dtype=torch.float32)
    nyquist = config.sample_rate // 2
    all_freqs = torch.linspace(0, nyquist, config.n_fft // 2 + 1)
    m_max = 2595.0 * math.log10(1.0 + nyquist / 700.0)
    m_pts = torch.linspace(0.0, m_max, config.n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up_slopes = slopes[:, 2:] / f_diff[1:]
    fb = torch.max(torch.zeros(1), torch.min(down_slopes, up_slopes))
    return window, fb


def preprocessor_state() -> dict[str, Tensor]:
    """The preprocessor buffers as v3 stores them: the window and filterbank rounded to
    bfloat16 (``t.to(torch.bfloat16).to(torch.float32)``) and held as float32."""
    window, fb = torchaudio_buffers(FRONTEND)
    return {
        WINDOW_KEY: window.to(torch.bfloat16).to(torch.float32),
        FILTERBANK_KEY: fb.to(torch.bfloat16).to(torch.float32),
    }


def gigaam_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Upstream key names: preprocessor buffers, ``encoder.*`` as is, our ``decoder.*``
    (the CTC head) as ``head.*``."""
    state = preprocessor_state()
    for key, value in model.state_dict().items():
        name = "head." + key[len("decoder.") :] if key.startswith("decoder.") else key
        if not name.startswith(("encoder.", "head.")):
            raise ValueError(f"unexpected model tensor {key}")
        state[name] = value.detach().clone().contiguous()
    return state


def save_gigaam(path: Path, cfg: dict[str, Any], model: nn.Module) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": gigaam_state_dict(model), "cfg": DictConfig(cfg)}, path)


def verify_checkpoint(path: Path, clips: Sequence[Clip]) -> list[tuple[Clip, str]]:
    """Reload the .ckpt as the exporter does; return the clips it gets wrong."""
    source = load_gigaam(path)
    if source.frontend != FRONTEND:
        raise RuntimeError(f"{path} reloads with front end {source.frontend}, not {FRONTEND}")
    frontend = make_frontend(source.frontend)
    return wrong_clips(clips, lambda audio: transcribe(source.model, frontend, audio))


def wrong_clips(
    clips: Sequence[Clip], hypothesis: Callable[[FloatArray], str]
) -> list[tuple[Clip, str]]:
    """The clips whose hypothesis is not their normalised text, with the hypothesis."""
    wrong = []
    for clip in clips:
        text = hypothesis(clip.audio)
        if text != normalize_text(clip.text):
            wrong.append((clip, text))
    return wrong


def training_report(
    result: TrainResult,
    settings: TrainSettings,
    spec: Any,
    counts: dict[str, int],
    seconds: float,
    *,
    model_file: str = MODEL_FILE,
) -> dict[str, Any]:
    """The training report; ``spec`` the architecture dataclass (ConformerSpec, …)."""
    architecture = {
        "model_file": model_file,
        "architecture": asdict(spec),
        "frontend": asdict(FRONTEND),
    }
    return report_fields(result, settings, architecture, counts, seconds)


def demo_audio(audio_dir: Path, val_clips: Sequence[Clip]) -> list[Clip]:
    """The committed demo clips (shared with the QuartzNet demo), written only if absent,
    as read back and as an 8 kHz int16 client would send them."""
    manifest = audio_dir / MANIFEST_FILE
    if not manifest.is_file():
        write_demo_audio(audio_dir, demo_clips(val_clips))
    return manifest_checks(manifest)


def run(out_dir: Path, audio_dir: Path, settings: TrainSettings, shape: DemoShape) -> int:
    wall_start = time.monotonic()
    torch.set_num_threads(2)
    spec = conformer_spec(shape)
    cfg = gigaam_cfg(
        spec,
        note=(
            "Demo model trained on espeak-ng synthetic Russian speech by "
            "scripts/train_demo_conformer.py; it only knows its fixed phrase list."
        ),
    )
    frontend = make_frontend(FRONTEND)

    val_clips, train_set, val_set = training_sets(frontend, settings.seed)
    print(
        f"{len(train_set)} training / {len(val_set)} validation clips ready in "
        f"{time.monotonic() - wall_start:.0f}s; model: "
        f"{parameter_count(ConformerCTC(spec)):,} parameters",
        flush=True,
    )

    result = train(conformer_factory(spec), train_set, val_set, settings)
    model_path = out_dir / MODEL_FILE
    save_gigaam(model_path, cfg, result.model)
    demo = demo_audio(audio_dir, val_clips)
    checks = [*val_clips, *demo]
    mismatches = verify_checkpoint(model_path, checks)

    seconds = time.monotonic() - wall_start
    counts = {"train_clips": len(train_set), "validation_clips": len(val_set)}
    report = training_report(result, settings, spec, counts, seconds)
    return finish(report, out_dir / REPORT_FILE, model_path, (checks, demo, mismatches))


Checked = tuple[Sequence[Clip], Sequence[Clip], Sequence[tuple[Clip, str]]]


def finish(report: dict[str, Any], report_path: Path, model_path: Path, checked: Checked) -> int:
    """The reloaded checkpoint's held-out results into ``report``, written to
    ``report_path``; the exit status ``acceptance`` gives (0 when every demo clip is exact
    and the held-out CER is within bounds)."""
    checks, demo, mismatches = checked
    demo_keys = {(clip.text, clip.voice) for clip in demo}
    demo_misses = [(c, h) for c, h in mismatches if (c.text, c.voice) in demo_keys]
    report["checkpoint_bytes"] = model_path.stat().st_size
    report["reloaded_checkpoint_mismatches"] = len(mismatches)
    report["reloaded_checkpoint_heldout_clips"] = len(checks)
    report["reloaded_checkpoint_heldout_cer"] = round(result_cer(checks, mismatches), 5)
    report["demo_clips_exact"] = f"{len(demo) - len(demo_misses)}/{len(demo)}"
    report["reloaded_checkpoint_errors"] = [
        {"voice": clip.voice, "reference": normalize_text(clip.text), "hypothesis": hypothesis}
        for clip, hypothesis in mismatches
    ]
    report_text = json.dumps(report, ensure_ascii=False, indent=2) + "\n"
    report_path.write_text(report_text, encoding="utf-8")
    megabytes = report["checkpoint_bytes"] / 1e6
    print(f"wrote {model_path} ({megabytes:.2f} MB); {report['total_seconds']:.0f}s in all")
    return acceptance(checks, demo, mismatches)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model directory (demo/model)")
    parser.add_argument(
        "--audio-dir", type=Path, help="held-out demo clips (default: OUT/../audio)"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=30.0,
        help="wall-clock safety cap; training ends on exact validation or max_epochs, so a "
        "busy machine gets the same model, later",
    )
    parser.add_argument("--seed", type=int, default=0)
    defaults = DemoShape()
    parser.add_argument("--d-model", type=int, default=defaults.d_model)
    parser.add_argument("--layers", type=int, default=defaults.n_layers)
    parser.add_argument("--heads", type=int, default=defaults.n_heads)
    args = parser.parse_args(argv)
    settings = train_settings(args.minutes, args.seed)
    shape = DemoShape(args.d_model, args.layers, args.heads)
    return run(args.out, args.audio_dir or args.out.parent / "audio", settings, shape)


if __name__ == "__main__":
    raise SystemExit(main())
