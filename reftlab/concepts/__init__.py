"""Concept subspaces: detect and steer concepts with DiffMean, probes, PCA and rank-1 ReFTs.

AxBench's protocol (Wu et al., ICML 2025) on any model and any concept set: per concept,
*detection* is the ROC AUC of a direction's max-over-tokens projection on held-out positive vs
negative (and hard negative) texts; *steering* adds the direction while generating and scores
the answers, here with model-based proxies instead of a hosted judge.

    import reftlab
    from reftlab.concepts import ConceptConfig, fit_concepts

    run = fit_concepts(reftlab.load_model(), "examples/concepts/train.csv",
                       eval="examples/concepts/eval.csv", config=ConceptConfig(layer=9))
    run.results            # one row per concept x method: auroc, auroc_hard

Rooms: ``data`` (readers), ``states`` (one forward per batch, cut at the site), ``methods/``
(one module per method), ``direction`` (the typed result, saved as safetensors + JSON,
attached as a LobiReFT), ``detect`` (scores, AUROC), ``steer`` and ``sweep`` (steering and its
proxies), ``fit`` (the pipeline). Figures and the HTML report: ``reftlab.viz.concepts``.
"""

from .data import LABELS, SHARED, ConceptData, read_concepts
from .detect import auroc, detection_table, roc_curve, score
from .direction import ConceptDirection, load_directions, save_directions
from .fit import ConceptConfig, ConceptRun, fit_concepts
from .methods import METHODS, FitInput, Fitted, ProbeConfig, ReftR1Config, fit_subspace
from .states import States, capture, encode, states_of
from .steer import SteerConfig, Steering, steered_generate

__all__ = [
    "LABELS",
    "METHODS",
    "SHARED",
    "ConceptConfig",
    "ConceptData",
    "ConceptDirection",
    "ConceptRun",
    "FitInput",
    "Fitted",
    "ProbeConfig",
    "ReftR1Config",
    "States",
    "SteerConfig",
    "Steering",
    "auroc",
    "capture",
    "detection_table",
    "encode",
    "fit_concepts",
    "fit_subspace",
    "load_directions",
    "read_concepts",
    "roc_curve",
    "save_directions",
    "score",
    "states_of",
    "steered_generate",
]
