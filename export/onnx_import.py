"""Describe an already-exported upstream CTC graph, so it can be quantized and bundled.

Neither GigaAM's ``to_onnx`` nor NeMo's ``export`` puts the front end in the graph, so the
user names it: from GigaAM's saved cfg (``<model_name>.yaml``, written next to the graph
by ``to_onnx``) plus its tokenizer, or from a preset and a ``tokens.txt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from asr.config import AnyFrontendConfig, FrontendConfig, GigaamMelConfig, ModelFamily, TokenKind
from asr.errors import BundleError
from asr.tokens import BLANK_TOKEN, SPACE_MARK, Vocabulary

from .gigaam import conformer_spec, frontend_from_cfg, gigaam_description
from .quartznet import CheckpointError
from .source_model import CONFORMER_MAX_WINDOW_SECONDS, ModelDescription

# Front ends by name: (config, family, subsampling of the usual models that use it).
FRONTEND_PRESETS: dict[str, tuple[AnyFrontendConfig, ModelFamily, int]] = {
    "gigaam-v2": (GigaamMelConfig(), "conformer", 4),
    "gigaam-v3": (
        GigaamMelConfig(n_fft=320, win_length=320, center=False, bf16_buffers=True),
        "conformer",
        4,
    ),
    "nemo-conformer": (FrontendConfig(n_fft=512, win_length=400, n_mels=80), "conformer", 4),
    "nemo-fastconformer": (FrontendConfig(n_fft=512, win_length=400, n_mels=80), "conformer", 8),
    "nemo-quartznet": (FrontendConfig(), "quartznet", 2),
}


def describe_gigaam_graph(cfg_path: Path, tokenizer: Path | None) -> ModelDescription:
    """From the cfg GigaAM's ``to_onnx`` saves. v3's geometry (320-sample window, not
    centred) implies the bfloat16-rounded window and filterbank its checkpoints carry."""
    try:
        cfg: Any = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"cannot read GigaAM cfg {cfg_path}: {exc}") from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path} does not hold a GigaAM cfg mapping")
    spec = conformer_spec(cfg)
    frontend = frontend_from_cfg(cfg)
    v3_geometry = (frontend.win_length, frontend.center) == (320, False)
    frontend = GigaamMelConfig(**{**vars(frontend), "bf16_buffers": v3_geometry})
    source: dict[str, Any] = {"cfg": cfg_path.name, "upstream_model": cfg.get("model_name")}
    return gigaam_description(cfg, spec, frontend, tokenizer, source)


def describe_graph(
    tokens_path: Path, preset: str, *, subsampling: int | None = None
) -> ModelDescription:
    """From a front-end preset and a ``tokens.txt`` (``<token> <id>`` lines, as sherpa-onnx
    and this project write them; the blank is ``<blk>``, else the last token)."""
    if preset not in FRONTEND_PRESETS:
        raise CheckpointError(f"unknown front end {preset!r}; known: {', '.join(FRONTEND_PRESETS)}")
    frontend, family, usual_subsampling = FRONTEND_PRESETS[preset]
    try:
        probe = Vocabulary.read(tokens_path, blank_id=0)
    except BundleError as exc:
        raise CheckpointError(str(exc)) from exc
    tokens = probe.tokens
    blank_id = tokens.index(BLANK_TOKEN) if BLANK_TOKEN in tokens else len(tokens) - 1
    return ModelDescription(
        family=family,
        frontend=frontend,
        vocabulary=Vocabulary(tokens, blank_id=blank_id),
        token_kind=token_kind(tokens),
        subsampling=subsampling or usual_subsampling,
        max_window_seconds=CONFORMER_MAX_WINDOW_SECONDS if family == "conformer" else None,
        source={"tokens": tokens_path.name, "frontend_preset": preset},
    )


def token_kind(tokens: tuple[str, ...]) -> TokenKind:
    """SentencePiece vocabularies have multi-character pieces (most starting with "▁")."""
    ordinary = [t for t in tokens if not (t.startswith("<") and t.endswith(">"))]
    if any(len(t) > 1 and t != SPACE_MARK for t in ordinary):
        return "sentencepiece"
    return "char"
