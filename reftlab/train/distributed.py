"""pyreft's ``ReftTrainerForCausalLMDistributed``, on the HF Trainer's own distributed support.

    torchrun --nproc-per-node 2 train.py     # train.py builds the trainer as usual

Every reftlab ReftTrainer already runs under ``torchrun``/``accelerate launch``: the
Trainer wraps the ReftModel in ``DistributedDataParallel`` (only parameters that require
grad are synchronised: the interventions and an unfrozen head, never the frozen base),
its data loader gives each process its own shard of a seeded shuffle, fast-path losses run
on the ReftModel inside the wrapper with the trainable gradients all-reduced by the trainer
(plain-path losses run through the wrapper, which all-reduces them), and checkpoints are
written by the main process only. This class is that trainer under pyreft's name (pyreft's version swapped
in a ``DistributedSampler`` and guarded ``save_model`` with the rank); with one process
it trains exactly like ``ReftTrainerForCausalLM``.
"""

from __future__ import annotations

from .hf_trainer import ReftTrainerForCausalLM


class ReftTrainerForCausalLMDistributed(ReftTrainerForCausalLM):
    """``ReftTrainerForCausalLM`` for multi-process runs (see the module docstring)."""


__all__ = ["ReftTrainerForCausalLMDistributed"]
