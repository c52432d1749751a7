"""Typed subspace interventions, one module per kind; see ``base`` for the protocol."""

from .base import Intervention, InterventionDict, build, intervention_class, kinds, orthonormal_rows, register
from .concat import ConcatLoReFT, concat_loreft_edit
from .consreft import ConsReFT, consreft_edit
from .direft import DiReFT, direft_edit
from .lobireft import LobiReFT, lobireft_edit
from .loreft import LoReFT, loreft_edit
from .lowrank import LowRank
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
from .simgate import SimilarityGated, similarity_gate
from .sum import SumOfEdits

__all__ = [
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
    "NoReFT",
    "NodiReFT",
    "NodireftIntervention",
    "NoreftIntervention",
    "SimilarityGated",
    "SumOfEdits",
    "build",
    "concat_loreft_edit",
    "consreft_edit",
    "direft_edit",
    "intervention_class",
    "kinds",
    "lobireft_edit",
    "loreft_edit",
    "nodireft_edit",
    "noreft_edit",
    "orthonormal_rows",
    "register",
    "similarity_gate",
]
