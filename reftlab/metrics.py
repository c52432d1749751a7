"""Small text metrics for judging generations (e.g. the emoji walkthrough)."""

from __future__ import annotations

_COMPONENTS = frozenset({0x200D, 0xFE0E, 0xFE0F, 0x20E3})  # ZWJ, variation selectors, keycap
_SINGLES = frozenset({0x00A9, 0x00AE, 0x203C, 0x2049, 0x2122, 0x2139, 0x3030, 0x303D, 0x3297, 0x3299})
_RANGES = (
    (0x2190, 0x21FF),
    (0x2300, 0x23FF),
    (0x24C2, 0x24C2),
    (0x25A0, 0x27BF),
    (0x2900, 0x297F),
    (0x2B00, 0x2BFF),
    (0x1F000, 0x1FAFF),
)


def is_emoji_char(ch: str) -> bool:
    """True for a code point of an emoji sequence (pictographs, ZWJ, variation selectors, keycap)."""
    cp = ord(ch)
    return cp in _COMPONENTS or cp in _SINGLES or any(lo <= cp <= hi for lo, hi in _RANGES)


def emoji_fraction(text: str) -> float:
    """Fraction of the non-whitespace characters of ``text`` that belong to emoji.

    A keycap base (``0-9``, ``#``, ``*``) followed by U+FE0F or U+20E3 counts as emoji.
    An empty answer scores 0.

    >>> emoji_fraction("🤖💬 1️⃣"), emoji_fraction("I am a robot 🤖")
    (1.0, 0.1)
    """
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    hits = 0
    for i, c in enumerate(chars):
        keycap = c in "0123456789#*" and i + 1 < len(chars) and ord(chars[i + 1]) in (0xFE0F, 0x20E3)
        hits += is_emoji_char(c) or keycap
    return hits / len(chars)
