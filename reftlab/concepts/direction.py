"""A concept direction at a site: what every method returns, and how it is saved and attached.

A ``ConceptDirection`` holds a subspace ``S`` (``[rank, d_model]``; rank 1 for DiffMean, probes,
PCA and ReFT-r1, rank r for a trained LoReFT/DiReFT) and the unit *reading direction* ``u`` in
span(S) that detection projects on. It plugs into the rest of reftlab:

- ``subspace()`` like an intervention's, so ``reftlab.analysis.compare`` / ``principal_angles``
  and ``project(..., subspace=d.subspace())`` take it as is;
- ``intervention(alpha)``: a LobiReFT ``h + R^T b`` with ``R = u^T`` and ``b = alpha * scale``,
  which is exactly additive steering ``h + alpha * scale * u`` (``scale``: the median token
  norm at the site when fitted, so ``alpha = 1`` adds a vector as long as a typical state);
- ``reft_model(model, alpha, positions=...)``: that LobiReFT attached at the site, a ReftModel
  that can be generated with, composed, saved and loaded like any other.

A set of directions is saved as a folder (written atomically) with ``directions.json``
(format, version, the base model's identity, one record per direction) and
``directions.safetensors`` (``"<i>.reading"`` and ``"<i>.subspace"`` per direction). Loading
validates both; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..atomic import atomic_folder
from ..config import ReftConfig, Representation
from ..interventions import LobiReFT
from ..io import ModelIdentity, identify
from ..io.fingerprint import check_identity
from ..models.hooked import HasHooked, HookedModel, hooked_of
from ..sites import Positions, Site

FORMAT = "reftlab-concept-directions"
FORMAT_VERSION = 1
JSON_FILE = "directions.json"
TENSOR_FILE = "directions.safetensors"
_RECORD = ("index", "concept", "method", "hook", "rank", "d_model", "scale", "metadata")


@dataclass(frozen=True, eq=False, kw_only=True)
class ConceptDirection:
    """A concept's reading direction and subspace at a site (see the module docstring)."""

    concept: str
    method: str
    site: Site
    reading: Float[Tensor, " d_model"]
    basis: Float[Tensor, "rank d_model"] | Float[Tensor, " d_model"]  # one direction: rank 1
    scale: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = torch.as_tensor(self.reading).detach().float().cpu()
        b = torch.as_tensor(self.basis).detach().float().cpu()
        b = b[None] if b.ndim == 1 else b
        if r.ndim != 1 or b.ndim != 2 or b.shape[1] != r.shape[0]:
            raise ValueError(
                f"direction {self.concept!r}/{self.method!r}: reading must be [d_model] and basis [rank, d_model]; "
                f"got {tuple(r.shape)} and {tuple(b.shape)}"
            )
        norm = float(r.norm())
        if not norm > 0 or not torch.isfinite(r).all() or not torch.isfinite(b).all():
            raise ValueError(f"direction {self.concept!r}/{self.method!r} is zero or not finite")
        if not (self.scale > 0 and torch.isfinite(torch.tensor(self.scale))):
            raise ValueError(f"direction {self.concept!r}/{self.method!r}: scale={self.scale!r} must be positive")
        object.__setattr__(self, "reading", r if abs(norm - 1.0) < 1e-6 else r / norm)  # unit; loads bit for bit
        object.__setattr__(self, "basis", b)
        if isinstance(self.site, str):
            object.__setattr__(self, "site", Site(hook=self.site))

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.reading.shape[0])

    @property
    def name(self) -> str:
        return f"{self.concept} / {self.method}"

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        """The fitted subspace's rows (for ``compare``, ``principal_angles``, ``project(subspace=)``)."""
        return self.basis

    def intervention(self, alpha: float, *, dtype: torch.dtype | None = None) -> LobiReFT:
        """``h + alpha * scale * u`` as a rank-1 LobiReFT (``R = u^T``, ``b = alpha * scale``)."""
        iv = LobiReFT(d_model=self.d_model, rank=1, init="identity", dtype=dtype)
        with torch.no_grad():
            iv.rotation.copy_(self.reading[None].to(iv.rotation.dtype))
            iv.bias.fill_(float(alpha) * self.scale)
        return iv.eval()

    def reft_model(self, model: HookedModel | HasHooked, alpha: float, *, positions: "str | Positions" = "all") -> Any:
        """A ReftModel on ``model`` that adds ``alpha * scale * u`` at the site's ``positions``.

        ``positions="all"`` edits every token, generated ones included; ``"l1"`` etc. edit prompt
        tokens only (see ``reftlab.generate``).
        """
        from ..reft_model import get_reft_model

        hooked = hooked_of(model)
        rep = Representation(
            site=Site(hook=self.site.hook, positions=Positions.parse(positions)), intervention=self.intervention(alpha)
        )
        return get_reft_model(hooked, ReftConfig(representations=[rep]))

    def __repr__(self) -> str:
        return f"ConceptDirection({self.concept!r}, {self.method!r}, {self.site.hook}, rank={self.rank}, scale={self.scale:.4g})"


