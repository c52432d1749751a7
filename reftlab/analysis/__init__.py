"""Look inside a trained ReFT: project, compare, decode and attribute its subspaces.

Every function returns tensors or tidy pandas DataFrames; figures live in ``reftlab.viz``.
"""

from .attribute import attribute
from .compare import (
    compare,
    mean_difference_direction,
    orthonormal_basis,
    overlap,
    principal_angles,
    subspaces,
)
from .decode import decode, direction_logits, mean_edit
from .interchange import SourceBatch, site_activations, site_mean
from .patch import PatchSweep, patch
from .project import project, unit_directions
from .prompts import PromptSet, as_prompt_set, read_prompts

__all__ = [
    "PatchSweep",
    "PromptSet",
    "SourceBatch",
    "as_prompt_set",
    "attribute",
    "compare",
    "decode",
    "direction_logits",
    "mean_difference_direction",
    "mean_edit",
    "orthonormal_basis",
    "overlap",
    "patch",
    "principal_angles",
    "project",
    "read_prompts",
    "site_activations",
    "site_mean",
    "subspaces",
    "unit_directions",
]
