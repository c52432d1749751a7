"""Figures of a search's trial table (``reftlab.search``), and its one-file HTML page.

>>> import pandas as pd
>>> t = pd.DataFrame({"trial": [0, 1, 2], "rung": [0, 0, 1], "key": ["a", "b", "a"], "layers": ["6", "12", "6"],
...                   "positions": ["l1"] * 3, "kind": ["loreft"] * 3, "rank": [1, 4, 1], "lr": [1e-2] * 3,
...                   "params": [1153, 4612, 1153], "steps": [4, 4, 12], "seconds": [1.0] * 3,
...                   "train_loss": [1.0, 0.5, 0.2], "score": [0.2, 0.4, 0.6], "eval_loss": [2.0, 1.5, 1.0]})
>>> [title for title, _ in search_figures(t, metric="accuracy")]
['accuracy vs trainable parameters', 'accuracy by rung', 'Effect of layers (first rung)', 'Effect of positions (first rung)', 'Effect of kind (first rung)', 'Effect of rank (first rung)', 'Effect of lr (first rung)']
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from .dashboard import page_html, write_page

DIMENSIONS = ("layers", "positions", "kind", "rank", "lr")


def score_vs_params(trials: pd.DataFrame, *, metric: str = "score", best: str | None = None) -> go.Figure:
    """Every trial: held-out score against trainable parameters (log x), one colour per rung."""
    fig = go.Figure()
    for rung, sub in trials.groupby("rung"):
        steps = int(sub["steps"].iloc[0])
        fig.add_trace(
            go.Scatter(
                x=sub["params"],
                y=sub["score"],
                mode="markers",
                name=f"rung {rung} ({steps} steps)",
                text=sub["key"],
                marker={"size": 6 + 3 * int(rung)},
                hovertemplate="%{text}<br>params %{x:,}<br>" + metric + " %{y:.4g}<extra></extra>",
            )
        )
    if best is not None and best in set(trials["key"]):
        row = trials[trials["key"] == best].sort_values("rung").iloc[-1]
        fig.add_trace(
            go.Scatter(
                x=[row["params"]],
                y=[row["score"]],
                mode="markers",
                name="best",
                marker={"symbol": "star", "size": 18, "color": "gold", "line": {"width": 1, "color": "black"}},
                hovertemplate=f"best: {html.escape(best)}<extra></extra>",
            )
        )
    fig.update_layout(xaxis={"type": "log", "title": "trainable parameters"}, yaxis={"title": metric}, height=450)
    return fig


def score_by_rung(trials: pd.DataFrame, *, metric: str = "score") -> go.Figure:
    """Each candidate's score across the rungs it reached (longer training to the right)."""
    fig = go.Figure()
    for key, sub in trials.sort_values("rung").groupby("key", sort=False):
        fig.add_trace(
            go.Scatter(
                x=sub["steps"],
                y=sub["score"],
                mode="lines+markers",
                name=str(key),
                showlegend=len(sub) > 1,
                hovertemplate=f"{html.escape(str(key))}<br>steps %{{x}}<br>{metric} %{{y:.4g}}<extra></extra>",
            )
        )
    fig.update_layout(xaxis={"type": "log", "title": "training steps"}, yaxis={"title": metric}, height=450)
    return fig


def dimension_effect(trials: pd.DataFrame, dimension: str, *, metric: str = "score") -> go.Figure:
    """First-rung scores per value of one dimension (a box per value, every trial a point)."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension={dimension!r}; use one of {', '.join(DIMENSIONS)}")
    first = trials[trials["rung"] == trials["rung"].min()]
    fig = go.Figure()
    values = sorted(first[dimension].unique(), key=lambda v: (isinstance(v, str), v))
    for value in values:
        sub = first[first[dimension] == value]
        fig.add_trace(
            go.Box(
                y=sub["score"],
                name=f"{value:g}" if isinstance(value, float) else str(value),
                boxpoints="all",
                jitter=0.3,
                text=sub["key"],
                hovertemplate="%{text}<br>" + metric + " %{y:.4g}<extra></extra>",
            )
        )
    fig.update_layout(xaxis={"title": dimension}, yaxis={"title": metric}, showlegend=False, height=380)
    return fig


def search_figures(
    trials: pd.DataFrame, *, metric: str = "score", best: str | None = None
) -> list[tuple[str, go.Figure]]:
    """The search page's (title, figure) pairs."""
    out = [
        (f"{metric} vs trainable parameters", score_vs_params(trials, metric=metric, best=best)),
        (f"{metric} by rung", score_by_rung(trials, metric=metric)),
    ]
    out += [(f"Effect of {d} (first rung)", dimension_effect(trials, d, metric=metric)) for d in DIMENSIONS]
    return out


def write_search_page(
    trials: pd.DataFrame,
    path: str | os.PathLike,
    *,
    metric: str = "score",
    best: str | None = None,
    reports: pd.DataFrame | None = None,
) -> Path:
    """Write ``search.html``: the best setting, the figures, and the trial table (one file, offline).

    ``reports``: one row per score a trial reported at a rung (the columns of ``trials``); the figures
    plot it when given, the table shows ``trials`` (one row per trial)."""
    intro = f"<p>{len(trials)} trials; best: <code>{html.escape(best or '?')}</code></p>"
    table = trials.to_html(index=False, float_format=lambda x: f"{x:.4g}", border=0)
    plotted = trials if reports is None or reports.empty else reports
    text = page_html(search_figures(plotted, metric=metric, best=best), title="reftlab search", intro=intro)
    text = text.replace("</body></html>", f"<h2>Trials</h2>{table}\n</body></html>")
    return write_page(text, path)
