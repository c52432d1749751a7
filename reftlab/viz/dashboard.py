"""One self-contained HTML report of a ReFT: a summary first, then one section per site.

``write_dashboard(reft_model, prompts, path)`` runs ``project``, ``decode``, ``compare`` and
``attribute`` on the prompts, formatted as in training (the chat template and system prompt
recorded with the checkpoint, unless ``prompt_format=False``), and writes ONE file:

1. Summary: what the ReFT is (sites, kinds, ranks, parameters, the positions each
   intervention used, how prompts were formatted); with a training run's ``run.json``,
   its loss curve and the held-out answers before and after training;
2. one section per site: projections per token, before vs after, decoded directions;
3. across sites: subspace angles and overlap, attribution by ablation;
4. with ``patching=`` (a ``reftlab.analysis.patch`` table or a ``reftlab.analysis.PatchSweep``),
   activation patching: one layer x position heatmap per patched component;
5. the config, collapsed.

plotly.js is inlined (about 4.5 MB), so the file opens offline. A small script placed
before plotly.js lists any JavaScript error at the top of the page (``#reftlab-errors``)
instead of failing silently. The file is written to a temporary name and renamed.

``dashboard_main`` is the body of ``reftlab dashboard CHECKPOINT [--prompts FILE] -o OUT``.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.offline
from torch import Tensor

from ..analysis import PatchSweep, attribute, compare, decode, mean_edit, project, read_prompts, subspaces
from ..analysis.capture import positions_used
from ..analysis.prompts import Format, as_prompt_set
from ..analysis.prompts import prompt_format as resolve_format
from ..atomic import write_text
from ..attach import ReftLike
from .figures import (
    angle_heatmap,
    attribution_bars,
    decode_bars,
    loss_curve,
    patch_heatmap,
    projection_heatmap,
    projection_shift,
)
from .summary import STYLE as SUMMARY_STYLE
from .summary import generations_html, summary_html

_ERROR_CATCHER = """<script>
window.reftlabErrors = [];
function reftlabReport(msg) {
  window.reftlabErrors.push(String(msg));
  var box = document.getElementById("reftlab-errors");
  if (box) { box.style.display = "block"; box.textContent = "JavaScript errors: " + window.reftlabErrors.join(" | "); }
}
window.addEventListener("error", function (e) { reftlabReport(e.message); });
window.addEventListener("unhandledrejection", function (e) { reftlabReport(e.reason); });
</script>"""

_STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
pre { background: #f6f6f6; padding: 12px; overflow-x: auto; font-size: 12px; }
#reftlab-errors { display: none; background: #fdd; border: 1px solid #c00; padding: 8px; }
.figure { margin: 12px 0 28px; }
</style>"""


@dataclass
class Figures:
    """The dashboard's analyses: figures per intervention key, figures across sites, and
    what was analysed (the positions each intervention used, the prompt format)."""

    sites: dict[str, list[tuple[str, go.Figure]]]
    across: list[tuple[str, go.Figure]]
    positions_used: dict[str, str]
    prompt_format: Format
    n_prompts: int


def dashboard_figures(
    reft_model: ReftLike,
    prompts: Any,
    *,
    positions: Any = None,
    prompt_format: Any = None,
    targets: Sequence[str | int] = (),
    reference: Mapping[str, Any] | None = None,
    max_prompts: int = 40,
    batch_size: int = 32,
    progress: bool = True,
) -> Figures:
    """Run ``project``, ``decode``, ``compare`` and ``attribute`` and draw their figures.

    ``positions`` and ``prompt_format`` as in ``reftlab.analysis.project``: None uses each
    site's own positions and the prompt format recorded with the checkpoint.
    """
    prompt_set = as_prompt_set(prompts)
    keys = list(reft_model.interventions)
    used = positions_used(reft_model, positions, keys, "dashboard")  # a clear error before any work
    fmt = resolve_format(reft_model, prompt_format)
    common = {"positions": positions, "prompt_format": fmt, "batch_size": batch_size}
    proj = project(reft_model, prompt_set, progress=progress, **common)
    dec = decode(reft_model, prompts=prompt_set, **common)
    sites: dict[str, list[tuple[str, go.Figure]]] = {
        k: [
            ("Projection per token", projection_heatmap(proj, k, max_prompts=max_prompts)),
            ("Before vs after, at the edited tokens", projection_shift(proj, k)),
            ("Directions read through the unembedding", decode_bars(dec, k)),
        ]
        for k in keys
    }
    named: dict[str, Any] = dict(subspaces(reft_model))
    named.update({f"{k} mean edit": mean_edit(reft_model, prompt_set, k, **common) for k in keys})
    named.update(dict(reference or {}))
    table = compare(named)
    across = [
        ("Subspace angles", angle_heatmap(table, "angle_0")),
        ("Subspace overlap", angle_heatmap(table, "overlap")),
    ]
    n_dirs = sum(iv.rank for iv in reft_model.interventions.values())
    attr = attribute(reft_model, prompt_set, targets=targets, directions=n_dirs <= 16, progress=progress, **common)
    across += [(f"Attribution: {m}", attribution_bars(attr, m)) for m in dict.fromkeys(attr["metric"])]
    return Figures(sites, across, used, fmt, len(prompt_set))


