"""Validation during training: recall on held-out data, model selection and early stopping.

Every ``eval_every`` steps the model in training is scored like ``xmr eval`` does it (t2i and
i2t R@1/5/10 of ``be`` and, when a cross-encoder is trained, ``rr``) on a bounded validation
corpus: at most ``val_size`` images decoded once into memory and at most ``val_queries`` queries
each way. The value of ``select`` (``method.direction.rK``, default ``rr.t2i.r1``) decides which
evaluation's weights become the saved model; ``patience`` evaluations without a gain end the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.data.images import ImageError

if TYPE_CHECKING:
    from search_backend.evaluation.evaluate import EvalCorpus
    from search_backend.model.base import RetrievalModel
    from search_backend.training.data import ManifestData

__all__ = ["SELECT_METHODS", "Selection", "Validator", "check_select", "manifest_val_corpus"]

SELECT_METHODS = ("be", "rr")
_DIRECTIONS = ("t2i", "i2t")
_RECALLS = ("r1", "r5", "r10")


def check_select(select: str) -> tuple[str, str, str]:
    """``method.direction.rK`` split into its parts, or a ValueError naming what is wrong."""
    parts = select.split(".")
    if (
        len(parts) != 3
        or parts[0] not in SELECT_METHODS
        or parts[1] not in _DIRECTIONS
        or parts[2] not in _RECALLS
    ):
        raise ValueError(
            f"select {select!r}: expected METHOD.DIRECTION.RECALL with METHOD in be, rr; "
            "DIRECTION in t2i, i2t; RECALL in r1, r5, r10 (e.g. rr.t2i.r1)"
        )
    return parts[0], parts[1], parts[2]


def manifest_val_corpus(
    data: ManifestData, size: int, seed: int
) -> tuple[EvalCorpus, list[tuple[int, str, str]]]:
    """Up to ``size`` of ``data``'s items (drawn under ``seed``) decoded once, un-augmented; and the
    (item, source, reason) of those that failed to load."""
    from PIL import Image

    from search_backend.evaluation.evaluate import EvalCorpus
    from search_backend.training.data import augment

    order = np.random.default_rng([seed, 23]).permutation(len(data))[:size]
    images, captions, owner = [], [], []
    failed: list[tuple[int, str, str]] = []
    for i in np.sort(order):
        try:
            from search_backend.data.images import load_image

            img = load_image(data.paths[int(i)], max_pixels=data.max_pixels, reduce_to=2 * data.image_size)
        except ImageError as exc:
            failed.append((int(i), data.source(int(i)), exc.reason))
            continue
        images.append(Image.fromarray(augment(img, data.image_size, None, flip=False)))
        for caption in data.captions[int(i)]:
            captions.append(caption)
            owner.append(len(images) - 1)
    if not images:
        raise ValueError(f"{data.name}: no validation image could be loaded")
    return EvalCorpus(images, captions, np.asarray(owner)), failed


@dataclass
class Selection:
    """The best evaluation so far and how many evaluations since it (resumable state)."""

    best: float = float("-inf")
    best_step: int = 0
    since_best: int = 0

    def update(self, value: float, step: int) -> bool:
        """Record an evaluation; True if it is the new best."""
        if value > self.best:
            self.best, self.best_step, self.since_best = value, step, 0
            return True
        self.since_best += 1
        return False


@dataclass
class Validator:
    corpus: EvalCorpus
    select: str = "rr.t2i.r1"
    queries: int = 100
    k: int = 20
    seed: int = 0
    methods: tuple[str, ...] = field(default=("be", "rr"))

    def __post_init__(self) -> None:
        method, _, _ = check_select(self.select)
        if method not in self.methods:
            raise ValueError(f"select {self.select!r}: {method} is not evaluated by this set-up")

    def evaluate(self, model: RetrievalModel) -> dict[str, Any]:
        """The ``results`` part of :func:`search_backend.evaluation.evaluate` for this corpus."""
        from search_backend.evaluation.evaluate import evaluate

        out = evaluate(
            model, self.corpus, k=self.k, queries=self.queries, seed=self.seed, methods=self.methods
        )
        results: dict[str, Any] = out["results"]
        return results

    def value(self, results: dict[str, Any]) -> float:
        method, direction, recall = check_select(self.select)
        return float(results[method][direction][recall])
