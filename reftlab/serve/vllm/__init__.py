"""Serving reftlab's ReFT checkpoints on vLLM, without a fork (``docs/serving.md``).

- ``plugin``: registered through vLLM's ``vllm.general_plugins`` entry point; applies each
  request's ReFTs inside vLLM's model runner (``vllm serve ... --enforce-eager
  --additional-config '{"reftlab": {"refts": {...}}}'``, requests name ReFTs in
  ``extra_body={"vllm_xargs": {"reftlab": "NAME"}}``).
- ``engine.VllmEngine``: the engine of ``reftlab serve --engine vllm`` (same flags and endpoints
  as reftlab's own engine; requests name a ReFT as their ``model``).
- ``plan``: which packed rows each edit touches, step by step (plain torch, tested without vLLM).
- ``load``: checkpoints as vLLM serves them (interventions and sites, checked against the base).

vLLM is optional (``pip install reftlab[vllm]``); nothing here imports it at import time.
"""

from .load import load_served
from .plan import Op, Segment, ServedReft, ServedSite, plan, resolve

__all__ = ["Op", "Segment", "ServedReft", "ServedSite", "load_served", "plan", "resolve"]
