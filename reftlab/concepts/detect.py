"""Detection, scored the AxBench way: pool each text's projections, then ROC AUC per concept.

For a direction u at a site, a text's score is the maximum over its tokens of ``u . h_t``
(``pooling="mean"`` or ``"last"`` on request). For concept c,

    auroc      = P(score(positive) > score(negative)) + P(tie) / 2      (Mann-Whitney U / (n_p n_n))
    auroc_hard = the same with c's hard negatives in place of its negatives

computed exactly from ranks (ties get their mean rank), so it equals the area under the ROC
curve that ``roc_curve`` traces. An AUROC is NaN where a side has no texts.

>>> auroc([3.0, 2.0], [1.0, 2.0])
0.875
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..models.hooked import HasHooked, HookedModel, hooked_of
from .data import ConceptData
from .states import Pooling, States, capture, encode


def auroc(
    positive: Sequence[float] | np.ndarray | pd.Series, negative: Sequence[float] | np.ndarray | pd.Series
) -> float:
    """Area under the ROC curve of ``positive`` vs ``negative`` scores (NaN if either is empty)."""
    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.asarray(negative, dtype=np.float64).ravel()
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    if np.isnan(pos).any() or np.isnan(neg).any():
        raise ValueError("scores contain NaN; check the states (a non-finite model output?)")
    ranks = _mean_ranks(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _mean_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + 1 + b) / 2  # mean of ranks a+1 .. b
    return ranks


def roc_curve(
    positive: Sequence[float] | np.ndarray | pd.Series, negative: Sequence[float] | np.ndarray | pd.Series
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``: one point per distinct score, from (0, 0) to (1, 1).

    A text counts as detected when its score is >= the threshold.
    """
    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.asarray(negative, dtype=np.float64).ravel()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("a ROC curve needs positive and negative scores")
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    tpr = (pos[None, :] >= thresholds[:, None]).mean(axis=1)
    fpr = (neg[None, :] >= thresholds[:, None]).mean(axis=1)
    return (
        np.concatenate([[0.0], fpr]),
        np.concatenate([[0.0], tpr]),
        np.concatenate([[np.inf], thresholds]),
    )


def score(
    direction: Any,
    model: HookedModel | HasHooked,
    texts: Sequence[str],
    *,
    pooling: Pooling = "max",
    prompts: Sequence[str] | None = None,
    context: bool = False,
    batch_size: int = 16,
    progress: bool = False,
) -> np.ndarray:
    """One detection score per text: ``pooling`` over its tokens of ``u . h_t`` at the direction's site.

    ``direction``: a ``ConceptDirection``. ``model``: a HookedModel (or a ReftModel: its base).
    """
    hooked = hooked_of(model)
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string; wrap it: [text]")
    enc = encode(hooked.tokenizer, list(texts), prompts, context=context)
    states = capture(hooked, enc, direction.site.hook, batch_size=batch_size, progress=progress)
    return states.pool(direction.reading, pooling)[:, 0].double().numpy()


def detection_table(
    directions: Sequence[Any], states: States, data: ConceptData, *, pooling: Pooling = "max"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """AUROC per concept and method on ``data`` (whose texts ``states`` hold, row for row).

    Returns ``(results, scores)``: ``results`` has one row per direction with ``concept,
    method, auroc, auroc_hard, n_positive, n_negative, n_hard``; ``scores`` one row per
    (direction, text of its concept) with ``concept, method, row, label, score``.
    """
    if len(states) != len(data):
        raise ValueError(f"the states hold {len(states)} texts but the data has {len(data)} rows")
    results, scores = [], []
    for d in directions:
        s = states.pool(d.reading, pooling)[:, 0].double().numpy()
        groups = {label: data.rows(d.concept, label) for label in ("positive", "negative", "hard negative")}
        pos = s[groups["positive"]]
        results.append(
            {
                "concept": d.concept,
                "method": d.method,
                "auroc": auroc(pos, s[groups["negative"]]),
                "auroc_hard": auroc(pos, s[groups["hard negative"]]),
                "n_positive": len(groups["positive"]),
                "n_negative": len(groups["negative"]),
                "n_hard": len(groups["hard negative"]),
            }
        )
        for label, rows in groups.items():
            scores += [
                {"concept": d.concept, "method": d.method, "row": r, "label": label, "score": float(s[r])} for r in rows
            ]
    return pd.DataFrame(results), pd.DataFrame(scores, columns=["concept", "method", "row", "label", "score"])
