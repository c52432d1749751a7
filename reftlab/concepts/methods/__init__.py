"""Concept-direction methods, one module per method; each maps a ``FitInput`` to a ``Fitted``.

=============  ==============================================================================
``diffmean``   mean of positive token states minus mean of negative ones
``pca``        top principal component of the positive token states (centred), sign set so
               that positives project higher than negatives
``probe``      logistic regression on token states (token label = its text's label), optional L1
``reft_r1``    a rank-1 ReFT trained with the LM loss and a sparse, non-negative latent (AxBench)
``subspace``   a given subspace (e.g. a trained LoReFT's R): its reading direction is the
               DiffMean vector projected into it
=============  ==============================================================================

All see the same token states, captured once (``reftlab.concepts.states``); only ``reft_r1``
runs the model again (it trains through it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._base import FitInput, Fitted
from .diffmean import fit_diffmean
from .pca import fit_pca
from .probe import ProbeConfig, fit_probe
from .reft_r1 import ReftR1Config, fit_reft_r1
from .subspace import fit_subspace

# name -> fit(inp, options) ; options is the method's config (or None)
METHODS: dict[str, Callable[[FitInput, Any], Fitted]] = {
    "diffmean": lambda inp, _: fit_diffmean(inp),
    "pca": lambda inp, _: fit_pca(inp),
    "probe": lambda inp, cfg: fit_probe(inp, cfg or ProbeConfig()),
    "reft_r1": lambda inp, cfg: fit_reft_r1(inp, cfg or ReftR1Config()),
}

__all__ = [
    "METHODS",
    "FitInput",
    "Fitted",
    "ProbeConfig",
    "ReftR1Config",
    "fit_diffmean",
    "fit_pca",
    "fit_probe",
    "fit_reft_r1",
    "fit_subspace",
]