def save_directions(
    directions: Sequence[ConceptDirection], folder: str | os.PathLike, *, model: HookedModel | HasHooked | None = None
) -> Path:
    """Write ``directions`` to ``folder`` (replaced atomically); ``model`` records the base model's identity."""
    if not directions:
        raise ValueError("no directions to save")
    widths = {d.d_model for d in directions}
    if len(widths) > 1:
        raise ValueError(f"directions of different widths {sorted(widths)} cannot share one file")
    records, tensors = [], {}
    for i, d in enumerate(directions):
        tensors[f"{i}.reading"] = d.reading.clone()  # own storage: safetensors refuses shared tensors
        tensors[f"{i}.subspace"] = d.basis.clone()
        records.append(
            {
                "index": i,
                "concept": d.concept,
                "method": d.method,
                "hook": d.site.hook,
                "rank": d.rank,
                "d_model": d.d_model,
                "scale": d.scale,
                "metadata": _jsonable(d.metadata, f"direction {i} metadata"),
            }
        )
    hooked = None if model is None else hooked_of(model)
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "base_model": None if hooked is None else identify(hooked).to_json(),
        "directions": records,
    }
    with atomic_folder(folder) as tmp:
        save_file(tensors, str(tmp / TENSOR_FILE))
        (tmp / JSON_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return Path(folder)


def load_directions(
    folder: str | os.PathLike, *, model: HookedModel | HasHooked | None = None, strict: bool = False
) -> list[ConceptDirection]:
    """Read a folder written by ``save_directions``; with ``model``, check it is the base model they fit."""
    folder = Path(folder)
    meta, tens = folder / JSON_FILE, folder / TENSOR_FILE
    for p in (meta, tens):
        if not p.is_file():
            raise FileNotFoundError(f"{folder} is not a concept-direction folder: {p.name} is missing")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(
            f"{meta}: not a {FORMAT} file (format={data.get('format') if isinstance(data, dict) else None!r})"
        )
    if not isinstance(data.get("format_version"), int) or data["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{meta}: format_version {data.get('format_version')!r} is newer than this reftlab reads "
            f"({FORMAT_VERSION}); upgrade reftlab"
        )
    try:
        tensors = load_file(str(tens))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{tens}: cannot read it as safetensors ({e})") from None
    hooked = None if model is None else hooked_of(model)
    if hooked is not None and data.get("base_model") is not None:
        check_identity(ModelIdentity.from_json(data["base_model"]), hooked, strict=strict)
    out = []
    for rec in data.get("directions") or []:
        if not isinstance(rec, dict) or set(rec) != set(_RECORD):
            got = sorted(rec) if isinstance(rec, dict) else rec
            raise ValueError(f"{meta}: a direction record needs exactly the fields {list(_RECORD)}; got {got}")
        i = rec["index"]
        for part in ("reading", "subspace"):
            if f"{i}.{part}" not in tensors:
                raise ValueError(f"{tens}: tensor '{i}.{part}' for direction {i} is missing")
        reading, basis = tensors[f"{i}.reading"], tensors[f"{i}.subspace"]
        if reading.shape != (rec["d_model"],) or basis.shape != (rec["rank"], rec["d_model"]):
            raise ValueError(
                f"{tens}: direction {i} tensors have shapes {tuple(reading.shape)}, {tuple(basis.shape)}; "
                f"the record says rank={rec['rank']}, d_model={rec['d_model']}"
            )
        if hooked is not None and rec["d_model"] != hooked.d_model:
            raise ValueError(f"{meta}: direction {i} has d_model={rec['d_model']}, the model {hooked.d_model}")
        out.append(
            ConceptDirection(
                concept=str(rec["concept"]),
                method=str(rec["method"]),
                site=Site(hook=str(rec["hook"])),
                reading=reading,
                basis=basis,
                scale=float(rec["scale"]),
                metadata=dict(rec["metadata"]),
            )
        )
    if not out:
        raise ValueError(f"{meta}: the folder holds no directions")
    return out


def _jsonable(value: dict[str, Any], what: str) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(value))
    except TypeError as e:
        raise ValueError(f"{what} must be JSON data ({e})") from None
