"""Shared test helpers (``tests/`` is on ``sys.path``: ``from helpers import ...``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def no_hooks_anywhere(hooked) -> bool:
    """True when no hook point holds a hook and no HF module holds a tap of ours.

    (transformers 5 keeps its own output-capturing hooks on the layers once
    ``output_hidden_states`` was used; those are not ours.)
    """
    from transformer_lens.hook_points import HookPoint

    if any(hp.fwd_hooks or hp.bwd_hooks or hp._forward_hooks for hp in hooked.hook_dict.values()):
        return False
    for m in hooked.model.modules():
        for fn in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]:
            if isinstance(getattr(fn, "__self__", None), HookPoint):
                return False
    return True


def tiny_classifier(tok, n_layers: int = 2, num_labels: int = 2):
    """A tiny random LlamaForSequenceClassification (d_model 64) whose pad token is the tokenizer's."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig(
        vocab_size=260,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tok.pad_token_id,
        num_labels=num_labels,
    )
    return LlamaForSequenceClassification(cfg).eval()
