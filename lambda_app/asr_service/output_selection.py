"""Which output format a ``POST /transcribe`` request asked for.

``?format=json|text|srt|vtt`` wins; without it the Accept header decides (``text/plain`` →
text, ``application/x-subrip`` or ``text/srt`` → srt, ``text/vtt`` → vtt, ``application/json``
→ json, highest q first); anything else, ``*/*`` or no header gives JSON, as before. An
unknown ``format`` is refused (``400 invalid_format``), an unhelpful Accept header is not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from asr.formats import OutputFormat, parse_format

FORMAT_PARAMETER: Final = "format"
_ACCEPTED: Final[dict[str, OutputFormat]] = {
    "application/json": "json",
    "text/plain": "text",
    "application/x-subrip": "srt",
    "text/srt": "srt",
    "text/vtt": "vtt",
}


def requested_format(query: Mapping[str, str] | None, accept: str | None) -> OutputFormat:
    value = (query or {}).get(FORMAT_PARAMETER)
    if value is not None:
        return parse_format(value)
    return format_from_accept(accept or "")


def format_from_accept(accept: str) -> OutputFormat:
    ranked: list[tuple[float, int, OutputFormat]] = []
    for position, media_range in enumerate(accept.split(",")):
        media, *parameters = (piece.strip() for piece in media_range.split(";"))
        output = _ACCEPTED.get(media.lower())
        if output is not None:
            ranked.append((-_quality(parameters), position, output))
    ranked.sort()
    if ranked and ranked[0][0] < 0:
        return ranked[0][2]
    return "json"


def _quality(parameters: list[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value)
            except ValueError:
                return 0.0
            return min(max(quality, 0.0), 1.0) if math.isfinite(quality) else 0.0
    return 1.0
