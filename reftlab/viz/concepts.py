"""Figures and the one-file HTML report of a concept run (``reftlab.concepts.fit_concepts``).

``write_concept_report(run, "report.html")`` writes, with plotly.js inlined once (offline):
the results table, the chosen steering factors with example answers, the tokens each
direction decodes to; then AUROC bars, ROC curves per concept, steering-factor curves and
the cosine similarity of every pair of directions.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .dashboard import page_html, write_page

_COLORS = ["#1f77b4", "#d35400", "#2ca02c", "#8e44ad", "#7f8c8d", "#c0392b", "#16a085", "#b7950b"]


def _color(methods: Sequence[str], method: str) -> str:
    return _COLORS[list(methods).index(method) % len(_COLORS)]


def auroc_bars(results: pd.DataFrame) -> go.Figure:
    """AUROC per concept and method: against negatives (left) and hard negatives (right)."""
    methods = list(dict.fromkeys(results["method"]))
    fig = make_subplots(rows=1, cols=2, subplot_titles=["vs negatives", "vs hard negatives"], shared_yaxes=True)
    for col, column in enumerate(("auroc", "auroc_hard"), start=1):
        for m in methods:
            part = results[results["method"] == m]
            fig.add_trace(
                go.Bar(
                    x=part["concept"],
                    y=part[column],
                    name=m,
                    legendgroup=m,
                    showlegend=col == 1,
                    marker_color=_color(methods, m),
                    hovertemplate=f"{m}<br>%{{x}}: %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_yaxes(range=[0, 1.02], title_text="ROC AUC", row=1, col=1)
    fig.add_hline(y=0.5, line_dash="dot", line_color="gray")
    fig.update_layout(barmode="group", title="Detection: ROC AUC of the max-over-tokens projection", height=420)
    return fig


def roc_curves(run: Any) -> go.Figure:
    """ROC curve of every method, one panel per concept (solid: vs negatives, dashed: vs hard negatives)."""
    concepts = list(dict.fromkeys(run.results["concept"]))
    methods = list(dict.fromkeys(run.results["method"]))
    cols = min(4, len(concepts))
    rows = -(-len(concepts) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=concepts)
    for i, concept in enumerate(concepts):
        r, c = divmod(i, cols)
        for m in methods:
            for against, dash in (("negative", "solid"), ("hard negative", "dash")):
                labels = run.scores[(run.scores.concept == concept) & (run.scores.method == m)]["label"]
                if not (labels == against).any():
                    continue
                fpr, tpr = run.roc(concept, m, against)
                fig.add_trace(
                    go.Scatter(
                        x=fpr,
                        y=tpr,
                        mode="lines",
                        line={"color": _color(methods, m), "dash": dash, "shape": "hv"},
                        name=m,
                        legendgroup=m,
                        showlegend=i == 0 and against == "negative",
                        hovertemplate=f"{m} vs {against}<br>fpr %{{x:.2f}}, tpr %{{y:.2f}}<extra></extra>",
                    ),
                    row=r + 1,
                    col=c + 1,
                )
        fig.add_trace(
            go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"color": "gray", "dash": "dot"}, showlegend=False),
            row=r + 1,
            col=c + 1,
        )
    fig.update_xaxes(title_text="false positive rate", range=[0, 1])
    fig.update_yaxes(title_text="true positive rate", range=[0, 1.02])
    fig.update_layout(title="ROC curves (dashed: against hard negatives)", height=320 * rows + 120)
    return fig


def steering_curves(steering: pd.DataFrame, split: str = "validation") -> go.Figure:
    """Mean proxies against the steering factor, per concept (columns) and proxy (rows); the chosen factor ringed."""
    sub = steering[steering["split"] == split]
    concepts = list(dict.fromkeys(sub["concept"]))
    methods = list(dict.fromkeys(sub["method"]))
    metrics = ["score", "concept_score", "fluency", "relevance"]
    fig = make_subplots(
        rows=len(metrics),
        cols=len(concepts),
        shared_xaxes=True,
        shared_yaxes=True,
        subplot_titles=[c if r == 0 else "" for r in range(len(metrics)) for c in concepts],
        vertical_spacing=0.05,
    )
    for ci, concept in enumerate(concepts, start=1):
        for m in methods:
            part = sub[(sub.concept == concept) & (sub.method == m)].sort_values("alpha")
            if part.empty:
                continue
            for ri, metric in enumerate(metrics, start=1):
                fig.add_trace(
                    go.Scatter(
                        x=part["alpha"],
                        y=part[metric],
                        mode="lines+markers",
                        line={"color": _color(methods, m)},
                        name=m,
                        legendgroup=m,
                        showlegend=ci == 1 and ri == 1,
                        hovertemplate=f"{m} (judge %{{customdata}})<br>alpha %{{x}}: {metric} %{{y:.3f}}<extra></extra>",
                        customdata=part["judge"],
                    ),
                    row=ri,
                    col=ci,
                )
            chosen = part[part["selected"]]
            fig.add_trace(
                go.Scatter(
                    x=chosen["alpha"],
                    y=chosen["score"],
                    mode="markers",
                    marker={"size": 14, "symbol": "circle-open", "color": _color(methods, m), "line": {"width": 2}},
                    showlegend=False,
                    hoverinfo="skip",
                ),
                row=1,
                col=ci,
            )
    for ri, metric in enumerate(metrics, start=1):
        fig.update_yaxes(title_text=metric, range=[0, 1.05], row=ri, col=1)
    fig.update_xaxes(title_text="alpha (x median token norm)", row=len(metrics))
    fig.update_layout(title=f"Steering factor sweep ({split} prompts)", height=220 * len(metrics) + 140)
    return fig


def cosine_heatmap(directions: Sequence[Any]) -> go.Figure:
    """Cosine similarity of the reading directions of every (concept, method) pair."""
    if not directions:
        raise ValueError("no directions to compare")
    u = torch.stack([d.reading for d in directions]).double()
    cos = (u @ u.T).numpy()  # readings are unit vectors
    names = [d.name for d in directions]
    fig = go.Figure(
        go.Heatmap(
            z=cos,
            x=names,
            y=names,
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            texttemplate="%{z:.2f}" if len(names) <= 20 else None,
            hovertemplate="%{y}<br>%{x}<br>cosine %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Cosine similarity between directions",
        yaxis={"autorange": "reversed"},
        height=max(360, 34 * len(names) + 220),
    )
    return fig


def concept_figures(run: Any) -> list[tuple[str, go.Figure]]:
    """The report's (heading, figure) pairs, in page order."""
    out = [("Detection", auroc_bars(run.results)), ("ROC curves", roc_curves(run))]
    if run.steering is not None:
        out.append(("Steering factor", steering_curves(run.steering)))
    out.append(("Directions compared", cosine_heatmap(run.directions)))
    return out


