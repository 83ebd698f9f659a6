"""The documented training recipes (what ``xmr train``, ``xmr demo`` and the benchmark use)."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from search_backend.config import check_choice
from search_backend.model.joint import JointConfig
from search_backend.training.trainer import SETUPS, TrainConfig

__all__ = ["DATA_KINDS", "default_recipe", "with_overrides"]

_NOT_SETTABLE = {"setup", "model"}
_MODEL_NOT_SETTABLE = {"trained", "backbone"}


DATA_KINDS = ("shapes", "manifest")


def default_recipe(setup: str = "joint", *, seed: int = 0, data: str = "shapes") -> TrainConfig:
    """The recipe for ``setup``: the shapes benchmark's best measured at its wall-clock budget.

    ``data="manifest"`` (training on a user's manifest) is the same recipe with a validation every
    100 steps, so that the best of them becomes the model; augmentation is on for manifests (the
    ``shapes`` pool is never augmented: its captions name left and right).

    MiniLM-L6 backbone (lr 1e-4), the ImageNet-pretrained EfficientNet-Lite0 reading the 64-px
    image at 64 px (a 4x4 grid of stride-16 features) with sine/cosine-initialised 2-D positions,
    new modules at 1e-3, late fusion (the top 2 of 6 layers attend across text and image), the
    ``residual`` cross readout (the twin-mode logit plus the CLS head's correction), 450 steps,
    AdamW, 25 warm-up steps then linear decay, batch 32 scenes (whole distractor groups), bfloat16
    autocast where the CPU has it, symmetric InfoNCE for the bi-encoder; for the cross-encoder a
    binary matching loss whose negatives are 75% mined by the bi-encoder (two thirds of those from
    outside the row's distractor group: partial matches) and 25% random. About 26 minutes on 2
    float32-only cores (1,536 s measured); the previous recipe (8-px patches learnt from scratch,
    460 steps) took 12 s a step there, and at the same 25 minutes reached 35 / 28 t2i R@1 (be / rr)
    against this recipe's 58 / 60.
    """
    check_choice("set-up", setup, SETUPS)
    check_choice("data", data, DATA_KINDS)
    return TrainConfig(
        setup=setup,
        seed=seed,
        steps=450,
        model={
            "image_encoder": "efficientnet-lite0",
            "patch_size": 16,
            "encoder_resolution": 64,
            "cross_layers": 2,
            "cross_readout": "residual",
            "position_init": "sincos",
        },
        precision="auto",
        hard_rate=0.75,
        hard_other_group_rate=0.67,
        eval_every=100 if data == "manifest" else 0,
    )


def with_overrides(cfg: TrainConfig, assignments: list[str]) -> TrainConfig:
    """``cfg`` with ``KEY=VALUE`` assignments applied (what ``xmr train --set`` takes).

    ``KEY`` is a :class:`TrainConfig` field (``steps=300``, ``hard_rate=0.5``) or ``model.`` and a
    :class:`JointConfig` field (``model.patch_size=16``); ``VALUE`` is read as that field's type.
    The result is validated, so a bad value fails here, naming the key. With ``init_from`` the
    recipe's model settings give way to the saved model's; ``model.`` assignments then may only
    add a module to it (``JointModel.load(grow=)``).
    """
    train_fields = tuple(f.name for f in fields(TrainConfig) if f.name not in _NOT_SETTABLE)
    model_fields = tuple(f.name for f in fields(JointConfig) if f.name not in _MODEL_NOT_SETTABLE)
    top: dict[str, Any] = {}
    model = dict(cfg.model)
    given: dict[str, Any] = {}  # the model. values assigned here
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        if key.startswith("model."):
            name = key.removeprefix("model.")
            check_choice("model setting", name, model_fields)
            default = model.get(name, getattr(JointConfig(), name))
            model[name] = given[name] = _parse(key, raw.strip(), default)
        else:
            check_choice("training setting", key, train_fields)
            top[key] = _parse(key, raw.strip(), getattr(cfg, key))
    if top.get("init_from"):  # a saved model's own settings stand: only the model. values given apply
        model = given
    out = replace(cfg, **top, model=model)
    out.validate()
    return out


def _parse(key: str, raw: str, like: object) -> object:
    """``raw`` as the type of ``like`` (bool, int, float or str)."""
    if isinstance(like, bool):
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}={raw!r}: expected true or false")
    for kind, what in ((int, "an integer"), (float, "a number")):
        if isinstance(like, kind):
            try:
                return kind(raw)
            except ValueError:
                raise ValueError(f"{key}={raw!r}: expected {what}") from None
    return raw
