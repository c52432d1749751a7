"""Probe: logistic regression on token states, with optional L1.

Every token of a positive text is labelled 1, every token of a negative text 0 (AxBench's
token-level probe). With features scaled by one number ``s`` (the median token norm; this only
conditions the problem) and both classes weighted to the same total,

    min_{w, c}  mean_t  weight_t * BCE(sigmoid(w . h_t / s + c), y_t)  +  l2/2 |w|^2  +  l1 |w|_1

by full-batch Adam from w = 0 (deterministic). The direction is ``w`` (the scaling does not
change it); the intercept is kept in the metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._base import FitInput, Fitted, unit


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """Settings of the logistic-regression probe."""

    steps: int = 100  # full-batch Adam steps
    lr: float = 0.1  # Adam learning rate (linearly decayed to 0)
    l1: float = 0.0  # L1 penalty on w (0: none; try 1e-3 for a sparse probe)
    l2: float = 1e-4  # L2 penalty on w

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"ProbeConfig.steps={self.steps!r} must be a positive int")
        if not self.lr > 0:
            raise ValueError(f"ProbeConfig.lr={self.lr!r} must be > 0")
        for name in ("l1", "l2"):
            if getattr(self, name) < 0:
                raise ValueError(f"ProbeConfig.{name}={getattr(self, name)!r} must be >= 0")


def fit_probe(inp: FitInput, config: ProbeConfig) -> Fitted:
    x = torch.cat([inp.positive, inp.negative]).float()  # [n, d_model]
    y = torch.cat([torch.ones(len(inp.positive)), torch.zeros(len(inp.negative))])
    if not len(inp.positive) or not len(inp.negative):
        raise ValueError(f"probe for {inp.concept!r} needs positive and negative tokens")
    s = float(x.norm(dim=-1).median()) or 1.0
    x = x / s
    weight = torch.where(y > 0, 0.5 / len(inp.positive), 0.5 / len(inp.negative))  # sums to 1
    w = torch.zeros(x.shape[1], requires_grad=True)
    c = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, c], lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / config.steps)
    with torch.enable_grad():
        for _ in range(config.steps):
            opt.zero_grad()
            logits = x @ w + c  # [n]
            loss = (weight * F.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()
            loss = loss + config.l2 / 2 * w.pow(2).sum() + config.l1 * w.abs().sum()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        logits = x @ w + c
        accuracy = float(((logits > 0).float() == y).float().mean())
    v = unit(w.detach(), f"probe for {inp.concept!r}")
    return Fitted.rank_one(v, intercept=float(c.detach()), train_accuracy=accuracy, loss=float(loss.detach()))
