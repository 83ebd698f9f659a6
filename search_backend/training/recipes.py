"""The documented training recipes (what ``xmr train``, ``xmr demo`` and the benchmark use)."""

from __future__ import annotations

from search_backend.training.trainer import SETUPS, TrainConfig

__all__ = ["default_recipe"]


def default_recipe(setup: str = "joint", *, seed: int = 0) -> TrainConfig:
    """The recipe for ``setup``, sized for a 15-minute CPU budget on a 2-core machine.

    MiniLM-L6 backbone (lr 1e-4), new modules (patch embedder, 2-D positions, heads) at 1e-3,
    420 steps, AdamW, 25 warm-up steps then linear decay, batch 32 scenes (whole distractor
    groups), 64 px images as a 4x4 patch grid, symmetric InfoNCE for the bi-encoder, binary
    matching loss with half the negatives mined by the bi-encoder for the cross-encoder.
    """
    if setup not in SETUPS:
        raise ValueError(f"unknown set-up {setup!r}; expected one of {', '.join(SETUPS)}")
    return TrainConfig(setup=setup, seed=seed, steps=420)
