"""A sequence classifier on a causal LM's body: the base for classification ReFTs.

``load_classifier("smollm2-135m-instruct", num_labels=2)`` builds the HF
``*ForSequenceClassification`` model of the same folder: every block is the causal
LM's own, the ``score`` head ``[num_labels, d_model]`` is new (seeded), and the model's
``pad_token_id`` is set so that the head reads each example's last non-pad token.
``ReftTrainerForSequenceClassification`` then trains the interventions together with
that head.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .hooked import HookedModel
from .loading import load_named
from .source import EMBEDDED


def load_classifier(
    model: str | os.PathLike = EMBEDDED,
    *,
    num_labels: int,
    dtype: torch.dtype | str | None = None,
    seed: int = 0,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> HookedModel:
    """The classifier on ``model`` (the embedded default, a local HF folder or a Hub id), hooked, head trainable.

    Names resolve as in ``load_model`` (``reftlab.models.source``); ``dtype`` and
    ``revision`` mean the same there.
    """
    import logging

    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    if not isinstance(num_labels, int) or num_labels < 2:
        raise ValueError(f"num_labels={num_labels!r} must be an int >= 2 (the number of classes)")
    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)  # "newly initialized: score.weight" is the point here
    try:
        hf, tok, source = load_named(
            model,
            revision=revision,
            dtype=dtype,
            cache_dir=cache_dir,
            auto_class=AutoModelForSequenceClassification,
            num_labels=num_labels,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pad is None:
        raise ValueError(f"the tokenizer of {source.name} has neither a pad nor an eos token; the classifier needs one")
    hf.config.pad_token_id = pad  # the head reads each example's last non-pad token
    hf.eval()
    return HookedModel(hf, tok, source=source)


def classifier_head(hooked: HookedModel) -> nn.Module:
    """The classification head of a sequence-classification model (``score`` or ``classifier``)."""
    hf: Any = hooked.hf_model
    for name in ("score", "classifier"):
        head = getattr(hf, name, None)
        if isinstance(head, nn.Module):
            return head
    raise ValueError(f"{type(hf).__name__} has no 'score' or 'classifier' head; is it a sequence classifier?")
