"""The text normalisation applied to references and hypotheses before WER/CER.

Russian references and model outputs disagree on things that are not recognition errors:
case, "ё" written or not, punctuation (e2e models such as GigaAM v3 e2e print it), spacing.
``normalize_russian`` removes exactly those differences, the same way on both sides:

1. Unicode NFC (a decomposed "е" + U+0308 becomes "ё"), then lower case;
2. "ё" → "е";
3. apostrophes (' ’ ʼ ‘ `) are deleted, joining the word: "д'артаньян" → "дартаньян"
   (the char vocabularies of the Russian models have no apostrophe);
4. every other punctuation mark or symbol (Unicode categories P* and S*: . , ! ? « » " ( )
   : ; %, and every hyphen and dash) becomes a space, so "кто-то" → "кто то" and
   "Москва—Петербург" → "москва петербург";
5. combining marks left after NFC (stress accents: "а́") and invisible format characters
   (soft hyphen, zero-width space/joiner) are deleted;
6. whitespace runs collapse to one space, none at either end.

Letters and digits are kept as they are: numbers are not spelt out ("5" and "пять" differ),
Latin letters are not transliterated.
"""

from __future__ import annotations

import unicodedata
from typing import Final

APOSTROPHES: Final = frozenset("'’ʼ‘`")

DESCRIPTION: Final = (
    "NFC, lower case, ё→е, apostrophes deleted, other punctuation/symbols and hyphens → space, "
    "combining accents deleted, whitespace collapsed; digits and Latin letters kept"
)


def normalize_russian(text: str) -> str:
    """``text`` as it is scored (see the module docstring); "" when nothing is left."""
    lowered = unicodedata.normalize("NFC", text).lower().replace("ё", "е")
    kept: list[str] = []
    for char in lowered:
        if char in APOSTROPHES:
            continue
        category = unicodedata.category(char)
        if category[0] == "M" or category == "Cf":  # accents; soft hyphen, zero-width joiners
            continue
        kept.append(" " if category[0] in "PSZC" else char)
    return " ".join("".join(kept).split())
