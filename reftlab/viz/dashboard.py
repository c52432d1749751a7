"""One self-contained HTML report of a ReFT: its config plus every analysis figure.

``write_dashboard(reft_model, prompts, path)`` runs ``project``, ``decode``, ``compare``
and ``attribute`` on the prompts and writes ONE file with plotly.js inlined (about
4.5 MB): it opens offline, with no network. A small script placed before plotly.js
lists any JavaScript error at the top of the page (``#reftlab-errors``) instead of
failing silently. The file is written to a temporary name and renamed.

``dashboard_main`` is the body of ``reftlab dashboard CHECKPOINT --prompts FILE -o OUT``.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.offline
from torch import Tensor

from ..analysis import attribute, compare, decode, mean_edit, project, read_prompts, subspaces
from ..analysis._prompts import as_prompt_set
from ..atomic import write_text
from ..attach import ReftLike
from .figures import angle_heatmap, attribution_bars, decode_bars, projection_heatmap, projection_shift

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


def dashboard_figures(
    reft_model: ReftLike,
    prompts: Any,
    *,
    targets: Sequence[str | int] = (),
    reference: Mapping[str, Any] | None = None,
    max_prompts: int = 40,
    batch_size: int = 32,
    progress: bool = True,
) -> list[tuple[str, go.Figure]]:
    """The dashboard's (section title, figure) pairs, in page order."""
    prompt_set = as_prompt_set(prompts)
    keys = list(reft_model.interventions)
    proj = project(reft_model, prompt_set, batch_size=batch_size, progress=progress)
    out: list[tuple[str, go.Figure]] = []
    for k in keys:
        out.append((f"Projection per token: {k}", projection_heatmap(proj, k, max_prompts=max_prompts)))
        out.append((f"Before vs after: {k}", projection_shift(proj, k)))
    dec = decode(reft_model, prompts=prompt_set, batch_size=batch_size)
    out += [(f"Decoded directions: {k}", decode_bars(dec, k)) for k in keys]
    named: dict[str, Any] = dict(subspaces(reft_model))
    named.update({f"{k} mean edit": mean_edit(reft_model, prompt_set, k, batch_size=batch_size) for k in keys})
    named.update(dict(reference or {}))
    table = compare(named)
    out.append(("Subspace angles", angle_heatmap(table, "angle_0")))
    out.append(("Subspace overlap", angle_heatmap(table, "overlap")))
    n_dirs = sum(iv.rank for iv in reft_model.interventions.values())
    attr = attribute(
        reft_model, prompt_set, targets=targets, directions=n_dirs <= 16, batch_size=batch_size, progress=progress
    )
    out += [(f"Attribution: {m}", attribution_bars(attr, m)) for m in dict.fromkeys(attr["metric"])]
    return out


def page_html(figures: Sequence[tuple[str, go.Figure]], *, title: str, intro: str = "") -> str:
    """A self-contained page: ``intro`` (HTML), then each (heading, figure); plotly.js inlined once."""
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        _STYLE,
        _ERROR_CATCHER,
        f"<script>{plotly.offline.get_plotlyjs()}</script>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<div id='reftlab-errors'></div>",
        intro,
    ]
    for i, (heading, fig) in enumerate(figures):
        body = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"reftlab-fig-{i}",
            config={"displaylogo": False, "responsive": True},
        )
        parts += [f"<h2>{html.escape(heading)}</h2>", f"<div class='figure'>{body}</div>"]
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


def dashboard_html(
    reft_model: ReftLike,
    figures: Sequence[tuple[str, go.Figure]],
    *,
    title: str = "reftlab dashboard",
    concept_report: str | None = None,
) -> str:
    """The dashboard page: the ReFT's summary and config, then each figure.

    ``concept_report``: a link (URL or relative path) to a concept report
    (``reftlab.viz.write_concept_report``), shown at the top.
    """
    config = json.dumps(reft_model.config.to_json(), indent=2)
    link = ""
    if concept_report is not None:
        href = html.escape(concept_report, quote=True)
        link = (
            f"<p id='reftlab-concept-report'>Concept report: <a href=\"{href}\">{html.escape(concept_report)}</a></p>"
        )
    intro = (
        f"{link}<h2>ReFT</h2><pre>{html.escape(repr(reft_model))}</pre>"
        f"<h2>Config</h2><pre id='reftlab-config'>{html.escape(config)}</pre>"
    )
    return page_html(figures, title=title, intro=intro)


def write_dashboard(
    reft_model: ReftLike,
    prompts: Any,
    path: str | os.PathLike,
    *,
    title: str = "reftlab dashboard",
    targets: Sequence[str | int] = (),
    reference: Mapping[str, Tensor] | None = None,
    max_prompts: int = 40,
    batch_size: int = 32,
    progress: bool = True,
    concept_report: str | os.PathLike | None = None,
) -> Path:
    """Analyse ``reft_model`` on ``prompts`` and write one self-contained HTML file; returns its path.

    ``targets``: tokens whose logits ``attribute`` tracks; ``reference``: named directions
    (a probe, a ``mean_difference_direction``) added to the angle heatmaps. ``concept_report``:
    an existing concept report (``reftlab concepts fit``'s ``report.html``) to link to, by its
    path relative to the dashboard's folder.
    """
    _html_path(path)  # fail before the analysis runs
    link = None
    if concept_report is not None:
        report = Path(concept_report)
        if not report.is_file():
            raise FileNotFoundError(f"no concept report at {report}; run `reftlab concepts fit ... -o DIR` first")
        link = Path(os.path.relpath(report.resolve(), Path(path).resolve().parent)).as_posix()
    figures = dashboard_figures(
        reft_model,
        prompts,
        targets=targets,
        reference=reference,
        max_prompts=max_prompts,
        batch_size=batch_size,
        progress=progress,
    )
    return write_page(dashboard_html(reft_model, figures, title=title, concept_report=link), path)


def dashboard_main(
    checkpoint_dir: str | os.PathLike,
    prompts_file: str | os.PathLike,
    out_path: str | os.PathLike,
    model: Any = None,
    *,
    loader: Callable[[Any, Any], Any] | None = None,
    **options: Any,
) -> Path:
    """``reftlab dashboard CHECKPOINT --prompts FILE -o OUT``: load, analyse, write.

    ``model``: a ``HookedModel``, a model name/folder/Hub id for ``reftlab.load_model``,
    or None for the base model the checkpoint records. ``loader(checkpoint_dir, hooked_model) -> ReftModel``
    defaults to ``ReftModel.load`` (reftlab's checkpoints). ``prompts_file``: .txt (one
    prompt per line), .jsonl/.json/.csv with a ``prompt`` field. ``options`` go to
    ``write_dashboard``.
    """
    from ..models import HookedModel, load_model
    from ..reft_model import ReftModel

    prompts = read_prompts(prompts_file)  # fail on a bad prompt file before loading anything
    if loader is None:
        loader = ReftModel.load
    if model is None:
        from ..io import load_base, resolve_source

        hooked = load_base(resolve_source(checkpoint_dir))
    else:
        hooked = model if isinstance(model, HookedModel) else load_model(model)
    reft_model = loader(checkpoint_dir, hooked)
    title = f"reftlab dashboard: {Path(checkpoint_dir).name}"
    return write_dashboard(reft_model, prompts, out_path, **{"title": title, **options})
