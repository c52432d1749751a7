"""``reftlab das CONFIG.yaml``: distributed alignment search on counterfactual pairs from a file.

The config (YAML or JSON; unknown keys are refused with the list of valid ones) names the base
model, the pairs file, the site and the rank; the run trains ``reftlab.das.fit``, prints IIA on
the held-out pairs and on the training pairs, and writes to ``output_dir`` the rotation as a
checkpoint (``ReftModel.save``: JSON + safetensors, loadable with ``reftlab.ReftModel.load``)
plus ``das.json`` (IIA, training IIA, the losses, the settings). The pairs file is JSONL (or a
JSON list), one object per pair: ``{"base": TEXT, "source": TEXT, "label": TEXT or token id}``,
where the label is the single token the model should give after the base if the variable took
its value from the source. Prompts are tokenized without padding tricks: each side is padded
to its longest prompt (the tokenizer's padding side), and positions (``"l1"`` by default) are
resolved per prompt, so padding does not move them.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HELP = "train a DAS rotation (reftlab.das.fit) on counterfactual pairs from a file, report IIA, save it"


@dataclass(frozen=True, kw_only=True)
class DasSpec:
    """What ``reftlab das`` runs, read from a YAML/JSON file (relative paths: from the file's folder)."""

    model: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "'smollm2-135m-instruct', a local HF folder, or a Hub id ('org/name')"},
    )
    pairs: str = field(default="", metadata={"help": "JSONL (or JSON list) of {base, source, label}"})
    site: str = field(default="", metadata={"help": "a hook name, e.g. 'blocks.8.hook_resid_post'"})
    positions: str = field(default="l1", metadata={"help": "positions on both sides, e.g. 'l1' (not 'all')"})
    rank: int = field(default=1, metadata={"help": "the rank r of the rotation R (r x d_model)"})
    steps: int = field(default=200, metadata={"help": "Adam steps"})
    lr: float = field(default=1e-2, metadata={"help": "learning rate"})
    batch_size: int = field(default=32, metadata={"help": "pairs per step"})
    held_out: float = field(default=0.2, metadata={"help": "fraction of the pairs kept for IIA, in [0, 1)"})
    seed: int = field(default=0, metadata={"help": "seed of the split and the batches"})
    output_dir: str = field(default="", metadata={"help": "the folder to write (the checkpoint and das.json)"})

    def __post_init__(self) -> None:
        for name in ("pairs", "site", "output_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} is required: {_HELPS[name]}")
        for name in ("rank", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if not isinstance(self.held_out, (int, float)) or not 0.0 <= self.held_out < 1.0:
            raise ValueError(f"held_out={self.held_out!r} must be a fraction in [0, 1)")
        if self.positions.strip() == "all":
            raise ValueError("positions='all' is not a DAS site: give a spec such as 'l1' or 'f1+l1'")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "DasSpec":
        from ..mapping import check_keys, load_mapping

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no DAS config at {path}")
        data = load_mapping(path.read_text(encoding="utf-8"), path)
        check_keys(data, cls, "the DAS config")
        spec = cls(**data)
        local = {
            k: str(path.parent / v) for k in ("pairs", "output_dir") if not Path(v := getattr(spec, k)).is_absolute()
        }
        model = path.parent / spec.model
        if model.is_dir():  # a local folder next to the config; otherwise a name load_model knows
            local["model"] = str(model)
        return cls(**{**asdict(spec), **local})


_HELPS = {name: str(f.metadata["help"]) for name, f in DasSpec.__dataclass_fields__.items()}


def read_pairs(path: str | os.PathLike[str], tokenizer: Any) -> Any:
    """The pairs file as ``reftlab.das.CounterfactualPairs`` (tokenized, each side padded)."""
    from ..analysis.attribute import target_ids
    from ..das import CounterfactualPairs

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no pairs file at {path}")
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text) if path.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON lines ({e.msg}); one {{base, source, label}} object per line"
        ) from None
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or {"base", "source", "label"} - set(row):
            raise ValueError(f"{path}: pair {i} must be an object with base, source and label, got {row!r}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = tokenizer([r["base"] for r in rows], padding=True, return_tensors="pt")
    source = tokenizer([r["source"] for r in rows], padding=True, return_tensors="pt")
    import torch

    labels = torch.tensor([next(iter(target_ids(tokenizer, [r["label"]]).values())) for r in rows])
    return CounterfactualPairs(
        base_ids=base["input_ids"],
        source_ids=source["input_ids"],
        labels=labels,
        base_mask=base["attention_mask"],
        source_mask=source["attention_mask"],
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the DAS config (YAML or JSON): model, pairs, site, rank, output_dir, ...")
    p.add_argument("--steps", type=int, help="override steps")
    p.add_argument("--output-dir", help="override output_dir")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..atomic import write_json
    from ..das import fit
    from ..models.loading import load_model
    from ..sites import Positions, Site

    try:
        spec = DasSpec.from_file(args.config)
        changes = {k: v for k, v in (("steps", args.steps), ("output_dir", args.output_dir)) if v is not None}
        spec = replace(spec, **changes)
        out = Path(spec.output_dir)
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"output_dir {out} exists and is not empty; remove it or give another")
        hooked = load_model(spec.model)
        pairs = read_pairs(spec.pairs, hooked.tokenizer)
        site = Site(hook=spec.site, positions=Positions.parse(spec.positions))
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as e:
        raise type(e)(f"{args.config}: {e}") from None
    result = fit(
        hooked,
        pairs,
        site,
        spec.rank,
        steps=spec.steps,
        lr=spec.lr,
        batch_size=spec.batch_size,
        held_out=spec.held_out,
        seed=spec.seed,
    )
    result.reft_model.save(out)
    report = {"iia": result.iia, "train_iia": result.train_iia, "losses": result.losses, "config": asdict(spec)}
    write_json(out / "das.json", report)
    print(f"IIA {result.iia:.3f} on held-out pairs, {result.train_iia:.3f} on training pairs; wrote {out}")
    return 0
