"""The documented training recipes (what ``xmr train``, ``xmr demo`` and the benchmark use)."""

from __future__ import annotations

from search_backend.config import check_choice
from search_backend.training.trainer import SETUPS, TrainConfig

__all__ = ["default_recipe"]


def default_recipe(setup: str = "joint", *, seed: int = 0) -> TrainConfig:
    """The recipe for ``setup``, sized for a 15-minute CPU budget on a 2-core machine.

    MiniLM-L6 backbone (lr 1e-4), new modules (patch embedder, 2-D positions, heads) at 1e-3,
    460 steps, AdamW, 25 warm-up steps then linear decay, batch 32 scenes (whole distractor
    groups), 64 px images as an 8x8 grid of 8-px patches with sine/cosine-initialised 2-D
    positions, bfloat16 autocast where the CPU has it, symmetric InfoNCE for the bi-encoder; for
    the cross-encoder the ``cls+pair`` readout and a binary matching loss whose negatives are 75%
    mined by the bi-encoder (two thirds of those from outside the row's distractor group: partial
    matches) and 25% random.
    """
    check_choice("set-up", setup, SETUPS)
    return TrainConfig(
        setup=setup,
        seed=seed,
        steps=460,
        model={"patch_size": 8, "cross_readout": "cls+pair", "position_init": "sincos"},
        precision="auto",
        hard_rate=0.75,
        hard_other_group_rate=0.67,
    )
