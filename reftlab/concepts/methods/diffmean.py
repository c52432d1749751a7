"""DiffMean: the difference of the mean positive and mean negative token states.

    v = mean_{t in positive texts} h_t - mean_{t in negative texts} h_t

Every token counts once (a long text weighs more than a short one), as in AxBench; the
means are taken in float64. Marks et al. 2023 (arXiv 2310.06824) call it mass-mean probing.
"""

from __future__ import annotations

from ._base import FitInput, Fitted, unit


def fit_diffmean(inp: FitInput) -> Fitted:
    v = inp.positive.double().mean(0) - inp.negative.double().mean(0)  # [d_model]
    return Fitted.rank_one(unit(v, f"diffmean for {inp.concept!r}").float(), norm=float(v.norm()))
