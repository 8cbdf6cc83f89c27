"""Which decoder a transcription uses: the bundle's default (config.json ``decoder``), a
request's overrides within limits, and the hotwords of the deployment and the request.

Request fields (JSON body, OpenAI form fields, query parameters of raw bodies, CLI flags;
strings are accepted wherever a number is, as forms and query strings carry only text):

    decoder       "greedy" | "beam"
    beam_width    1..64
    lm            false turns the bundle's language model off for this request
    alpha, beta   LM weight 0..5 and word bonus -10..10 (shallow fusion)
    hotwords      ["иванов", {"text": "сбербанк", "boost": 3}] or "иванов, сбербанк:3"
    hotword_boost the default boost per character, 0..10

Hotwords need the beam search: given without ``decoder`` they select it; with
``decoder: greedy`` they are refused (nothing a user sent is silently ignored).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .errors import InvalidRequest
from .hotwords import Hotword, HotwordTrie, spell_check

DecoderMethod = Literal["greedy", "beam"]
DECODER_METHODS: tuple[DecoderMethod, ...] = ("greedy", "beam")
LmKind = Literal["ngram", "kenlm"]

MAX_BEAM_WIDTH: Final = 64
MAX_HOTWORDS: Final = 100
MAX_HOTWORD_CHARS: Final = 64
MAX_BOOST: Final = 10.0
ALPHA_RANGE: Final = (0.0, 5.0)
BETA_RANGE: Final = (-10.0, 10.0)
REQUEST_FIELDS: Final = frozenset(
    {"decoder", "beam_width", "lm", "alpha", "beta", "hotwords", "hotword_boost"}
)


@dataclass(frozen=True)
class LanguageModelConfig:
    """The bundle's word n-gram LM: compiled from ARPA (``ngram``, read by ``asr.ngram``)
    or a KenLM binary kept as it is (``kenlm``: needs the kenlm module at run time, and the
    word list in ``unigrams_file`` for partial-word checks)."""

    file: str
    kind: LmKind = "ngram"
    alpha: float = 0.5
    beta: float = 1.0
    unigrams_file: str | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def files(self) -> list[str]:
        return [self.file] + ([self.unigrams_file] if self.unigrams_file else [])


@dataclass(frozen=True)
class DecoderConfig:
    """config.json ``decoder``: the default decoder and the beam search's settings.

    ``token_min_logp``: tokens below this log-prob at a frame are not tried there (the
    blank always is); ``top_k``: at most this many tokens per frame; ``beam_prune_logp``:
    hypotheses this far below the best are dropped; ``oov_penalty``: added (natural log)
    to a word the LM does not know, and to a partial word no LM word starts with.
    """

    method: DecoderMethod = "greedy"
    beam_width: int = 16
    token_min_logp: float = -8.0
    top_k: int = 12
    beam_prune_logp: float = -12.0
    oov_penalty: float = -10.0
    hotword_boost: float = 2.0
    lm: LanguageModelConfig | None = None

    def __post_init__(self) -> None:
        if self.method not in DECODER_METHODS:
            raise ValueError(f"decoder.method must be one of {DECODER_METHODS}")
        if not 1 <= self.beam_width <= MAX_BEAM_WIDTH or self.top_k < 1:
            raise ValueError(f"decoder.beam_width must be 1..{MAX_BEAM_WIDTH}, top_k >= 1")
        if self.token_min_logp >= 0 or self.beam_prune_logp >= 0 or self.oov_penalty > 0:
            raise ValueError("decoder: token_min_logp, beam_prune_logp, oov_penalty are <= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderConfig:
        lm = data.get("lm")
        return cls(**{**data, "lm": LanguageModelConfig(**lm) if lm is not None else None})


@dataclass(frozen=True)
class DecodingOptions:
    """What one request asked for; None: the bundle's (or deployment's) choice."""

    method: DecoderMethod | None = None
    beam_width: int | None = None
    use_lm: bool | None = None
    alpha: float | None = None
    beta: float | None = None
    hotwords: tuple[Hotword, ...] = ()

    @property
    def is_default(self) -> bool:
        return self == DecodingOptions()


@dataclass(frozen=True)
class Decoding:
    """The resolved choice for one transcription."""

    method: DecoderMethod
    beam_width: int
    use_lm: bool
    alpha: float
    beta: float
    hotwords: HotwordTrie | None

    def describe(self) -> str:
        if self.method == "greedy":
            return "greedy"
        parts = [f"beam{self.beam_width}"]
        if self.use_lm:
            parts.append(f"lm(alpha={self.alpha:g},beta={self.beta:g})")
        if self.hotwords:
            parts.append(f"hotwords({len(self.hotwords.hotwords)})")
        return "+".join(parts)


def _invalid(message: str, code: str = "invalid_decoding") -> InvalidRequest:
    return InvalidRequest(message, code=code)


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _invalid(f"{name} must be a number in [{low:g}, {high:g}]")
    try:
        number = float(value)
    except ValueError:
        raise _invalid(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}") from None
    if not (math.isfinite(number) and low <= number <= high):
        raise _invalid(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return number


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise _invalid(f"{name} must be true or false, got {value!r}")


def parse_hotwords(value: Any, default_boost: float | None = None) -> tuple[Hotword, ...]:
    """A JSON list of strings / {"text", "boost"} objects, or "word[:boost], ..." text."""
    items: Sequence[Any]
    if isinstance(value, str):
        items = [item for item in value.split(",") if item.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise _invalid('"hotwords" must be a list or a comma-separated string', "invalid_hotwords")
    if len(items) > MAX_HOTWORDS:
        raise _invalid(f"at most {MAX_HOTWORDS} hotwords, got {len(items)}", "invalid_hotwords")
    hotwords: dict[str, Hotword] = {}
    for item in items:
        text, boost = _hotword_fields(item, isinstance(value, str))
        text = " ".join(text.split())
        if not text or len(text) > MAX_HOTWORD_CHARS:
            raise _invalid(
                f"each hotword needs 1-{MAX_HOTWORD_CHARS} characters, got {text!r}",
                "invalid_hotwords",
            )
        if boost is None:
            boost = default_boost
        number = None if boost is None else _number(boost, "a hotword's boost", 0.0, MAX_BOOST)
        if number is not None and number <= 0:
            raise _invalid(f"the boost of {text!r} must be above 0", "invalid_hotwords")
        hotwords[text] = Hotword(text, number if number is not None else math.nan)
    return tuple(hotwords.values())


def _hotword_fields(item: Any, from_text: bool) -> tuple[str, Any]:
    if from_text:
        text, colon, boost = str(item).rpartition(":")
        return (text, boost) if colon else (boost, None)
    if isinstance(item, str):
        return item, None
    if (
        isinstance(item, dict)
        and isinstance(item.get("text"), str)
        and set(item) <= {"text", "boost"}
    ):
        return item["text"], item.get("boost")
    raise _invalid(
        'each hotword is a string or {"text": "...", "boost": number}', "invalid_hotwords"
    )


def parse_options(fields: Mapping[str, Any]) -> DecodingOptions:
    """The decoding fields of a request (other keys are the caller's business)."""
    method = fields.get("decoder")
    if method is not None and method not in DECODER_METHODS:
        raise _invalid(f"decoder must be one of {', '.join(DECODER_METHODS)}, got {method!r}")
    width = fields.get("beam_width")
    boost = fields.get("hotword_boost")
    if boost is not None:
        boost = _number(boost, "hotword_boost", 0.0, MAX_BOOST)
    return DecodingOptions(
        method=method,
        beam_width=None if width is None else _beam_width(width),
        use_lm=None if fields.get("lm") is None else _flag(fields["lm"], "lm"),
        alpha=None
        if fields.get("alpha") is None
        else _number(fields["alpha"], "alpha", *ALPHA_RANGE),
        beta=None if fields.get("beta") is None else _number(fields["beta"], "beta", *BETA_RANGE),
        hotwords=()
        if fields.get("hotwords") is None
        else parse_hotwords(fields["hotwords"], boost),
    )


def _beam_width(value: Any) -> int:
    number = _number(value, "beam_width", 1, MAX_BEAM_WIDTH)
    if number != int(number):
        raise _invalid(f"beam_width must be a whole number, got {value!r}")
    return int(number)


def resolve(
    config: DecoderConfig,
    options: DecodingOptions,
    *,
    deployment_hotwords: tuple[Hotword, ...],
    alphabet: frozenset[str],
    beam_supported: bool,
) -> Decoding:
    """The decoding one transcription uses; ``alphabet``: the characters the model writes."""
    hotwords = {h.text: h for h in deployment_hotwords}
    hotwords.update({h.text: h for h in options.hotwords})
    if options.method == "greedy":
        if options.hotwords:
            raise _invalid("hotwords need the beam search: drop decoder=greedy", "invalid_hotwords")
        hotwords = {}  # an explicit greedy request opts out of the deployment's hotwords
    method = options.method or ("beam" if hotwords else config.method)
    if method == "beam" and not beam_supported:
        raise _invalid(
            "this bundle's model is a transducer: it decodes greedily only (beam search, "
            "language models and hotwords are for CTC bundles)",
            "decoder_not_supported",
        )
    if options.use_lm and config.lm is None:
        raise _invalid(
            "this bundle has no language model (python -m export attach-lm)", "lm_not_available"
        )
    if method == "greedy" and (
        options.use_lm
        or options.beam_width
        or options.alpha is not None
        or options.beta is not None
    ):
        raise _invalid("beam_width, lm, alpha and beta apply to decoder=beam")
    problems = spell_check(list(hotwords.values()), alphabet)
    if problems:
        raise _invalid(
            "hotwords must be spelled in the model's vocabulary "
            f"({_alphabet_hint(alphabet)}): " + "; ".join(problems),
            "hotword_not_in_vocabulary",
        )
    use_lm = config.lm is not None and options.use_lm is not False
    if not use_lm and (options.alpha is not None or options.beta is not None):
        raise _invalid("alpha and beta weigh the language model, which this request has off")
    boosted = [
        Hotword(h.text, config.hotword_boost if math.isnan(h.boost) else h.boost)
        for h in hotwords.values()
    ]
    return Decoding(
        method=method,
        beam_width=options.beam_width or config.beam_width,
        use_lm=use_lm and method == "beam",
        alpha=options.alpha
        if options.alpha is not None
        else (config.lm.alpha if config.lm else 0.0),
        beta=options.beta if options.beta is not None else (config.lm.beta if config.lm else 0.0),
        hotwords=HotwordTrie(boosted) if boosted else None,
    )


def _alphabet_hint(alphabet: frozenset[str]) -> str:
    letters = sorted(c for c in alphabet if c.isalpha())
    cased = any(c.isupper() for c in letters)
    sample = "".join(letters[:40])
    return f"{'' if cased else 'lower-case '}letters {sample}{'…' if len(letters) > 40 else ''}"