def concept_report_html(run: Any, figures: Sequence[tuple[str, go.Figure]], *, title: str) -> str:
    cfg = run.config
    intro = [
        f"<p>Model <code>{html.escape(run.model_name)}</code>, site <code>{html.escape(cfg.site_hook)}</code>, "
        f"pooling <code>{cfg.pooling}</code>, {len(run.eval_data)} evaluation texts. "
        "See docs/concept-subspaces.md for how to read this page.</p>",
        "<h2>Results</h2>",
        _table(run.results, floats=("auroc", "auroc_hard")),
    ]
    if run.steering is not None:
        chosen = run.steering[run.steering["selected"] & (run.steering["split"] == "test")]
        cols = ["concept", "method", "judge", "alpha", "n", "score", "concept_score", "fluency", "relevance"]
        intro += [
            "<h2>Steering: chosen factor, test prompts</h2>",
            _table(chosen[cols], floats=("alpha", "score", "concept_score", "fluency", "relevance")),
            "<h2>Steered answers (chosen factor, first test prompt)</h2>",
            _examples(run),
        ]
    intro += ["<h2>Tokens each direction promotes through the unembedding</h2>", _decoded(run.decoded)]
    return page_html(figures, title=title, intro="\n".join(intro))


def write_concept_report(run: Any, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write the report of ``run`` to ``path`` (``.html``; temporary file, then a rename)."""
    title = title or f"reftlab concepts: {run.model_name} at {run.config.site_hook}"
    return write_page(concept_report_html(run, concept_figures(run), title=title), path)


def _table(frame: pd.DataFrame, floats: Sequence[str] = ()) -> str:
    shown = frame.copy()
    for c in floats:
        shown[c] = shown[c].map(lambda x: "" if pd.isna(x) else f"{x:.3f}")
    return shown.to_html(index=False, escape=True, border=0, classes="reftlab-table")


def _examples(run: Any) -> str:
    g = run.generations
    chosen = run.steering[run.steering["selected"] & (run.steering["split"] == "test")]
    rows = []
    for _, c in chosen.iterrows():
        part = g[(g.concept == c.concept) & (g.method == c.method) & (g.split == "test")]
        steered = part[np.isclose(part.alpha, c.alpha)]
        base = part[part.alpha == 0]
        if steered.empty or base.empty:
            continue
        rows.append(
            {
                "concept": c.concept,
                "method": c.method,
                "alpha": f"{c.alpha:g}",
                "prompt": steered.iloc[0].prompt,
                "unsteered": base.iloc[0].answer,
                "steered": steered.iloc[0].answer,
            }
        )
    return pd.DataFrame(rows).to_html(index=False, escape=True, border=0, classes="reftlab-table")


def _decoded(decoded: pd.DataFrame) -> str:
    rows = []
    for (concept, method), part in decoded.groupby(["concept", "method"], sort=False):
        top = part[part.side == "top"].sort_values("rank")["token"]
        bottom = part[part.side == "bottom"].sort_values("rank")["token"]
        rows.append(
            {
                "concept": concept,
                "method": method,
                "top": " | ".join(map(repr, top)),
                "bottom": " | ".join(map(repr, bottom)),
            }
        )
    return pd.DataFrame(rows).to_html(index=False, escape=True, border=0, classes="reftlab-table")
