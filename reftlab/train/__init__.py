"""Training ReFT interventions: a native loop, its fast path, checkpoints, and HF Trainers."""

from .checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .fast_forward import FastForward
from .loop import TrainResult, evaluate, train
from .loss import plain_loss

__all__ = [
    "FastForward",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "list_checkpoints",
    "load_checkpoint",
    "plain_loss",
    "save_checkpoint",
    "train",
]
