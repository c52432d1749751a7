"""Project each token's representation at a site onto an intervention's subspace.

For intervention ``phi`` at a site and unit directions ``u_1..u_k`` (the rows of its
``subspace()``, each scaled to unit length, or a subspace you pass), every prompt token
at position ``t`` gives, in one forward pass per batch,

    dir_i(before) = u_i . h_t,    dir_i(after) = u_i . phi(h_t),    edit_norm = |phi(h_t) - h_t|

as a tidy DataFrame with two rows per token (``stage`` = "before"/"after"). Positions the
intervention does not edit have ``intervened=False`` and an edit norm of 0.

>>> import reftlab
>>> hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
>>> reft = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations={
...     "layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2}))
>>> df = project(reft, ["hi there", "ok"], progress=False)
>>> {"prompt_id", "token", "position", "layer", "dir_0", "dir_1", "stage", "edit_norm"} <= set(df.columns)
True
>>> int(df[df.stage == "after"].intervened.sum())  # one last token per prompt
2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from ..attach import ReftLike
from .capture import batch_positions, check_keys, eval_mode, forward_seen, position_mask, positions_used
from .prompts import as_prompt_set, batches, n_batches, pad_id, tokenize
from .prompts import prompt_format as resolve_format


def unit_directions(
    subspace: Float[Tensor, "rank d_model"] | Float[Tensor, " d_model"], d_model: int, what: str = "subspace"
) -> Float[Tensor, "rank d_model"]:
    """Rows scaled to unit length; a clear error for the wrong width or a zero row."""
    s = torch.as_tensor(subspace).detach()
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2 or s.shape[-1] != d_model:
        raise ValueError(f"{what} has shape {tuple(s.shape)}; expected [k, d_model={d_model}] (one direction per row)")
    norms = s.float().norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError(f"{what} has an all-zero direction (row {int((norms[:, 0] == 0).nonzero()[0])})")
    return s.float() / norms


def project(
    reft_model: ReftLike,
    prompts: Any,
    key: str | Sequence[str] | None = None,
    *,
    positions: Any = None,
    subspace: Tensor | None = None,
    only_intervened: bool = False,
    batch_size: int = 32,
    column: str = "prompt",
    prompt_format: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Tidy projections of every prompt token at each chosen intervention's site.

    ``key``: one intervention key, a list, or None for all. ``positions``: override the
    sites' positions with a spec (``"l1"``), a per-prompt ``[n_prompts, n]`` index tensor
    (-1 = none), or a dict of those per key. ``subspace``: ``[k, d_model]`` directions to
    project on instead of each intervention's own. ``prompt_format``: None (as in training,
    when the checkpoint recorded it; else raw text), False (raw text), True (the tokenizer's
    chat template) or an object/dict with ``chat_template`` and ``system_prompt``. Columns: ``prompt_id, key, hook,
    layer, component, position, token_id, token, intervened, stage, edit_norm, dir_0..``.
    """
    keys = check_keys(reft_model, key)
    positions_used(reft_model, positions, keys, "project")
    hooked = reft_model.hooked
    dirs = {}
    for k in keys:
        s = reft_model.interventions[k].subspace() if subspace is None else subspace
        dirs[k] = unit_directions(s, hooked.d_model, "subspace" if subspace is not None else f"{k}.subspace()")
    prompt_set = as_prompt_set(prompts, column=column)
    encoded = tokenize(hooked.tokenizer, prompt_set, resolve_format(reft_model, prompt_format))
    parts: dict[str, list[dict[str, np.ndarray]]] = {k: [] for k in keys}
    device = hooked.device
    with eval_mode(reft_model):
        it = batches(encoded, batch_size, pad_id(hooked.tokenizer), device)
        for batch in tqdm(it, total=n_batches(len(encoded), batch_size), desc="project", disable=not progress):
            pos = batch_positions(positions, batch, len(encoded))
            _, seen = forward_seen(reft_model, batch, keys, pos, stop=True)
            valid = batch.attention_mask.bool()
            for k, saw in seen.items():
                edited = position_mask(saw, batch.attention_mask) & valid
                keep = edited if only_intervened else valid
                rows, cols = keep.nonzero(as_tuple=True)  # [N], [N]
                u = dirs[k].to(device=saw.before.device)
                before = saw.before[rows, cols].float()  # [N, d_model]
                after = saw.after[rows, cols].float()
                parts[k].append(
                    {
                        "prompt_id": batch.index.to(rows.device)[rows].cpu().numpy(),
                        "position": cols.cpu().numpy(),
                        "token_id": batch.input_ids[rows, cols].cpu().numpy(),
                        "intervened": edited[rows, cols].cpu().numpy(),
                        "edit_norm": (after - before).norm(dim=-1).cpu().numpy(),
                        "before": (before @ u.T).cpu().numpy(),  # [N, k]
                        "after": (after @ u.T).cpu().numpy(),
                    }
                )
    frames = [_frame(reft_model, k, parts[k], hooked.tokenizer) for k in keys]
    return pd.concat(frames, ignore_index=True)


def _frame(reft_model: ReftLike, key: str, parts: list[dict[str, np.ndarray]], tokenizer: Any) -> pd.DataFrame:
    cat = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    if not cat["intervened"].any():
        raise ValueError(
            f"intervention {key!r} edits no token of any prompt at its positions; "
            "check the prompts are not empty and the positions (e.g. 'l1', 'f3+l3') fit them"
        )
    site = reft_model.sites[list(reft_model.interventions).index(key)]
    _n, k = cat["before"].shape
    vocab = {int(t): tokenizer.decode([int(t)]) for t in np.unique(cat["token_id"])}
    base = {
        "prompt_id": cat["prompt_id"],
        "key": key,
        "hook": site.hook,
        "layer": site.layer,
        "component": site.component,
        "position": cat["position"],
        "token_id": cat["token_id"],
        "token": [vocab[int(t)] for t in cat["token_id"]],
        "intervened": cat["intervened"],
        "edit_norm": cat["edit_norm"],
    }
    halves = []
    for stage in ("before", "after"):
        cols = {f"dir_{i}": cat[stage][:, i] for i in range(k)}
        halves.append(pd.DataFrame({**base, "stage": stage, **cols}))
    df = pd.concat(halves, ignore_index=True)
    df["stage"] = pd.Categorical(df["stage"], categories=["before", "after"])
    df = df.sort_values(["prompt_id", "position", "stage"], kind="stable", ignore_index=True)
    return df
