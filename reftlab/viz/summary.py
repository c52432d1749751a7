"""The dashboard's first screen, as HTML: what the ReFT is, how it was analysed, how training went.

``summary_html`` gives the overview sentence and one table row per intervention (site,
layer, component, kind, rank, parameters, the positions the analysis used);
``generations_html`` the before/after answers of a training run (``run.json``). Every
string from the model or a file is HTML-escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

STYLE = """
#reftlab-summary { background: #eef4fa; border: 1px solid #c9d9ea; border-radius: 6px; padding: 4px 18px 12px; }
#reftlab-summary h2 { margin-top: 0.6em; border: none; }
table.reftlab { border-collapse: collapse; font-size: 13px; margin: 8px 0 14px; }
table.reftlab th, table.reftlab td { border: 1px solid #c9d9ea; padding: 3px 8px; text-align: left; vertical-align: top; }
table.reftlab th { background: #dde9f5; }
table.reftlab td.num { text-align: right; font-variant-numeric: tabular-nums; }
.summary-grid { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 18px; align-items: start; }
@media (max-width: 900px) { .summary-grid { grid-template-columns: minmax(0, 1fr); } }
.note { color: #555; font-size: 13px; }
details.config summary { cursor: pointer; font-weight: 600; margin-top: 2em; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def base_description(hooked: Any) -> tuple[str, int]:
    """(``"llama, 30 layers, d_model 576 (smollm2-135m-instruct)"``, the base model's parameter count)."""
    cfg = hooked.hf_model.config
    name = str(getattr(cfg, "_name_or_path", "") or "").rstrip("/").split("/")[-1]
    n = sum(p.numel() for p in hooked.model.parameters())
    text = f"{hooked.cfg['model_type']}, {hooked.n_layers} layers, d_model {hooked.d_model}"
    return (f"{text} ({name})" if name else text), n


def summary_html(
    reft_model: Any,
    positions_used: Mapping[str, str],
    *,
    n_prompts: int,
    prompt_note: str,
    checkpoint: str | None = None,
) -> str:
    """The overview sentence and the table of interventions (see the module docstring)."""
    base, n_base = base_description(reft_model.hooked)
    n_params = reft_model.num_intervention_parameters()
    ivs = list(reft_model.interventions.items())
    kinds = sorted({iv.kind for _, iv in ivs})
    first: dict[int, str] = {}
    rows = []
    for (key, iv), site in zip(ivs, reft_model.sites):
        owner = first.setdefault(id(iv), key)
        params = f"{iv.num_parameters():,}" if owner == key else f"shared with {owner}"
        rows.append(
            "<tr>"
            f"<td>{_e(key)}</td><td><code>{_e(site.hook)}</code></td>"
            f"<td class='num'>{_e('' if site.layer is None else site.layer)}</td><td>{_e(site.component or '')}</td>"
            f"<td>{_e(iv.kind)}</td><td class='num'>{iv.rank}</td><td class='num'>{_e(params)}</td>"
            f"<td>{_e(positions_used.get(key, ''))}</td>"
            "</tr>"
        )
    source = f" from <code>{_e(checkpoint)}</code>" if checkpoint else ""
    head = (
        f"<p><b>{len(ivs)} intervention{'s' if len(ivs) != 1 else ''}</b> ({_e(', '.join(kinds))}){source} "
        f"on {_e(base)}: <b>{n_params:,} parameters</b>, {100 * n_params / max(n_base, 1):.4f}% of the base "
        f"model's {n_base:,}.</p>"
        f"<p class='note'>Analysed on {n_prompts} prompt{'s' if n_prompts != 1 else ''}, {_e(prompt_note)}.</p>"
    )
    table = (
        "<table class='reftlab' id='reftlab-sites'><tr><th>intervention</th><th>site</th><th>layer</th>"
        "<th>component</th><th>kind</th><th>rank</th><th>parameters</th><th>positions used</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    return head + table


def generations_html(run: Mapping[str, Any]) -> str:
    """Before/after answers of ``run.json`` (prompt, base model's answer, the ReFT's, metrics); '' if none."""
    before: Sequence[Mapping[str, Any]] = run.get("before") or []
    after: Sequence[Mapping[str, Any]] = run.get("after") or []
    if not after:
        return ""
    by_prompt = {r.get("prompt"): r for r in before}
    metrics = [k for k in after[0] if k not in ("prompt", "text")]
    head = "<tr><th>prompt</th><th>before training</th><th>after training</th>" + "".join(
        f"<th>{_e(m)}<br>before / after</th>" for m in metrics
    )
    rows = []
    for r in after:
        b = by_prompt.get(r.get("prompt"), {})
        cells = "".join(f"<td class='num'>{_fmt(b.get(m))} / {_fmt(r.get(m))}</td>" for m in metrics)
        rows.append(
            f"<tr><td>{_e(r.get('prompt', ''))}</td><td>{_e(b.get('text', ''))}</td>"
            f"<td>{_e(r.get('text', ''))}</td>{cells}</tr>"
        )
    return (
        "<h3>Held-out prompts, greedy answers</h3>"
        f"<table class='reftlab' id='reftlab-generations'>{head}</tr>{''.join(rows)}</table>"
    )


def _fmt(x: Any) -> str:
    return "" if x is None else f"{x:.2f}" if isinstance(x, float) else _e(x)
