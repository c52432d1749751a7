"""Figures for the analysis tables: projections, angles, decoded tokens, attributions.

Each takes the DataFrame its ``reftlab.analysis`` function returns and gives a
``plotly.graph_objects.Figure`` (never shown here).

>>> import pandas as pd
>>> df = pd.DataFrame({"removed": ["none", "k"], "key": [None, "k"], "direction": [None, None],
...                    "metric": ["loss", "loss"], "value": [1.0, 1.5], "delta": [0.0, 0.5]})
>>> type(attribution_bars(df)).__name__
'Figure'
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

_BEFORE, _AFTER = "#7f8c8d", "#d35400"
_VISIBLE = {"\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}


def token_label(text: str) -> str:
    r"""A token's text made visible in a plotly label.

    Line breaks and tabs become arrows (``\u21b5``, ``\u21e5``), other control characters
    their Control Pictures (``\x03`` -> ``\u2403``) or ``U+XXXX``, a token of spaces shows
    them as ``\u2423``, an empty token as ``\u2205``; ``<``, ``>`` and ``&`` are escaped,
    because plotly reads labels as HTML (``<|im_start|>`` would otherwise vanish as an
    unknown tag and leave an empty box).

    >>> token_label("<|im_start|>")
    '&lt;|im_start|&gt;'
    >>> [hex(ord(c)) for c in token_label("\n") + token_label("  ")]
    ['0x21b5', '0x2423', '0x2423']
    """
    if text == "":
        return "\u2205"
    if not text.strip(" "):
        text = "\u2423" * len(text)
    text = "".join(_VISIBLE.get(c) or _invisible(c) or c for c in text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _invisible(c: str) -> str:
    """A visible stand-in for a control or format character ('' for any other)."""
    if unicodedata.category(c) not in ("Cc", "Cf"):
        return ""
    code = ord(c)
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: \x03 -> U+2403
    return "\u2421" if code == 0x7F else f"U+{code:04X}"


def _pick_key(df: pd.DataFrame, key: str | None) -> tuple[str, pd.DataFrame]:
    keys = list(dict.fromkeys(df["key"]))
    if key is None:
        key = keys[0]
    if key not in keys:
        raise ValueError(f"no rows for key {key!r}; the table has {keys}")
    return key, df[df["key"] == key]


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis; special tokens lose their ``<|``/``|>`` first."""
    if len(text) <= width:
        return text
    if text.startswith("<|") and text.endswith("|>"):
        text = text[2:-2]
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def projection_heatmap(
    df: pd.DataFrame, key: str | None = None, direction: str = "dir_0", *, stage: str = "after", max_prompts: int = 40
) -> go.Figure:
    """Prompt x position heatmap of one direction's projection; hover shows each token.

    ``df`` is ``project(...)``'s table; intervened tokens are outlined with markers.
    """
    key, sub = _pick_key(df, key)
    if direction not in sub.columns or sub[direction].isna().all():
        raise ValueError(
            f"{key!r} has no column {direction!r}; directions: {[c for c in sub.columns if c.startswith('dir_')]}"
        )
    sub = sub[(sub["stage"] == stage) & (sub["prompt_id"] < sub["prompt_id"].min() + max_prompts)]
    z = sub.pivot(index="prompt_id", columns="position", values=direction)
    tokens = sub.pivot(index="prompt_id", columns="position", values="token").reindex_like(z)
    # Cells narrow as prompts grow: long tokens are cut to fit (the hover shows them whole).
    width = max(3, 150 // max(z.shape[1], 1))
    full = np.vectorize(lambda t: token_label(t) if isinstance(t, str) else "", otypes=[object])(tokens.values)
    cell = np.vectorize(lambda t: token_label(_fit(t, width)) if isinstance(t, str) else "", otypes=[object])(
        tokens.values
    )
    limit = float(np.nanmax(np.abs(z.values))) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z.values,
            x=list(z.columns),
            y=[f"prompt {i}" for i in z.index],
            text=cell,
            customdata=full,
            texttemplate="%{text}",
            textfont={"size": 9},
            colorscale="RdBu",
            zmid=0,
            zmin=-limit,
            zmax=limit,
            hovertemplate="%{y}, position %{x}<br>token %{customdata}<br>" + direction + " = %{z:.3f}<extra></extra>",
            colorbar={"title": direction},
        )
    )
    hit = sub[sub["intervened"]]
    fig.add_trace(
        go.Scatter(
            x=hit["position"],
            y=[f"prompt {i}" for i in hit["prompt_id"]],
            mode="markers",
            marker={"symbol": "square-open", "size": 14, "color": "black"},
            name="intervened",
            hoverinfo="skip",
        )
    )
    site = f"{sub['hook'].iloc[0]}" if len(sub) else key
    fig.update_layout(
        title=f"{key}: projection on {direction} ({stage} the intervention) at {site}",
        xaxis_title="position",
        yaxis={"autorange": "reversed"},
        height=max(300, 22 * len(z) + 140),
        legend={"orientation": "h", "y": -0.15},
    )
    return fig


def projection_shift(df: pd.DataFrame, key: str | None = None) -> go.Figure:
    """Before vs after projections on each direction at the intervened tokens (box plots)."""
    key, sub = _pick_key(df, key)
    sub = sub[sub["intervened"]]
    dirs = [c for c in sub.columns if c.startswith("dir_") and sub[c].notna().any()]
    fig = go.Figure()
    for stage, color in (("before", _BEFORE), ("after", _AFTER)):
        part = sub[sub["stage"] == stage]
        long = part.melt(id_vars=["token"], value_vars=dirs, var_name="direction", value_name="projection")
        fig.add_trace(
            go.Box(
                x=long["direction"],
                y=long["projection"],
                name=stage,
                marker_color=color,
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                text=[token_label(t) for t in long["token"]],
            )
        )
    fig.update_layout(
        boxmode="group",
        title=f"{key}: projections at intervened tokens, before vs after",
        yaxis_title="projection",
        height=380,
    )
    return fig


