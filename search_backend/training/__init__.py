"""Training: losses, hard-negative mining, and the trainer for the be / ce / sep / joint set-ups."""

from __future__ import annotations

from search_backend.training.losses import BI_LOSSES, bi_loss, infonce_loss, matching_loss, vsepp_loss
from search_backend.training.mining import sample_negatives
from search_backend.training.trainer import SETUPS, TrainConfig, TrainingPool, train, train_single

__all__ = [
    "BI_LOSSES",
    "SETUPS",
    "TrainConfig",
    "TrainingPool",
    "bi_loss",
    "infonce_loss",
    "matching_loss",
    "sample_negatives",
    "train",
    "train_single",
    "vsepp_loss",
]
