"""ReFT checkpoints as the vLLM side serves them: interventions and sites, no base model in memory.

vLLM holds the base; reftlab only needs each checkpoint's interventions, the decoder layer
whose output each edits and its positions. ``load_served`` reads a native checkpoint (JSON +
safetensors, never pickle) and checks it against the served base's HF config (architecture,
d_model, layers, vocabulary): a ReFT trained on another base is refused by name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ...io.checkpoint import WEIGHTS_FILE, build_interventions, is_native, read_native
from ...io.folder import resolve_source
from ...sites import BLOCK_HOOK, Positions
from .plan import ServedReft, ServedSite

# The decoder layer's output, the residual stream after block L: what vLLM's layers return as
# (hidden, residual), summed. Other sites live inside vLLM's fused kernels.
_SERVABLE = "hook_resid_post"


def load_served(
    name: str,
    source: str | os.PathLike[str],
    base_config: Any,
    *,
    positions: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> ServedReft:
    """``source`` (a checkpoint folder or Hub id) as a ``ServedReft`` named ``name`` for a base whose
    HF config is ``base_config``; ``positions`` (one spec, or one per intervention) overrides the saved ones."""
    folder = resolve_source(source)
    if not is_native(folder):
        raise ValueError(
            f"ReFT {name!r}: {folder} is not a reftlab checkpoint (no reftlab_config.json); the vLLM engine serves "
            "reftlab's format: load a pyreft folder with reftlab.ReftModel.load and save it again"
        )
    ckpt = read_native(folder)
    _check_base(name, ckpt.identity, base_config)
    edits = build_interventions(ckpt, model_dtype=dtype, device=torch.device(device))
    specs = _positions(name, positions, len(edits))
    sites = []
    for i, (rep, edit) in enumerate(zip(ckpt.config.representations, edits)):
        hook = rep.site.hook
        m = BLOCK_HOOK.match(hook)
        if m is None or m.group(2) != _SERVABLE:
            raise ValueError(
                f"ReFT {name!r}: intervention {ckpt.keys[i]!r} sits at {hook}; the vLLM engine serves block outputs "
                "(blocks.L.hook_resid_post, pyreft's 'block_output'): serve this one with --engine reftlab"
            )
        spec = specs[i] if specs else rep.site.positions
        if spec is None:
            raise ValueError(
                f"ReFT {name!r}: intervention {ckpt.keys[i]!r} has no positions of its own (saved pyreft's way); "
                "give them, e.g. --positions l1"
            )
        sites.append(ServedSite(int(m.group(1)), edit.eval(), Positions.parse(spec)))
    digest = hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()[:16]
    return ServedReft(name, tuple(sites), fingerprint=f"{digest}:{','.join(str(s.positions) for s in sites)}")


def load_all(
    refts: Mapping[str, str], base_config: Any, positions: Mapping[str, Sequence[str]] | None = None, **kw: Any
) -> dict[str, ServedReft]:
    """``{name: checkpoint}`` loaded with ``load_served``; errors name the ReFT and its folder."""
    out = {}
    for name, path in refts.items():
        try:
            out[name] = load_served(name, path, base_config, positions=(positions or {}).get(name), **kw)
        except (ValueError, FileNotFoundError, NotADirectoryError) as e:
            raise ValueError(f"--reft {name}={path}: {e}") from None
    return out


def _positions(name: str, specs: Sequence[str] | None, n: int) -> list[str] | None:
    if not specs:
        return None
    if len(specs) not in (1, n):
        raise ValueError(f"ReFT {name!r}: {len(specs)} position specs for {n} interventions; give 1 or {n}")
    return [specs[0]] * n if len(specs) == 1 else list(specs)


def _check_base(name: str, identity: Any, config: Any) -> None:
    text = getattr(config, "get_text_config", lambda: config)()
    archs = list(getattr(config, "architectures", None) or [])
    got = {
        "architecture": archs[0] if archs else identity.architecture,
        "d_model": getattr(text, "hidden_size", None),
        "n_layers": getattr(text, "num_hidden_layers", None),
        "vocab_size": getattr(text, "vocab_size", None),
    }
    for field, value in got.items():
        want = getattr(identity, field)
        if value != want:
            raise ValueError(
                f"ReFT {name!r} was trained on {identity.name or identity.name_or_path} ({field} {want}), but the "
                f"served base has {field} {value}: serve it on its own base"
            )


def base_config(model: str | Path) -> Any:
    """The HF config of the base vLLM serves (a folder or a Hub id, through transformers' cache)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(model))
