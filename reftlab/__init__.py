"""reftlab: an interpretability-first workbench for Representation Finetuning (ReFT).

Load a causal LM with TransformerLens hook points, attach typed subspace interventions
at sites, train them, generate with them, and look inside them.
"""

from .attach import Binding, apply_at_positions, attach
from .compose import compose, describe, for_layers, parse_layers, positions_overlap
from .config import ReftConfig, Representation
from .interference import interference, principal_angles
from .interventions import (
    ConcatLoReFT,
    ConsReFT,
    ConsreftIntervention,
    DiReFT,
    DireftIntervention,
    Intervention,
    LobiReFT,
    LobireftIntervention,
    LoReFT,
    LoreftIntervention,
    NodiReFT,
    NodireftIntervention,
    NoReFT,
    NoreftIntervention,
    SimilarityGated,
    SumOfEdits,
    kinds,
)
from .models import HookedModel, embedded_model_path, load_model, tiny_gpt2, tiny_llama, tiny_tokenizer
from .reft_model import ReftModel, get_reft_model
from .routing import Routed, route
from .sites import COMPONENTS, Positions, Site, resolve_positions

__version__ = "0.1.0"

__all__ = [
    "__version__", "Binding", "apply_at_positions", "attach", "ReftConfig", "Representation",
    "Intervention", "LoReFT", "NoReFT", "DiReFT", "NodiReFT", "ConsReFT", "LobiReFT", "kinds",
    "LoreftIntervention", "NoreftIntervention", "DireftIntervention", "NodireftIntervention",
    "ConsreftIntervention", "LobireftIntervention", "HookedModel", "embedded_model_path", "load_model",
    "tiny_gpt2", "tiny_llama", "tiny_tokenizer", "ReftModel", "get_reft_model", "COMPONENTS", "Positions",
    "Site", "resolve_positions",
    # composition (issue 5)
    "ConcatLoReFT", "SumOfEdits", "SimilarityGated", "compose", "describe", "for_layers", "parse_layers",
    "positions_overlap", "interference", "principal_angles", "Routed", "route",
]
