"""Typed subspace interventions, one module per kind; see ``base`` for the protocol."""

from .base import Intervention, build, intervention_class, kinds, orthonormal_rows, register
from .concat import ConcatLoReFT, concat_loreft_edit
from .consreft import ConsReFT, consreft_edit
from .direft import DiReFT, direft_edit
from .lobireft import LobiReFT, lobireft_edit
from .loreft import LoReFT, loreft_edit
from .nodireft import NodiReFT, nodireft_edit
from .noreft import NoReFT, noreft_edit
from .simgate import SimilarityGated, similarity_gate
from .sum import SumOfEdits
from .pyreft_names import (
    ConsreftIntervention,
    DireftIntervention,
    LobireftIntervention,
    LoreftIntervention,
    NodireftIntervention,
    NoreftIntervention,
)

__all__ = [
    "Intervention", "build", "intervention_class", "kinds", "orthonormal_rows", "register",
    "LoReFT", "NoReFT", "DiReFT", "NodiReFT", "ConsReFT", "LobiReFT", "ConcatLoReFT", "SumOfEdits", "SimilarityGated",
    "concat_loreft_edit", "similarity_gate",
    "loreft_edit", "noreft_edit", "direft_edit", "nodireft_edit", "consreft_edit", "lobireft_edit",
    "LoreftIntervention", "NoreftIntervention", "DireftIntervention", "NodireftIntervention",
    "ConsreftIntervention", "LobireftIntervention",
]
