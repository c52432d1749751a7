"""The steering sweep: every (concept, method) at every factor, chosen on validation prompts.

    prompts -> first half "validation", second half "test"
    alpha 0 (the untouched model) and every alpha of the grid, for every steering direction
    -> proxies (``reftlab.concepts.steer``) -> per (concept, method, alpha, split) means
    -> per (concept, method): the alpha with the best validation score (ties: the smaller)

Returns the summary (``steering.csv``) and every answer (``generations``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..models.hooked import HookedModel
from .direction import ConceptDirection
from .states import Pooling
from .steer import Judge, SteerConfig, combine, judge_scores, proxy_scores, steered_generate

JUDGE_ORDER = ("diffmean", "probe", "pca", "reft_r1")
METRICS = ("concept_score", "fluency", "relevance", "score", "fluency_loss", "relevance_loss", "distinct")


def pick_judge(directions: Sequence[ConceptDirection], concept: str, method: str) -> ConceptDirection:
    """The same concept's direction from a different method (``JUDGE_ORDER`` first)."""
    others = {d.method: d for d in directions if d.concept == concept and d.method != method}
    if not others:
        raise ValueError(
            f"steering with {method!r} on {concept!r} is judged by a direction of a *different* method, "
            "and none was fitted; fit at least two methods (e.g. diffmean,probe)"
        )
    for name in JUDGE_ORDER:
        if name in others:
            return others[name]
    return others[sorted(others)[0]]


def steering_sweep(
    hooked: HookedModel,
    directions: Sequence[ConceptDirection],
    judges: Mapping[tuple[str, str], Judge],
    prompts: Sequence[str],
    config: SteerConfig,
    *,
    pooling: Pooling = "max",
    context: bool = False,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(summary, generations)`` for the directions whose method ``config.methods`` allows."""
    prompts = list(prompts)
    if len(prompts) < 2:
        raise ValueError("steering needs at least two instruction prompts (half choose alpha, half report it)")
    steer = [d for d in directions if config.methods is None or d.method in config.methods]
    if not steer:
        raise ValueError(f"no fitted direction has a steering method in {config.methods}")
    n_val = len(prompts) // 2
    split = np.array(["validation"] * n_val + ["test"] * (len(prompts) - n_val))
    gen: dict[str, Any] = {
        "positions": config.positions,
        "max_new_tokens": config.max_new_tokens,
        "batch_size": config.batch_size,
    }

    base_texts, base_ids = steered_generate(hooked, prompts, [None] * len(prompts), **gen, progress=progress)
    base = proxy_scores(hooked, prompts, base_texts, base_ids, batch_size=batch_size)

    rows = [(d, a, p) for d in steer for a in config.alphas for p in range(len(prompts))]
    texts, ids = steered_generate(
        hooked, [prompts[p] for _, _, p in rows], [(d, a) for d, a, _ in rows], **gen, progress=progress
    )
    steered = proxy_scores(hooked, [prompts[p] for _, _, p in rows], texts, ids, batch_size=batch_size)

    judge_list = list(dict.fromkeys(judges[(d.concept, d.method)] for d in steer))
    read: dict[str, Any] = {"pooling": pooling, "context": context, "batch_size": batch_size}
    scores = _Scores(
        prompts=prompts,
        split=split,
        rows=rows,
        base=base,
        steered=steered,
        judge_col={id(j): i for i, j in enumerate(judge_list)},
        base_judged=judge_scores(hooked, judge_list, base_texts, prompts=prompts, **read),
        judged=judge_scores(hooked, judge_list, texts, prompts=[prompts[p] for _, _, p in rows], **read),
    )
    generations = pd.concat([scores.frame(d, judges[(d.concept, d.method)]) for d in steer], ignore_index=True)
    summary = _summary(generations)
    order = ["concept", "method", "judge", "alpha", "split", "n", *METRICS, "selected"]
    cols = ["concept", "method", "judge", "alpha", "split", "prompt", "answer", *METRICS]
    return summary[order], generations[cols]


@dataclass(frozen=True)
class _Scores:
    """Every answer's proxies and judge scores: the untouched model's (alpha 0) and each steered row's."""

    prompts: list[str]
    split: np.ndarray  # "validation" / "test" per prompt
    rows: list[tuple[ConceptDirection, float, int]]  # (direction, alpha, prompt index) per steered answer
    base: pd.DataFrame  # proxies of the untouched answers, one row per prompt
    steered: pd.DataFrame  # proxies of the steered answers, one row per entry of rows
    judge_col: dict[int, int]  # id(judge) -> its column in base_judged / judged
    base_judged: np.ndarray  # [prompt, judge]
    judged: np.ndarray  # [row, judge]

    def frame(self, d: ConceptDirection, j: Judge) -> pd.DataFrame:
        """One direction's answers at alpha 0 and every alpha, scored per split against the untouched ones."""
        prompts, split, rows, base, col = self.prompts, self.split, self.rows, self.base, self.judge_col[id(j)]
        zero = base.assign(alpha=0.0, prompt_id=np.arange(len(prompts)), concept_score=self.base_judged[:, col])
        mine = [i for i, (dd, _, _) in enumerate(rows) if dd is d]
        pid = np.array([rows[i][2] for i in mine])
        swept = self.steered.iloc[mine].assign(
            alpha=[rows[i][1] for i in mine], prompt_id=pid, concept_score=self.judged[mine, col]
        )
        frame = pd.concat([zero, swept], ignore_index=True)
        frame["split"] = split[frame["prompt_id"].to_numpy()]
        frame["prompt"] = [prompts[p] for p in frame["prompt_id"]]
        frame = frame.assign(concept=d.concept, method=d.method, judge=j.direction.method)
        parts = [combine(frame[frame.split == s], base[split == s]) for s in ("validation", "test")]
        return pd.concat(parts, ignore_index=True)


def _summary(generations: pd.DataFrame) -> pd.DataFrame:
    """Means per (concept, method, judge, alpha, split), and per (concept, method) the alpha selected: the best
    validation score above 0 (ties: the smaller alpha)."""
    keys = ["concept", "method", "judge", "alpha", "split"]
    summary = generations.groupby(keys, sort=False)[list(METRICS)].mean().reset_index()
    summary["n"] = generations.groupby(keys, sort=False).size().to_numpy()
    summary["selected"] = False
    for _, group in summary.groupby(["concept", "method"], sort=False):
        val = group[(group.split == "validation") & (group.alpha > 0)].sort_values(
            ["score", "alpha"], ascending=[False, True]
        )
        best = float(val.iloc[0]["alpha"])
        summary.loc[group.index[group.alpha == best], "selected"] = True
    return summary
