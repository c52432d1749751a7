"""Typed subspace interventions, one module per kind; see ``base`` for the protocol."""

from .base import Intervention, InterventionDict, build, intervention_class, kinds, orthonormal_rows, register

# The causal kinds: they read a source (interchange, DAS) or replace h (ablations).
from .boundless import BoundlessRotatedSpace, boundary_mask, boundless_patch
from .concat import ConcatLoReFT, concat_loreft_edit
from .consreft import ConsReFT, consreft_edit
from .direft import DiReFT, direft_edit
from .lobireft import LobiReFT, lobireft_edit
from .loreft import LoReFT, loreft_edit
from .lowrank import LowRank
from .lowrank_rotated import LowRankRotatedSpace
from .mean_ablation import MeanAblation, dataset_mean, mean_patch
from .nodireft import NodiReFT, nodireft_edit
from .noreft import NoReFT, noreft_edit
from .pyreft_names import (
    ConsreftIntervention,
    DireftIntervention,
    LobireftIntervention,
    LoreftIntervention,
    NodireftIntervention,
    NoreftIntervention,
)
from .pyvene_names import (
    BoundlessRotatedSpaceIntervention,
    LowRankRotatedSpaceIntervention,
    RotatedSpaceIntervention,
    VanillaIntervention,
    ZeroIntervention,
)
from .resample_ablation import ResampleAblation, resample_patch
from .rotated import RotatedSpace, rotated_patch
from .simgate import SimilarityGated, similarity_gate
from .sourced import Sourced, WithSource
from .sum import SumOfEdits
from .vanilla import Vanilla, vanilla_patch
from .zero import ZeroAblation, zero_patch

__all__ = [
    "BoundlessRotatedSpace",
    "BoundlessRotatedSpaceIntervention",
    "ConcatLoReFT",
    "ConsReFT",
    "ConsreftIntervention",
    "DiReFT",
    "DireftIntervention",
    "Intervention",
    "InterventionDict",
    "LoReFT",
    "LobiReFT",
    "LobireftIntervention",
    "LoreftIntervention",
    "LowRank",
    "LowRankRotatedSpace",
    "LowRankRotatedSpaceIntervention",
    "MeanAblation",
    "NoReFT",
    "NodiReFT",
    "NodireftIntervention",
    "NoreftIntervention",
    "ResampleAblation",
    "RotatedSpace",
    "RotatedSpaceIntervention",
    "SimilarityGated",
    "Sourced",
    "SumOfEdits",
    "Vanilla",
    "VanillaIntervention",
    "WithSource",
    "ZeroAblation",
    "ZeroIntervention",
    "boundary_mask",
    "boundless_patch",
    "build",
    "concat_loreft_edit",
    "consreft_edit",
    "dataset_mean",
    "direft_edit",
    "intervention_class",
    "kinds",
    "lobireft_edit",
    "loreft_edit",
    "mean_patch",
    "nodireft_edit",
    "noreft_edit",
    "orthonormal_rows",
    "register",
    "resample_patch",
    "rotated_patch",
    "similarity_gate",
    "vanilla_patch",
    "zero_patch",
]
