"""ReftModel: a hooked model plus named interventions at sites; ``get_reft_model`` builds one.

The interventions are visible, named modules (``reft_model.interventions``); printing
the model shows every site, kind, rank and parameter count. Every call goes through
``reftlab.attach``, so no hook outlives it. pyreft's and pyvene's calls (``forward`` with
``unit_locations``, ``generate``, ``set_device``, ``count_parameters``, ...) live in the mixin
``reftlab.pyreft_compat.PyreftCompat``; this module is the native surface: ``run``, ``bindings``,
``with_positions``, and ``save`` / ``load`` / ``merge_into_base`` (their logic in ``reftlab.io``).
Over 400 lines because the public methods carry their user-facing docs (positions, loading
options, merge refusals) and ``get_reft_model`` sits beside the class it builds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from jaxtyping import Int
from torch import Tensor, nn

from ._version import __version__
from .attach import Binding, attach
from .config import ReftConfig
from .data.prompt_format import PromptFormat
from .inputs import check_inputs
from .interventions import Intervention, InterventionDict
from .io.folder import Format
from .models.hooked import HookedModel
from .models.peft import freeze_base
from .pyreft_compat import PyreftCompat, parameter_count
from .sites import (
    MODULE_SITE,
    Positions,
    PositionsArg,
    Site,
    as_position_tensor,
    check_positions,
    positions_per_intervention,
    resolve_positions,
)

_R = TypeVar("_R", bound="ReftModel")


class ReftModel(PyreftCompat):
    """Interventions attached to a (frozen) causal LM.

    ``reft_model.model`` is the HF (or peft) model, as in pyreft; ``reft_model.hooked``
    the ``HookedModel`` around it. ``origins`` maps each intervention key to the ReFT it
    came from (``reftlab.compose`` passes one label per intervention; empty otherwise); ``merged`` turns True once
    ``merge_into_base`` has folded the interventions into the base weights. It satisfies
    ``reftlab.attach.ReftLike``, the contract the rooms above and below rely on. ``prompt_format``
    records how training formatted prompts (chat template, system prompt; None when unknown):
    ``save`` writes it into the checkpoint, ``load`` restores it, ``reftlab train`` sets it from the recipe.
    pyreft's and pyvene's calls (``reft_model(base, unit_locations=...)``, ``generate``, ``set_device``,
    ``count_parameters``, ...) come from ``reftlab.pyreft_compat.PyreftCompat``.
    """

    hooked: HookedModel
    config: ReftConfig
    sites: tuple[Site, ...]
    interventions: InterventionDict
    origins: dict[str, str]
    merged: bool
    prompt_format: PromptFormat | None

    def __init__(
        self,
        hooked: HookedModel,
        config: ReftConfig,
        interventions: Sequence[Intervention] = (),
        *,
        origins: Sequence[str] | None = None,
        prompt_format: PromptFormat | None = None,
    ) -> None:
        if isinstance(hooked, ReftConfig):  # pyreft's (pyvene's) ReftModel(config, model)
            raise TypeError(
                "ReftModel(config, model) is pyreft's internal constructor; build a ReftModel with "
                "reftlab.get_reft_model(model, config) (as pyreft's README and examples do)"
            )
        super().__init__()
        self.prompt_format = prompt_format
        if len(interventions) != len(config.representations):
            raise ValueError(f"{len(interventions)} interventions for {len(config.representations)} representations")
        self.hooked = hooked
        self.config = config
        self.sites = tuple(r.site for r in config.representations)
        self.interventions = InterventionDict()
        for i, (site, iv) in enumerate(zip(self.sites, interventions)):
            self.interventions[_key(site, i)] = iv
        if origins is not None and len(origins) != len(interventions):
            raise ValueError(
                f"{len(origins)} origins for {len(interventions)} interventions; give one per intervention"
            )
        self.origins = dict(zip(self.interventions, origins or ()))
        self.merged = False

    # --- native surface --------------------------------------------------------------
    @property
    def model(self) -> nn.Module:  # the HF model, or the PeftModel wrapping it (LoRA alongside)
        return self.hooked.model

    @property
    def tokenizer(self) -> Any:
        return self.hooked.tokenizer

    def place_interventions(self) -> None:
        """Put every intervention on the device of its site's hidden state (``HookedModel.site_device``)."""
        placed: dict[int, tuple[str, torch.device]] = {}
        for (key, iv), site in zip(self.interventions.items(), self.sites):
            device = self.hooked.site_device(site.hook)
            if id(iv) in placed and placed[id(iv)][1] != device:
                first, where = placed[id(iv)]
                raise ValueError(
                    f"interventions {first!r} and {key!r} share parameters but their sites run on {where} and {device}; "
                    "share only between sites on one device, or change the device_map"
                )
            placed[id(iv)] = (key, device)
            iv.to(device)

    def run(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        positions: PositionsArg = None,
        prompt_lengths: Int[Tensor, " batch"] | Sequence[int] | None = None,
        labels: Tensor | None = None,
        source: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Forward with every intervention attached; returns the HF model's output.

        ``source``: a ``reftlab.analysis.SourceBatch`` for sourced interventions (interchange,
        DAS): its states at the sites, captured in one plain forward, are patched into this run
        (``reftlab.analysis.interchange``).

        ``positions``: None (each site's own default), a spec such as ``"l1"``, a
        ``[batch, n]`` index tensor, or a list/dict of those per intervention. An index
        tensor holds absolute indices into the padded input; -1 is an empty slot (never
        "the last token"); an index below -1, past the input or on padding is an error.
        ``prompt_lengths`` bounds ``f``/``l`` specs to each example's prompt.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids) if isinstance(input_ids, Tensor) else None
        check_inputs(self.hooked, input_ids, attention_mask)
        if source is not None:
            from .analysis.interchange import SourceBatch, refuse_sourceless, sourced_bindings

            if not isinstance(source, SourceBatch):
                raise TypeError(f"source must be a reftlab.analysis.SourceBatch, got a {type(source).__name__}")
            refuse_sourceless(self)
        bindings = self.bindings(positions, attention_mask, prompt_lengths)
        if source is not None:
            bindings = sourced_bindings(self, bindings, source)
        with attach(self.hooked, bindings):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)

    def bindings(
        self,
        positions: PositionsArg,
        attention_mask: Tensor,
        prompt_lengths: Int[Tensor, " batch"] | Sequence[int] | None = None,
        *,
        allow_empty: bool = False,
    ) -> list[Binding]:
        """Resolve ``positions`` (see ``run``) into one ``Binding`` per intervention.

        Index tensors are checked (``reftlab.sites.check_positions``); ``allow_empty``
        accepts one that is -1 everywhere (a batch of a prompt set checked as a whole).
        """
        if self.merged:
            raise RuntimeError(
                "the interventions were merged into the base model (merge_into_base); "
                "run reft_model.model (or the returned HF model) directly"
            )
        keys = list(self.interventions)
        per = positions_per_intervention(positions, keys)
        out = []
        for key, site, pos in zip(keys, self.sites, per):
            if pos is None:
                pos = site.positions
            if pos is None:
                raise ValueError(
                    f"intervention {key!r} at {site.hook} has no positions: pass positions=/unit_locations= "
                    "or set 'positions' in its representation"
                )
            if isinstance(pos, (str, Positions)):
                spec = Positions.parse(pos)
                # "all" with no prompt bound edits every position, generated tokens included;
                # edits on padding are invisible (pads are masked keys, their outputs unused).
                idx = (
                    None
                    if spec.all and prompt_lengths is None
                    else resolve_positions(spec, attention_mask, prompt_lengths)
                )
            else:
                what = f"positions for {key!r}"
                idx = check_positions(as_position_tensor(pos, what), attention_mask, what, allow_empty=allow_empty)
            out.append(Binding(site.hook, self.interventions[key], idx))
        return out

    def with_positions(self, positions: PositionsArg) -> ReftModel:
        """The same interventions (shared, not copied) on the same base, each site editing ``positions``.

        ``positions``: a spec such as ``"l1"`` or ``"f1+l1"`` for every intervention, a list with
        one spec per intervention (None keeps that site's own), or a dict by key. This is how a
        checkpoint saved pyreft's way (sites without positions: given per call) is evaluated,
        served or generated from with ``positions=None``; ``save`` of the result records them.

        >>> import reftlab
        >>> rm = reftlab.get_reft_model(reftlab.tiny_llama(), reftlab.ReftConfig(
        ...     representations={"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2}))
        >>> [str(s) for s in rm.with_positions("f1+l1").sites]
        ['blocks.1.hook_resid_post[f1+l1]']
        """
        from dataclasses import replace

        keys = list(self.interventions)
        per = positions_per_intervention(positions, keys)
        reps = []
        for key, rep, pos in zip(keys, self.config.representations, per):
            if pos is not None and not isinstance(pos, (str, Positions)):
                raise TypeError(
                    f"positions for {key!r}: with_positions takes specs such as 'l1' or 'f1+l1' (saved with the "
                    f"sites); index tensors depend on the batch: pass them to run(positions=...), got {type(pos).__name__}"
                )
            site = rep.site if pos is None else Site(hook=rep.site.hook, positions=Positions.parse(pos))
            reps.append(replace(rep, site=site))
        out = type(self)(
            self.hooked,
            ReftConfig(representations=reps),
            list(self.interventions.values()),
            origins=[self.origins[k] for k in keys] if self.origins else None,
            prompt_format=self.prompt_format,
        )
        out.merged = self.merged
        return out

    def positions_used(self) -> dict[str, str | None]:
        """What each intervention edits by default: its site's positions as a spec (None: given per call)."""
        return {k: None if s.positions is None else str(s.positions) for k, s in zip(self.interventions, self.sites)}

    def num_intervention_parameters(self, *, trainable: bool = False) -> int:
        """Intervention parameters, a shared module once; with ``trainable`` only those that require a gradient."""
        return parameter_count(self.interventions, trainable=trainable)

    def __repr__(self) -> str:
        lines = [f"ReftModel on {self.hooked!r}"]
        first: dict[int, str] = {}
        for (key, iv), site in zip(self.interventions.items(), self.sites):
            pos = site.positions if site.positions is not None else "per call"
            owner = first.setdefault(id(iv), key)
            params = f"params={iv.num_parameters():,}" if owner == key else f"shares {owner}'s params"
            lines.append(f"  [{key}] {site.hook} @ {pos}: {iv.kind} rank={iv.rank} {params}")
        lines.append(f"  total intervention params: {self.num_intervention_parameters():,}")
        return "\n".join(lines)

    # --- save, load, share, merge (logic in reftlab.io) ---------------------------------
    def save(
        self,
        save_directory: str | os.PathLike[str],
        save_to_hf_hub: bool = False,
        hf_repo_name: str | None = None,
        include_model: bool = False,
        *,
        format: Format = "reftlab",
        prompt_format: PromptFormat | Mapping[str, Any] | None = None,
    ) -> Path:
        """Write a checkpoint folder atomically (``reftlab.io.checkpoint`` documents the format).

        ``format="pyreft"`` writes pyreft 0.1.0's layout instead. With ``save_to_hf_hub``
        the folder is then uploaded as ``hf_repo_name``; an upload failure raises with the
        local folder intact. A peft model's LoRA adapter is saved alongside in peft's format.
        ``prompt_format`` (a ``PromptFormat`` or its dict) is recorded instead of
        ``self.prompt_format``: how training formatted prompts. ``include_model`` (pyreft's)
        must stay False: the checkpoint records its base instead of copying it.
        """
        from .io import save_reft, upload_folder

        if save_to_hf_hub and not hf_repo_name:
            raise ValueError("save_to_hf_hub=True needs hf_repo_name='user/name'")
        if include_model:
            raise ValueError(
                "include_model=True (pyreft: copy the base model into the folder) is not supported: a reftlab "
                "checkpoint records its base (Hub id or folder, and revision) and ReftModel.load(folder) loads it; "
                "save a changed base yourself with reft_model.model.save_pretrained(...)"
            )
        fmt = self.prompt_format if prompt_format is None else PromptFormat.from_json(prompt_format)
        folder = save_reft(
            self,
            save_directory,
            format=format,
            repo_id=hf_repo_name,
            version=__version__,
            prompt_format=fmt,
        )
        if save_to_hf_hub and hf_repo_name:  # checked on entry: uploading needs a repo name
            upload_folder(folder, hf_repo_name)
        return folder

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None) -> str:
        """Save to a temporary folder and upload it to the Hub as ``repo_id``; returns the commit URL."""
        import tempfile

        from .io import upload_folder

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save(Path(tmp) / "reft", hf_repo_name=repo_id)
            return upload_folder(folder, repo_id, private=private, token=token)

    @classmethod
    def load(
        cls: type[_R],
        source: str | os.PathLike[str],
        model: nn.Module | None = None,
        strict: bool = False,
        *,
        tokenizer: Any = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        device_map: Any = None,
        quantization: Any = None,
        offload_folder: str | os.PathLike[str] | None = None,
    ) -> _R:
        """Load a reftlab or pyreft checkpoint folder, or a Hub repo id, onto ``model``.

        Without ``model``, the base model the checkpoint records (Hub id and revision,
        folder, or the embedded model) is loaded with its tokenizer, in the dtype it had
        when saved unless ``dtype`` says otherwise, on ``device`` (or placed by
        ``device_map`` with ``offload_folder``, quantized by ``quantization``: see
        ``reftlab.load_model``); every intervention goes to the device of its site. ``revision`` and
        ``cache_dir`` apply to a checkpoint on the Hub. The base model is checked first
        (architecture, d_model, n_layers, vocab, hooks: errors; config/weight
        fingerprints: a warning, an error with ``strict=True``).
        """
        from .config import Representation
        from .io import load_base, load_reft, resolve_source

        folder = resolve_source(source, revision=revision, cache_dir=cache_dir)
        if model is None:
            if tokenizer is not None:
                raise ValueError("tokenizer= goes with model=; without a model the base's own tokenizer is loaded")
            hooked = load_base(
                folder,
                dtype=dtype,
                device=device,
                device_map=device_map,
                quantization=quantization,
                offload_folder=offload_folder,
            )
        elif any(x is not None for x in (dtype, device, device_map, quantization, offload_folder)):
            raise ValueError(
                "dtype=, device=, device_map=, offload_folder= and quantization= apply when the base model is "
                "loaded from the checkpoint (model=None)"
            )
        else:
            hooked = _hooked(model, tokenizer)
        loaded = load_reft(folder, hooked, strict=strict)
        if loaded.model is not hooked.model:
            hooked = HookedModel(loaded.model, hooked.tokenizer, source=hooked.source)
        reps = [Representation(site=s, intervention=iv) for s, iv in zip(loaded.sites, loaded.interventions)]
        base = get_reft_model(hooked, ReftConfig(representations=reps), set_device=True)  # frozen, placed
        return cls(hooked, base.config, list(base.interventions.values()), prompt_format=loaded.prompt_format)

    def merge_into_base(self) -> nn.Module:
        """Fold every intervention into the base weights (see ``reftlab.io.merge``); returns the HF model.

        Refused, naming each reason, unless every intervention is affine (linear act), has
        no dropout, acts at ``positions="all"`` and sits on a linear module's output. The
        ReftModel is spent afterwards: run the returned model.
        """
        from .io import merge_into_base

        merged = merge_into_base(list(self.sites), list(self.interventions.values()), self.hooked)
        self.merged = True
        return merged


