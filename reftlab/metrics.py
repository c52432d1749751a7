"""Metrics for judging generations: text-only ones (``emoji_fraction``) and scored ones
(``exact_match``, ``accuracy``, ...) that compare a prediction with its example."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

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


# --- scored metrics: (prediction, example) -> float, for reftlab.evaluate and reftlab.search ---


@dataclass(frozen=True)
class Metric:
    """A held-out metric: ``score(prediction, example)`` per example, averaged.

    ``example`` is a mapping with ``prompt``, ``response`` (the reference text) and, for
    multiple-choice and classification data, ``choices`` and ``answer`` (an index).
    ``needs`` says what the model must produce: ``"text"`` (greedy generation, or the
    predicted class name for a classifier) or ``"loss"`` (the response tokens' mean
    cross-entropy; computed by ``reftlab.evaluate`` itself, ``score`` is unused).
    """

    name: str
    score: Callable[[str, Mapping[str, Any]], float]
    higher_is_better: bool = True
    needs: Literal["text", "loss"] = "text"


def normalize(text: str) -> str:
    """Lower case, inner whitespace collapsed, surrounding whitespace and end punctuation dropped.

    >>> normalize("  The  Answer. ")
    'the answer'
    """
    return " ".join(text.split()).strip(" .!?,;:\"'").casefold()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the prediction, stripped of surrounding whitespace, equals the reference.

    >>> exact_match(" 109", "109"), exact_match("109.", "109"), exact_match("It is 109", "109")
    (1.0, 0.0, 0.0)
    """
    return float(prediction.strip() == reference.strip())


def match_choice(prediction: str, choices: Sequence[str]) -> int | None:
    """The index of the choice a free-text answer names, or None.

    A normalized exact match wins; else the longest choice the answer starts with; else
    the only choice the answer contains. Anything else (no choice, or several) is None.

    >>> match_choice("Find somewhere to go.", ["Make a plan", "Find somewhere to go"])
    1
    >>> match_choice("plausible, because ...", ["plausible", "implausible"]), match_choice("maybe", ["yes", "no"])
    (0, None)
    """
    pred = normalize(prediction)
    norm = [normalize(c) for c in choices]
    if pred in norm:
        return norm.index(pred)
    starts = [(len(c), i) for i, c in enumerate(norm) if c and pred.startswith(c)]
    if starts:
        return max(starts)[1]
    inside = [i for i, c in enumerate(norm) if c and c in pred]
    return inside[0] if len(inside) == 1 else None


def _choice_accuracy(prediction: str, example: Mapping[str, Any]) -> float:
    choices, answer = example.get("choices"), example.get("answer")
    if choices is None or answer is None:
        raise ValueError("metric 'accuracy' needs examples with 'choices' and 'answer' (multiple choice or classes)")
    return float(match_choice(prediction, list(choices)) == int(answer))


def _exact(prediction: str, example: Mapping[str, Any]) -> float:
    return exact_match(prediction, str(example["response"]))


def _contains(prediction: str, example: Mapping[str, Any]) -> float:
    return float(normalize(str(example["response"])) in normalize(prediction))


METRICS: dict[str, Metric] = {
    "exact_match": Metric("exact_match", _exact),
    "accuracy": Metric("accuracy", _choice_accuracy),
    "contains": Metric("contains", _contains),
    "emoji_fraction": Metric("emoji_fraction", lambda prediction, example: emoji_fraction(prediction)),
    "loss": Metric("loss", lambda prediction, example: float("nan"), higher_is_better=False, needs="loss"),
}


def get_metric(metric: "str | Metric | Callable[[str, Mapping[str, Any]], float]") -> Metric:
    """A Metric from its registered name, a Metric, or a Python callable ``(prediction, example) -> float``."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; known: {', '.join(sorted(METRICS))} (or pass a callable)")
        return METRICS[metric]
    if callable(metric):
        return Metric(getattr(metric, "__name__", "custom"), metric)
    raise TypeError(f"metric must be a name, a Metric or a callable, got {type(metric).__name__}")
