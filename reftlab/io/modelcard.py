"""The README.md model card that makes a checkpoint folder a valid Hugging Face model repo.

YAML front matter (``library_name: reftlab``, ``base_model``, ``tags``) followed by what
was trained where and a usage snippet that loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

CARD_FILE = "README.md"


def model_card(
    *,
    base_model: str,
    architecture: str,
    sites: Sequence[dict[str, Any]],
    n_params: int,
    repo_id: str | None,
    has_lora: bool,
    fmt: str = "reftlab",
) -> str:
    """Markdown with YAML metadata; ``sites`` are ``{"hook", "positions", "kind", "rank"}`` dicts.

    >>> card = model_card(base_model="HuggingFaceTB/SmolLM2-135M-Instruct", architecture="LlamaForCausalLM",
    ...                   sites=[{"hook": "blocks.15.hook_resid_post", "positions": "l1", "kind": "loreft", "rank": 4}],
    ...                   n_params=4612, repo_id=None, has_lora=False)
    >>> card.splitlines()[1]
    'library_name: reftlab'
    """
    tags = ["reft", "reftlab", "representation-finetuning", "pyreft" if fmt == "pyreft" else "safetensors"]
    kinds = sorted({s["kind"] for s in sites})
    tags += kinds + (["lora", "peft"] if has_lora else [])
    meta: dict[str, Any] = {"library_name": "reftlab", "tags": tags}
    if base_model:
        meta["base_model"] = base_model
    rows = "\n".join(f"| `{s['hook']}` | {s['positions'] or 'per call'} | {s['kind']} | {s['rank']} |" for s in sites)
    where = repo_id or "path/to/this/folder"
    load_base = base_model or "path/to/base-model"
    lora = (
        "\nThe folder also holds a LoRA adapter in peft's format (`adapter_config.json`, `adapter_model.safetensors`);\n`ReftModel.load` restores it too, and `peft.PeftModel.from_pretrained` loads it alone.\n"
        if has_lora
        else ""
    )
    return (
        "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n"
        f"# ReFT interventions for {base_model or architecture}\n\n"
        f"Representation finetuning (ReFT, arXiv 2404.03592) interventions trained with reftlab on "
        f"`{base_model or architecture}` ({architecture}); {n_params:,} trainable parameters.\n\n"
        "| site | positions | kind | rank |\n| --- | --- | --- | --- |\n" + rows + "\n" + lora + "\n"
        "## Usage\n\n```python\nimport reftlab\n\n"
        f"model = reftlab.load_model({load_base!r})  # the base model this was trained on\n"
        f"reft_model = reftlab.ReftModel.load({where!r}, model)\n"
        'enc = model.tokenizer(["Hello"], return_tensors="pt")\n'
        '_, ids = reft_model.generate(dict(enc), positions="l1", max_new_tokens=32)\n'
        "print(model.tokenizer.decode(ids[0]))\n```\n"
    )