def get_reft_model(
    model: nn.Module,
    reft_config: ReftConfig,
    set_device: bool = True,
    disable_model_grads: bool = True,
    *,
    tokenizer: Any = None,
) -> ReftModel:
    """Attach ``reft_config``'s interventions to ``model`` (a HookedModel or an HF causal LM).

    The base weights are frozen (a peft model keeps its adapters trainable); each
    intervention takes the device of its site's hidden state (``set_device``: the model's, or
    on a base dispatched by accelerate (``device_map``) the device where the tapped module
    runs), and the model's dtype unless it asked for one: on a bfloat16 / float16 base it
    stays float32 (master weights: a rank-r LoReFT's R keeps orthonormal rows to ~1e-7
    instead of ~1e-2, AdamW's small updates are not rounded away, and the cost is a few
    r x d matmuls; ``reftlab.attach`` casts at the site).
    """
    if not isinstance(reft_config, ReftConfig):
        raise TypeError(f"reft_config must be a ReftConfig, got {type(reft_config).__name__}")
    hooked = _hooked(model, tokenizer)
    for rep in reft_config.representations:  # pyvene-style string components get hook points on demand
        if MODULE_SITE.match(rep.site.hook):
            hooked.module_hook_point(rep.site.hook)
    reft_config.validate(d_model=hooked.d_model, n_layers=hooked.n_layers, hook_names=list(hooked.mod_dict))
    interventions: list[Intervention] = []
    shared: dict[str, Intervention] = {}
    for rep in reft_config.representations:
        if rep.share is not None and rep.share in shared:  # one module for the whole share group
            interventions.append(shared[rep.share])
            continue
        iv = rep.build(hooked.d_model)
        iv = iv.to(dtype=iv.requested_dtype or master_dtype(hooked.dtype))
        if rep.share is not None:
            shared[rep.share] = iv
        interventions.append(iv)
    if disable_model_grads:
        freeze_base(hooked.model)
    reft = ReftModel(hooked, reft_config, interventions)
    if set_device:
        reft.place_interventions()
    return reft


def master_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """The default dtype of interventions on a model of ``model_dtype``: float32 for half precision.

    >>> master_dtype(torch.bfloat16), master_dtype(torch.float64)
    (torch.float32, torch.float64)
    """
    return torch.float32 if model_dtype in (torch.bfloat16, torch.float16) else model_dtype


def _hooked(model: Any, tokenizer: Any) -> HookedModel:
    if isinstance(model, HookedModel):
        return model
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise TypeError(
            f"model must be a reftlab HookedModel or a Hugging Face causal LM, got a {type(model).__name__}; "
            "load one with reftlab.load_model(...)"
        )
    return HookedModel(model, tokenizer)


def _key(site: Site, i: int) -> str:
    if site.layer is not None and site.component is not None:
        return f"layer_{site.layer}_comp_{site.component}#{i}"
    return site.hook.replace(".", "_") + f"#{i}"
