"""The model bundle's config.json: what the runtime needs to turn audio into text.

Everything the front end and the decoder do is read from here, never from constants, so
one runtime serves every exported model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .decoding import DecoderConfig
from .errors import BundleError

BUNDLE_FORMAT_VERSION = 1

ModelFamily = Literal["quartznet", "conformer"]
MODEL_FAMILIES: tuple[ModelFamily, ...] = ("quartznet", "conformer")
# "char": one character per token; "sentencepiece": SentencePiece pieces ("▁" starts a word).
TokenKind = Literal["char", "sentencepiece"]
TOKEN_KINDS: tuple[TokenKind, ...] = ("char", "sentencepiece")


@dataclass(frozen=True)
class FrontendConfig:
    """NeMo's AudioToMelSpectrogramPreprocessor parameters (FilterbankFeatures, or
    FilterbankFeaturesTA with ``use_torchaudio``: see export.nemo_preprocessor).

    Defaults are QuartzNet15x5's: 20 ms symmetric Hann window zero-padded to n_fft 512,
    10 ms hop, pre-emphasis 0.97, Slaney mel, log(x + 2**-24), per-feature normalisation.
    """

    kind: Literal["nemo_mel"] = "nemo_mel"
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 320
    hop_length: int = 160
    n_mels: int = 64
    preemph: float = 0.97
    window: Literal["hann"] = "hann"
    fmin: float = 0.0
    fmax: float | None = None
    mel_norm: Literal["slaney"] | None = "slaney"
    # Whose arithmetic built the filterbank buffer the model trained with: librosa's
    # (FilterbankFeatures) or torchaudio's float32 melscale_fbanks (FilterbankFeaturesTA).
    filterbank: Literal["librosa", "torchaudio"] = "librosa"
    mag_power: float = 2.0
    log_guard: float = 2.0**-24
    # log(x + guard) ("add") or log(max(x, guard)) ("clamp"): log_zero_guard_type.
    log_guard_type: Literal["add", "clamp"] = "add"
    normalize: Literal["per_feature"] | None = "per_feature"
    # NeMo adds 1e-5 to the per-feature std (CONSTANT in features.py).
    normalize_std_eps: float = 1e-5
    # FilterbankFeaturesTA clamps the variance at the log guard before its square root.
    normalize_variance_floor: float = 0.0
    # NeMo >= 2.5 pads the centred STFT with zeros and counts len // hop valid frames;
    # earlier releases (which trained the public Russian QuartzNets) pad by reflection and
    # count every STFT frame (len // hop + 1): "reflect" + "all".
    stft_pad_mode: Literal["constant", "reflect"] = "constant"
    valid_frames: Literal["floor", "all"] = "floor"

    def __post_init__(self) -> None:
        _require_framing(self)
        _require(self.log_guard > 0, "frontend.log_guard must be positive")
        _require(self.log_guard_type in ("add", "clamp"), "frontend.log_guard_type: add or clamp")
        _require(self.normalize_variance_floor >= 0, "frontend.normalize_variance_floor < 0")
        top = self.sample_rate / 2 if self.fmax is None else self.fmax
        _require(
            0 <= self.fmin < top <= self.sample_rate / 2, "frontend needs 0 <= fmin < fmax <= sr/2"
        )


@dataclass(frozen=True)
class GigaamMelConfig:
    """GigaAM's FeatureExtractor: torchaudio MelSpectrogram then log(clamp(x, 1e-9, 1e9)).

    torchaudio defaults it relies on: periodic Hann window, power 2, HTK mel scale without
    filterbank norm, fmin 0, fmax sr/2, reflect padding when centred. No pre-emphasis,
    dither or normalisation. Defaults are v1/v2's (400/400/160, centred); v3 uses
    n_fft = win = 320, ``center=False`` and stores its window and filterbank rounded to
    bfloat16 (``bf16_buffers``), which the features must reproduce.
    """

    kind: Literal["gigaam_mel"] = "gigaam_mel"
    sample_rate: int = 16000
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    center: bool = True
    clamp_min: float = 1e-9
    clamp_max: float = 1e9
    bf16_buffers: bool = False

    def __post_init__(self) -> None:
        _require_framing(self)
        _require(0 < self.clamp_min < self.clamp_max, "frontend needs 0 < clamp_min < clamp_max")


AnyFrontendConfig = FrontendConfig | GigaamMelConfig


# "log_probs": CTC log-probs [B, T', V]; "encoded": encoder frames [B, D, T'] (GigaAM's
# and NeMo's encoder layout) that a transducer's prediction network and joint decode.
ModelOutput = Literal["log_probs", "encoded"]


@dataclass(frozen=True)
class ModelConfig:
    """The ONNX acoustic model: features [B, n_mels, T] + lengths [B] → log-probs [B, T', V]
    (CTC) or encoded frames [B, D, T'] (a transducer's encoder), + lengths [B]."""

    file: str = "model.onnx"
    features_input: str = "features"
    lengths_input: str = "feature_lengths"
    # The graph's main output: log-probs, or the encoded frames (``output``).
    log_probs_output: str = "log_probs"
    lengths_output: str = "encoded_lengths"
    output: ModelOutput = "log_probs"
    # Frames of features per output frame (QuartzNet 2, Conformer 4, FastConformer 8).
    subsampling: int = 2
    precision: Literal["int8", "fp32"] = "int8"
    # Longest audio one forward pass may see. Attention is quadratic in length, so
    # Conformer bundles set this (GigaAM itself refuses more than 25 s) and longer audio is
    # cut into windows at quiet points; None means one pass over any length (QuartzNet).
    max_window_seconds: float | None = None

    def __post_init__(self) -> None:
        _require(self.output in ("log_probs", "encoded"), "model.output: log_probs or encoded")
        _require(self.subsampling >= 1, "model.subsampling must be >= 1")
        _require(
            self.max_window_seconds is None or self.max_window_seconds >= 1.0,
            "model.max_window_seconds must be at least 1 s",
        )


@dataclass(frozen=True)
class TransducerConfig:
    """An RNN-T's prediction network and joint (GigaAM RNNTHead; NeMo RNNTDecoder and
    RNNTJoint) as two ONNX graphs, in the layout of GigaAM's ``to_onnx``:

    - decoder, one LSTM step: label [B, 1] int64, h [L, B, H], c [L, B, H] →
      output [B, 1, H], h, c. The blank label is the start of the sequence (a zero input);
    - joint: encoder frames [B, D, K], decoder output [B, H, 1] → log-probs [B, K, 1, V].

    Greedy decoding emits at most ``max_symbols_per_step`` tokens per encoder frame.
    """

    pred_layers: int
    pred_hidden: int
    max_symbols_per_step: int = 10
    decoder_file: str = "decoder.onnx"
    joint_file: str = "joint.onnx"
    decoder_inputs: tuple[str, str, str] = ("x", "hi", "ci")
    decoder_outputs: tuple[str, str, str] = ("dec", "ho", "co")
    joint_inputs: tuple[str, str] = ("enc", "dec")
    joint_output: str = "joint"

    def __post_init__(self) -> None:
        _require(self.pred_layers >= 1 and self.pred_hidden >= 1, "transducer sizes must be >= 1")
        _require(self.max_symbols_per_step >= 1, "transducer.max_symbols_per_step must be >= 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransducerConfig:
        lists = {k: tuple(v) for k, v in data.items() if isinstance(v, list)}
        return cls(**{**data, **lists})


@dataclass(frozen=True)
class TokensConfig:
    file: str = "tokens.txt"
    kind: TokenKind = "char"
    blank_id: int = 0


@dataclass(frozen=True)
class BundleConfig:
    model_id: str
    family: ModelFamily
    frontend: AnyFrontendConfig
    model: ModelConfig
    tokens: TokensConfig
    # An RNN-T's decoder and joint; None: the model's log-probs are decoded as CTC.
    transducer: TransducerConfig | None = None
    # The default decoder and the beam search's settings and LM (asr.decoding).
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    format_version: int = BUNDLE_FORMAT_VERSION
    verification_file: str = "verification.json"
    checksums_file: str = "SHA256SUMS"
    # Free-form provenance: source checkpoint, its sha256, exporter versions.
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    @property
    def frame_seconds(self) -> float:
        """Duration of one acoustic-model output frame."""
        return self.frontend.hop_length * self.model.subsampling / self.frontend.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> BundleConfig:
        if not isinstance(data, dict):
            raise BundleError("config.json must hold a JSON object")
        version = data.get("format_version")
        if version != BUNDLE_FORMAT_VERSION:
            raise BundleError(
                f"config.json has format_version {version!r}; this runtime reads version "
                f"{BUNDLE_FORMAT_VERSION}: re-export the bundle with this release"
            )
        try:
            frontend = frontend_config_from_dict(_section(data, "frontend"))
            model = ModelConfig(**_section(data, "model"))
            tokens = TokensConfig(**_section(data, "tokens"))
            transducer = data.get("transducer")
            if transducer is not None:
                transducer = TransducerConfig.from_dict(_section(data, "transducer"))
            decoder = DecoderConfig.from_dict(data.get("decoder") or {})
            sections = {"frontend", "model", "tokens", "transducer", "decoder"}
            extra = {k: v for k, v in data.items() if k not in sections}
            config = cls(
                frontend=frontend,
                model=model,
                tokens=tokens,
                transducer=transducer,
                decoder=decoder,
                **extra,
            )
        except TypeError as exc:  # unknown or missing keys
            raise BundleError(f"config.json does not match the bundle schema: {exc}") from exc
        except ValueError as exc:
            raise BundleError(f"invalid config: {exc}") from exc
        if config.family not in MODEL_FAMILIES:
            raise BundleError(f"config.json names an unknown model family {config.family!r}")
        if config.tokens.kind not in TOKEN_KINDS:
            raise BundleError(f"config.json names an unknown token kind {config.tokens.kind!r}")
        if not config.model_id or not isinstance(config.model_id, str):
            raise BundleError("config.json needs a non-empty model_id")
        if config.transducer is not None and (
            config.decoder.method != "greedy" or config.decoder.lm is not None
        ):
            raise BundleError("config.json: a transducer bundle decodes greedily, without an LM")
        if (config.model.output == "encoded") != (config.transducer is not None):
            raise BundleError(
                "config.json: a model that outputs encoded frames needs a transducer section, "
                "and a transducer needs them"
            )
        return config


def frontend_config_from_dict(data: dict[str, Any]) -> AnyFrontendConfig:
    """The front-end section, by its ``kind`` (bundles before GigaAM have only nemo_mel)."""
    kind = data.get("kind", "nemo_mel")
    if kind == "nemo_mel":
        return FrontendConfig(**data)
    if kind == "gigaam_mel":
        return GigaamMelConfig(**data)
    raise BundleError(f"config.json names an unknown front end {kind!r}")


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    section = data.get(name)
    if not isinstance(section, dict):
        raise BundleError(f"config.json is missing its {name!r} section")
    return section


def _require_framing(config: FrontendConfig | GigaamMelConfig) -> None:
    _require(config.sample_rate > 0, "frontend.sample_rate must be positive")
    _require(config.hop_length > 0, "frontend.hop_length must be positive")
    _require(0 < config.win_length <= config.n_fft, "frontend needs 0 < win_length <= n_fft")
    _require(config.n_mels > 0, "frontend.n_mels must be positive")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise BundleError(f"invalid config: {message}")
