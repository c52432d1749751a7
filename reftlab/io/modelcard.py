"""The README.md model card that makes a checkpoint folder a valid Hugging Face model repo.

YAML front matter (``library_name: reftlab``, ``base_model`` for Hub bases, ``tags``)
followed by what was trained where and a usage snippet that loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..models.source import ModelSource

CARD_FILE = "README.md"


def model_card(
    *,
    base: ModelSource,
    architecture: str,
    sites: Sequence[dict[str, Any]],
    n_params: int,
    repo_id: str | None,
    folder: Path,
    has_lora: bool,
    fmt: str = "reftlab",
) -> str:
    """Markdown with YAML metadata; ``sites`` are ``{"hook", "positions", "kind", "rank"}`` dicts.

    The YAML ``base_model`` is set only for a base loaded from the Hub (never for the
    embedded GGUF model, whose weights are not the official checkpoint's). The usage
    snippet loads the base the way it was loaded (Hub id and revision, embedded name,
    or folder) and the checkpoint from ``repo_id``, else from ``folder``: it runs as written.

    >>> card = model_card(base=ModelSource(ref="org/base", name="org/base"), architecture="LlamaForCausalLM",
    ...                   sites=[{"hook": "blocks.15.hook_resid_post", "positions": "l1", "kind": "loreft", "rank": 4}],
    ...                   n_params=4612, repo_id=None, folder=Path("/ckpt"), has_lora=False)
    >>> card.splitlines()[1:3]
    ['library_name: reftlab', 'base_model: org/base']
    """
    tags = ["reft", "reftlab", "representation-finetuning", "pyreft" if fmt == "pyreft" else "safetensors"]
    kinds = sorted({s["kind"] for s in sites})
    tags += kinds + (["lora", "peft"] if has_lora else [])
    meta: dict[str, Any] = {"library_name": "reftlab"}
    if base.hub_id:
        meta["base_model"] = base.hub_id
    meta["tags"] = tags
    rows = "\n".join(f"| `{s['hook']}` | {s['positions'] or 'per call'} | {s['kind']} | {s['rank']} |" for s in sites)
    where = repo_id or str(folder)
    label = base.name or architecture
    if base.ref is None:
        load_base = f"model = reftlab.load_model(base_model, tokenizer)  # your {architecture}: where it came from was not recorded"
    else:
        revision = f", revision={base.revision!r}" if base.kind == "hub" and base.revision else ""
        load_base = f"model = reftlab.load_model({base.ref!r}{revision})  # the base model this was trained on"
    alone = f"  # or .load({where!r}) alone: it loads the base too" if fmt == "reftlab" and base.ref else ""
    lora = (
        "\nThe folder also holds a LoRA adapter in peft's format (`adapter_config.json`, `adapter_model.safetensors`);\n`ReftModel.load` restores it too, and `peft.PeftModel.from_pretrained` loads it alone.\n"
        if has_lora
        else ""
    )
    return (
        "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n"
        f"# ReFT interventions for {label}\n\n"
        f"Representation finetuning (ReFT, arXiv 2404.03592) interventions trained with reftlab on "
        f"`{label}` ({architecture}); {n_params:,} trainable parameters.\n\n"
        "| site | positions | kind | rank |\n| --- | --- | --- | --- |\n" + rows + "\n" + lora + "\n"
        "## Usage\n\n```python\nimport reftlab\n\n"
        f"{load_base}\n"
        f"reft_model = reftlab.ReftModel.load({where!r}, model){alone}\n"
        'enc = model.tokenizer(["Hello"], return_tensors="pt")\n'
        '_, ids = reft_model.generate(dict(enc), positions="l1", max_new_tokens=32)\n'
        "print(model.tokenizer.decode(ids[0]))\n```\n"
    )
