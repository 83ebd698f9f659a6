"""Training: the data protocol and loader, losses, hard-negative mining, validation, and the trainer
for the be / ce / sep / joint set-ups (single process or DDP under torchrun)."""

from __future__ import annotations

from search_backend.training.config import SETUPS, TrainConfig
from search_backend.training.data import ManifestData, ShapesPool, TrainingData, TrainingPool
from search_backend.training.losses import BI_LOSSES, bi_loss, infonce_loss, matching_loss, vsepp_loss
from search_backend.training.mining import sample_negatives
from search_backend.training.trainer import prepare_data, train, train_single

__all__ = [
    "BI_LOSSES",
    "SETUPS",
    "ManifestData",
    "ShapesPool",
    "TrainConfig",
    "TrainingData",
    "TrainingPool",
    "bi_loss",
    "infonce_loss",
    "matching_loss",
    "prepare_data",
    "sample_negatives",
    "train",
    "train_single",
    "vsepp_loss",
]
