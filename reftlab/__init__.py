"""reftlab: an interpretability-first workbench for Representation Finetuning (ReFT).

Load a causal LM with TransformerLens hook points, attach typed subspace interventions
at sites, train them, generate with them, and look inside them (``reftlab.analysis``
for tables, ``reftlab.viz`` for plotly figures and the HTML dashboard).
"""

from . import (
    _quiet,  # noqa: F401  (first: before transformers imports torchao)
    analysis,
)
from ._version import __version__
from .attach import Binding, apply_at_positions, attach
from .compose import compose, describe, for_layers, positions_overlap
from .config import ReftConfig, Representation, TaskType
from .data import (
    PromptFormat,
    ReftDataCollator,
    ReftDataset,
    ReftGenerationDataset,
    ReftPreferenceDataset,
    ReftRawDataset,
    ReftRewardCollator,
    ReftRewardDataset,
    ReftSupervisedDataset,
    build_dataset,
    get_intervention_locations,
    make_last_position_supervised_data_module,
    make_multiple_position_supervised_data_module,
    parse_positions,
)
from .evaluate import EvalSettings, Evaluation, evaluate
from .generate import Generation, generate
from .interference import interference
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
from .io import FingerprintMismatch
from .models import HookedModel, embedded_model_path, load_model, tiny_gpt2, tiny_llama, tiny_tokenizer
from .reft_model import ReftModel, get_reft_model
from .routing import Routed, route
from .search import SearchSpace, search
from .sites import COMPONENTS, Positions, Site, parse_layers, resolve_positions
from .subspace import principal_angles
from .train import TrainConfig, TrainResult, train
from .train.distributed import ReftTrainerForCausalLMDistributed
from .train.dpo import ReftDPOTrainer
from .train.hf_trainer import ReftTrainer, ReftTrainerForCausalLM, ReftTrainerForSequenceClassification
from .train.reward import ReftTrainerForRewardModelling

__all__ = [
    "COMPONENTS",
    "Binding",
    "ConcatLoReFT",
    "ConsReFT",
    "ConsreftIntervention",
    "DiReFT",
    "DireftIntervention",
    "EvalSettings",
    "Evaluation",
    "FingerprintMismatch",
    "Generation",
    "HookedModel",
    "Intervention",
    "LoReFT",
    "LobiReFT",
    "LobireftIntervention",
    "LoreftIntervention",
    "NoReFT",
    "NodiReFT",
    "NodireftIntervention",
    "NoreftIntervention",
    "Positions",
    "PromptFormat",
    "ReftConfig",
    "ReftDPOTrainer",
    "ReftDataCollator",
    "ReftDataset",
    "ReftGenerationDataset",
    "ReftModel",
    "ReftPreferenceDataset",
    "ReftRawDataset",
    "ReftRewardCollator",
    "ReftRewardDataset",
    "ReftSupervisedDataset",
    "ReftTrainer",
    "ReftTrainerForCausalLM",
    "ReftTrainerForCausalLMDistributed",
    "ReftTrainerForRewardModelling",
    "ReftTrainerForSequenceClassification",
    "Representation",
    "Routed",
    "SearchSpace",
    "SimilarityGated",
    "Site",
    "SumOfEdits",
    "TaskType",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "analysis",
    "apply_at_positions",
    "attach",
    "build_dataset",
    "compose",
    "describe",
    "embedded_model_path",
    "evaluate",
    "for_layers",
    "generate",
    "get_intervention_locations",
    "get_reft_model",
    "interference",
    "kinds",
    "load_model",
    "make_last_position_supervised_data_module",
    "make_multiple_position_supervised_data_module",
    "parse_layers",
    "parse_positions",
    "positions_overlap",
    "principal_angles",
    "resolve_positions",
    "route",
    "search",
    "tiny_gpt2",
    "tiny_llama",
    "tiny_tokenizer",
    "train",
]