def page_html(
    items: Sequence[tuple[str, go.Figure] | go.Figure | str], *, title: str, intro: str = "", style: str = ""
) -> str:
    """A self-contained page: ``intro`` (HTML), then each item; plotly.js inlined once.

    An item is a (heading, figure) pair (an ``h2`` and the figure), a bare figure, or a
    string of HTML placed as is. Figures get the ids ``reftlab-fig-0``, ``reftlab-fig-1``, ...
    """
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        _STYLE.replace("</style>", style + "</style>"),
        _ERROR_CATCHER,
        f"<script>{plotly.offline.get_plotlyjs()}</script>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<div id='reftlab-errors'></div>",
        intro,
    ]
    n = 0
    for item in items:
        if isinstance(item, str):
            parts.append(item)
            continue
        heading, fig = item if isinstance(item, tuple) else ("", item)
        body = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"reftlab-fig-{n}",
            config={"displaylogo": False, "responsive": True},
        )
        n += 1
        if heading:
            parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(f"<div class='figure'>{body}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_page(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` to ``path`` (an existing folder, ``.html``) through a temporary file and a rename."""
    return write_text(_html_path(path), text)


def _html_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"page path {path} must end in .html")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")
    return path


def concept_link(concept_report: str | None) -> str:
    """The paragraph linking a concept report, or nothing."""
    if concept_report is None:
        return ""
    href = html.escape(concept_report, quote=True)
    return f"<p id='reftlab-concept-report'>Concept report: <a href=\"{href}\">{html.escape(concept_report)}</a></p>"


def dashboard_html(
    reft_model: ReftLike,
    figures: Figures,
    *,
    title: str = "reftlab dashboard",
    run: Mapping[str, Any] | None = None,
    checkpoint: str | None = None,
    concept_report: str | None = None,
    patching: pd.DataFrame | None = None,
) -> str:
    """The page: a summary first (what the ReFT is; with ``run``, a training run's ``run.json``:
    its loss curve and before/after answers), one section per site, the figures across sites,
    and the config, collapsed, at the end. ``concept_report``: a link (URL or relative path) to a
    concept report (``reftlab.viz.write_concept_report``), shown first. ``patching``: a
    ``reftlab.analysis.patch`` table, drawn after the figures across sites (``patching_items``)."""
    items: list[tuple[str, go.Figure] | go.Figure | str] = [
        "<section id='reftlab-summary'><h2>Summary</h2>",
        concept_link(concept_report),
        summary_html(
            reft_model,
            figures.positions_used,
            n_prompts=figures.n_prompts,
            prompt_note=f"formatted {figures.prompt_format.describe()}",
            checkpoint=checkpoint,
        ),
    ]
    losses = list((run or {}).get("losses") or [])
    generations = generations_html(run or {})
    if losses or generations:
        items.append("<div class='summary-grid'>")
        if losses:
            items += ["<div>", loss_curve(losses, title=f"Training loss ({len(losses)} steps)"), "</div>"]
        if generations:
            items.append(f"<div>{generations}</div>")
        items.append("</div>")
    items.append("</section>")
    for (key, iv), site in zip(reft_model.interventions.items(), reft_model.sites):
        heading = f"Site {key}: {site.hook}, {iv.kind} rank {iv.rank}, positions {figures.positions_used.get(key, '')}"
        items.append(f"<h2 class='site' id='site-{html.escape(key)}'>{html.escape(heading)}</h2>")
        for sub, fig in figures.sites[key]:
            items += [f"<h3>{html.escape(sub)}</h3>", fig]
    items.append("<h2>Across sites</h2>")
    for sub, fig in figures.across:
        items += [f"<h3>{html.escape(sub)}</h3>", fig]
    if patching is not None:
        items += patching_items(patching)
    config = json.dumps(reft_model.config.to_json(), indent=2)
    items.append(
        "<details class='config'><summary>Config (JSON)</summary>"
        f"<pre id='reftlab-config'>{html.escape(config)}</pre>"
        f"<pre>{html.escape(repr(reft_model))}</pre></details>"
    )
    return page_html(items, title=title, style=SUMMARY_STYLE)


def patching_items(table: pd.DataFrame) -> list[go.Figure | str]:
    """The activation-patching section: one ``patch_heatmap`` of ``recovered`` per patched component."""
    missing = {"layer", "component", "position", "pair", "recovered"} - set(table.columns)
    if missing:
        raise ValueError(
            f"patching= must be a table from reftlab.analysis.patch (or a PatchSweep); it lacks columns {sorted(missing)}"
        )
    items: list[go.Figure | str] = ["<h2 id='reftlab-patching'>Activation patching</h2>"]
    for comp in dict.fromkeys(table["component"]):
        items += [f"<h3>{html.escape(str(comp))}</h3>", patch_heatmap(table, component=str(comp))]
    return items


