"""The fonts of the opinion's PDF: DejaVu Sans (Debian's fonts-dejavu-core, which
scripts/setup.sh installs) for any Unicode text; PDF's core Helvetica, with the text cut
down to Latin-1, only where that font is missing (a warning is logged, the PDF says nothing).
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fpdf import FPDF
from fpdf.fonts import TTFFont

log = logging.getLogger(__name__)

# Where Debian's fonts-dejavu-core puts its files.
FONT_DIRECTORY: Final = Path("/usr/share/fonts/truetype/dejavu")
_REGULAR, _BOLD = "DejaVuSans.ttf", "DejaVuSans-Bold.ttf"

# Common characters outside Latin-1, as the core fonts can show them.
_LATIN1_STAND_INS: Final = str.maketrans(
    {
        "\u2014": "-",
        "\u2013": "-",
        "\u2212": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2022": "*",
        "\u2026": "...",
        "\u2265": ">=",
        "\u2264": "<=",
        "\u00a0": " ",
    }
)


@dataclass(frozen=True)
class FontChoice:
    """The font family registered on a document and how its text must be prepared."""

    family: str
    prepare: Callable[[str], str]


def use_fonts(pdf: FPDF, directory: Path | None = None) -> FontChoice:
    """Register the opinion's font on `pdf` (regular and bold) and return it."""
    directory = directory or FONT_DIRECTORY
    regular, bold = directory / _REGULAR, directory / _BOLD
    if regular.is_file() and bold.is_file():
        pdf.add_font("DejaVu", "", str(regular))
        pdf.add_font("DejaVu", "B", str(bold))
        return FontChoice("DejaVu", _Coverage(_characters(pdf, "dejavu", "dejavuB")))
    log.warning(
        "font %s not found (Debian package fonts-dejavu-core): the opinion PDF falls back "
        "to Helvetica and Latin-1 text",
        regular,
    )
    return FontChoice("Helvetica", latin1)


def _characters(pdf: FPDF, *font_keys: str) -> frozenset[int]:
    """The code points that every one of the registered fonts `font_keys` has a glyph for."""
    cmaps = []
    for key in font_keys:
        font = pdf.fonts[key]
        if isinstance(font, TTFFont):
            cmaps.append(frozenset(font.ttfont.getBestCmap()))
    return frozenset.intersection(*cmaps)


class _Coverage:
    """Prepares text for a TrueType font: a character it has no glyph for becomes its base
    letter, or '?', rather than a blank (and fpdf2's warning, which would log the text)."""

    def __init__(self, characters: frozenset[int]) -> None:
        self.characters = characters

    def __call__(self, text: str) -> str:
        return _replace(text, lambda char: ord(char) in self.characters or char in "\n\r\t")


def latin1(text: str) -> str:
    """`text` with every character outside Latin-1 replaced by a stand-in: a common
    punctuation mark by its ASCII form, a letter by its base letter, anything else by '?'."""
    return _replace(text.translate(_LATIN1_STAND_INS), lambda char: ord(char) < 256)


def _replace(text: str, shown: Callable[[str], bool]) -> str:
    """`text` with each character that is not `shown` replaced by its base letter (NFKD
    without combining marks) where that is shown, else by '?'."""
    out = []
    for char in text:
        if shown(char):
            out.append(char)
            continue
        base = "".join(
            c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
        )
        out.append(base if base and all(shown(c) for c in base) else "?")
    return "".join(out)
