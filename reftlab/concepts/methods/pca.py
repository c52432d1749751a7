"""PCA: the top principal component of the positive token states.

    X = H_pos - mean(H_pos)            [n_pos, d_model]
    v = top eigenvector of X^T X       (the direction of largest variance among positive tokens)

A principal component has no sign; ``v`` is oriented so that the mean positive token projects
above the mean negative one (AxBench leaves the sign to the solver). Computed from the
``d_model x d_model`` covariance in float64, so memory does not grow with the token count.
"""

from __future__ import annotations

import torch

from ._base import FitInput, Fitted, oriented, unit


def fit_pca(inp: FitInput) -> Fitted:
    x = inp.positive.double()
    if x.shape[0] < 2:
        raise ValueError(f"pca for {inp.concept!r} needs at least two positive tokens")
    x = x - x.mean(0)
    cov = x.T @ x / (x.shape[0] - 1)  # [d_model, d_model]
    values, vectors = torch.linalg.eigh(cov)  # ascending
    v = unit(vectors[:, -1], f"pca for {inp.concept!r}")
    explained = float(values[-1] / values.clamp(min=0).sum())
    return Fitted.rank_one(oriented(v, inp).float(), explained_variance=explained)