def write_dashboard(
    reft_model: ReftLike,
    prompts: Any,
    path: str | os.PathLike,
    *,
    title: str = "reftlab dashboard",
    positions: Any = None,
    prompt_format: Any = None,
    run: Mapping[str, Any] | None = None,
    checkpoint: str | None = None,
    targets: Sequence[str | int] = (),
    reference: Mapping[str, Tensor] | None = None,
    max_prompts: int = 40,
    batch_size: int = 32,
    progress: bool = True,
    concept_report: str | os.PathLike | None = None,
    patching: pd.DataFrame | PatchSweep | None = None,
) -> Path:
    """Analyse ``reft_model`` on ``prompts`` and write one self-contained HTML file; returns its path.

    ``positions``: for sites saved without positions (pyreft's way), or to override them
    (a spec for every intervention, a list with one per intervention, or a dict by key).
    ``prompt_format``: None formats prompts as training did (recorded with the checkpoint),
    False as raw text. ``run``: a training run's ``run.json`` (loss curve, before/after
    answers) for the summary. ``targets``: tokens whose logits ``attribute`` tracks;
    ``reference``: named directions (a probe, a ``mean_difference_direction``) added to the
    angle heatmaps. ``concept_report``: an existing concept report
    (``reftlab concepts fit``'s ``report.html``) to link to, by its path relative to the dashboard's folder.
    ``patching``: an activation-patching sweep for its own section: a ``reftlab.analysis.patch``
    table, or a ``reftlab.analysis.PatchSweep`` run here on the base model (without the ReFT).
    """
    _html_path(path)  # fail before the analysis runs
    link = None
    if concept_report is not None:
        report = Path(concept_report)
        if not report.is_file():
            raise FileNotFoundError(f"no concept report at {report}; run `reftlab concepts fit ... -o DIR` first")
        link = Path(os.path.relpath(report.resolve(), Path(path).resolve().parent)).as_posix()
    if isinstance(patching, PatchSweep):
        patching = patching.run(reft_model, batch_size=batch_size)
    figures = dashboard_figures(
        reft_model,
        prompts,
        positions=positions,
        prompt_format=prompt_format,
        targets=targets,
        reference=reference,
        max_prompts=max_prompts,
        batch_size=batch_size,
        progress=progress,
    )
    return write_page(
        dashboard_html(
            reft_model, figures, title=title, run=run, checkpoint=checkpoint, concept_report=link, patching=patching
        ),
        path,
    )


def dashboard_main(
    checkpoint_dir: str | os.PathLike,
    prompts_file: str | os.PathLike | None,
    out_path: str | os.PathLike,
    model: Any = None,
    *,
    loader: Callable[[Any, Any], Any] | None = None,
    **options: Any,
) -> Path:
    """``reftlab dashboard CHECKPOINT [--prompts FILE] -o OUT``: load, analyse, write.

    ``model``: a ``HookedModel``, a model name/folder/Hub id for ``reftlab.load_model``,
    or None for the base model the checkpoint records. ``loader(checkpoint_dir, hooked_model)
    -> ReftModel`` defaults to ``ReftModel.load``. ``prompts_file``: .txt (one prompt per
    line), .jsonl/.json/.csv with a ``prompt`` field; None takes the held-out prompts of the
    checkpoint's ``run.json`` (written by ``reftlab train``). ``run.json``, when present,
    also gives the summary its loss curve and answers. ``options`` go to ``write_dashboard``.
    """
    from ..models import HookedModel, load_model
    from ..reft_model import ReftModel

    run = read_run(checkpoint_dir)
    if prompts_file is not None:
        prompts: Any = read_prompts(prompts_file)  # a bad prompt file fails before anything is loaded
    elif run and (answered := run.get("after") or run.get("before")):
        prompts = [r["prompt"] for r in answered]
    else:
        raise ValueError(
            f"no prompts: give --prompts FILE (one prompt per line); {checkpoint_dir} has no run.json with "
            "held-out prompts to fall back on"
        )
    _html_path(out_path)
    if model is None:
        from ..io import load_base, resolve_source

        hooked = load_base(resolve_source(checkpoint_dir))
    else:
        hooked = model if isinstance(model, HookedModel) else load_model(model)
    reft_model = (loader or ReftModel.load)(checkpoint_dir, hooked)
    title = f"reftlab dashboard: {Path(checkpoint_dir).name}"
    options = {"title": title, "run": run, "checkpoint": str(checkpoint_dir), **options}
    return write_dashboard(reft_model, prompts, out_path, **options)


def read_run(checkpoint_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``run.json`` that ``reftlab train`` writes beside a checkpoint, or None."""
    path = Path(checkpoint_dir) / "run.json"
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg}); remove it or write it again") from None
    if not isinstance(run, dict):
        raise ValueError(f"{path} must hold a JSON object (losses, before, after), got {type(run).__name__}")
    return run