def angle_heatmap(table: pd.DataFrame, value: str = "angle_0") -> go.Figure:
    """Heatmap of ``compare(...)``'s ``angle_0`` (smallest principal angle, degrees) or ``overlap``."""
    if value not in table.columns:
        raise ValueError(f"compare table has no column {value!r}; use 'overlap' or one of the angle_i columns")
    names = list(dict.fromkeys(table["a"]))
    z = table.pivot(index="a", columns="b", values=value).reindex(index=names, columns=names)
    is_angle = value.startswith("angle")
    fig = go.Figure(
        go.Heatmap(
            z=z.values,
            x=names,
            y=names,
            colorscale="Viridis_r" if is_angle else "Viridis",
            zmin=0,
            zmax=90 if is_angle else 1,
            texttemplate="%{z:.1f}" if is_angle else "%{z:.2f}",
            colorbar={"title": "degrees" if is_angle else "overlap"},
        )
    )
    label = "smallest principal angle" if value == "angle_0" else value
    fig.update_layout(
        title=f"Subspace comparison: {label}", yaxis={"autorange": "reversed"}, height=max(320, 60 * len(names) + 160)
    )
    return fig


def decode_bars(table: pd.DataFrame, key: str | None = None) -> go.Figure:
    """Top (promoted) and bottom (suppressed) tokens of each direction, one row per direction."""
    key, sub = _pick_key(table, key)
    dirs = list(dict.fromkeys(sub["direction"]))
    fig = make_subplots(
        rows=len(dirs),
        cols=2,
        subplot_titles=[f"{d}: {s}" for d in dirs for s in ("top", "bottom")],
        horizontal_spacing=0.18,
        vertical_spacing=min(0.12, 0.5 / max(len(dirs), 1)),
    )
    for row, d in enumerate(dirs, start=1):
        for col, side in enumerate(("top", "bottom"), start=1):
            part = sub[(sub["direction"] == d) & (sub["side"] == side)].sort_values("rank", ascending=False)
            labels = [token_label(t) for t in part["token"]]
            # One bar per rank (two tokens may decode to the same text); the token is the tick label.
            fig.add_trace(
                go.Bar(
                    x=part["logit"],
                    y=list(part["rank"]),
                    customdata=labels,
                    orientation="h",
                    showlegend=False,
                    marker_color=_AFTER if side == "top" else _BEFORE,
                    hovertemplate="%{customdata}: %{x:.2f}<extra></extra>",
                ),
                row=row,
                col=col,
            )
            fig.update_yaxes(tickvals=list(part["rank"]), ticktext=labels, row=row, col=col)
    fig.update_layout(title=f"{key}: directions read through the unembedding", height=max(320, 240 * len(dirs)))
    return fig


def attribution_bars(table: pd.DataFrame, metric: str = "loss") -> go.Figure:
    """Change of ``metric`` when each site (or direction) is removed, from ``attribute(...)``."""
    sub = table[(table["metric"] == metric) & (table["removed"] != "none")]
    if sub.empty:
        raise ValueError(f"no ablations for metric {metric!r}; metrics: {sorted(set(table['metric']))}")
    fig = go.Figure(
        go.Bar(
            x=sub["delta"],
            y=sub["removed"],
            orientation="h",
            marker_color=np.where(sub["delta"] >= 0, _AFTER, _BEFORE),
            hovertemplate="%{y}: delta %{x:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Effect of removing each part on {metric} (value - full ReFT)",
        xaxis_title=f"delta {metric}",
        yaxis={"autorange": "reversed"},
        height=max(280, 40 * len(sub) + 160),
    )
    return fig


def loss_curve(losses: list[float], *, title: str = "Training loss") -> go.Figure:
    """The loss of every optimizer step (e.g. ``run.json``'s ``losses``), as a line."""
    if not losses:
        raise ValueError("no losses to plot")
    fig = go.Figure(
        go.Scatter(
            x=list(range(1, len(losses) + 1)),
            y=list(losses),
            mode="lines+markers" if len(losses) <= 60 else "lines",
            line={"color": _AFTER},
            hovertemplate="step %{x}: loss %{y:.4f}<extra></extra>",
        )
    )
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss", height=300, margin={"t": 50, "b": 40})
    return fig


def patch_heatmap(table: pd.DataFrame, value: str = "recovered", component: str | None = None) -> go.Figure:
    """``reftlab.analysis.patch``'s table as a layer x position heatmap of ``value``, averaged over pairs.

    ``component``: which component to show when the sweep patched several (default: the first).
    """
    comp = component if component is not None else str(table["component"].iloc[0])
    sub = table[table["component"] == comp]
    if sub.empty:
        raise ValueError(f"the table has no component {comp!r}; it has {sorted(set(table['component']))}")
    grid = sub.pivot_table(index="layer", columns="position", values=value, aggfunc="mean")
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=[str(p) for p in grid.columns],
            y=[str(layer) for layer in grid.index],
            colorscale="RdBu",
            zmid=0.0,
            colorbar={"title": value},
            hovertemplate="layer %{y}, position %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Activation patching ({comp}): {value}, mean over {sub['pair'].nunique()} pairs",
        xaxis_title="position",
        yaxis_title="layer",
    )
    return fig
