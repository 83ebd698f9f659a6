"""Batches from any :class:`~search_backend.training.data.TrainingData`, through a DataLoader.

A batch is a function of the step number alone: step ``s`` draws its items and captions from
``numpy.random.default_rng([seed, s])`` (whole groups, one random caption per item) and its
augmentations from a second stream, so a run is deterministic whatever the number of worker
processes, and a resumed run reads exactly the batches it would have read. ``torch.utils.data``
hands out steps to ``workers`` processes (each decodes whole batches; ``workers=0`` loads in the
training process). Under DDP every rank draws the same global batch and decodes only its own
contiguous share of the rows.

An image that fails to load is left out of its batch and reported with the item, its source and
the reason (:class:`LoadedBatch.skipped`); it never stops training.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.data.images import ImageError

if TYPE_CHECKING:
    from search_backend.training.data import TrainingData

__all__ = ["LoadedBatch", "StepBatches", "batches", "iter_images", "shard"]


@dataclass
class LoadedBatch:
    step: int
    idx: np.ndarray
    """The global batch's item indices (every rank's rows, before any was left out)."""
    captions: list[str]
    """One caption per global row."""
    rows: np.ndarray
    """The global rows this rank loaded (positions in ``idx``)."""
    pixels: np.ndarray
    """(len(rows), S, S, 3) uint8: those rows' images."""
    rng_state: dict[str, Any]
    """The step's random stream after the draws above (the trainer continues it)."""
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    """(item, source, reason) of each of this rank's rows whose image failed to load."""


def shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous share [start, stop) of ``n`` global rows that ``rank`` of ``world`` holds."""
    return n * rank // world, n * (rank + 1) // world


class StepBatches:
    """A map-style dataset whose item ``s`` is step ``s``'s batch (for ``DataLoader(batch_size=None)``)."""

    def __init__(
        self, data: TrainingData, *, seed: int, batch_size: int, rank: int = 0, world: int = 1
    ) -> None:
        self.data = data
        self.seed = seed
        self.batch_size = batch_size
        self.rank = rank
        self.world = world

    def __getitem__(self, step: int) -> LoadedBatch:
        rng = np.random.default_rng([self.seed, step])
        idx = self.data.sample(rng, self.batch_size)  # type: ignore[attr-defined]
        captions = [self.data.captions[i][int(rng.integers(len(self.data.captions[i])))] for i in idx]
        start, stop = shard(len(idx), self.rank, self.world)
        rows: list[int] = []
        images: list[np.ndarray] = []
        skipped: list[tuple[int, str, str]] = []
        for row in range(start, stop):
            item = int(idx[row])
            aug = np.random.default_rng([self.seed, step, 1, row])  # a row's own: shard-independent
            try:
                images.append(self.data.image(item, aug))
                rows.append(row)
            except ImageError as exc:
                skipped.append((item, self.data.source(item), exc.reason))
        s = self.data.image_size
        pixels = np.stack(images) if images else np.zeros((0, s, s, 3), dtype=np.uint8)
        state = dict(rng.bit_generator.state)
        return LoadedBatch(step, idx, captions, np.asarray(rows, dtype=np.int64), pixels, state, skipped)


def _as_is(batch: LoadedBatch) -> LoadedBatch:
    return batch


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # workers decode images; the training process owns the cores


def batches(
    dataset: StepBatches, start: int, stop: int, *, workers: int = 0
) -> Generator[LoadedBatch, None, None]:
    """Steps ``start`` .. ``stop - 1``, in order, loaded by ``workers`` processes (0: in this one)."""
    if workers <= 0:
        for step in range(start, stop):
            yield dataset[step]
        return
    import torch
    from torch.utils.data import DataLoader

    loader: Any = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=None,
        sampler=range(start, stop),
        num_workers=workers,
        collate_fn=_as_is,  # type: ignore[arg-type]
        worker_init_fn=_worker_init,
        prefetch_factor=2,
        generator=torch.Generator().manual_seed(dataset.seed),  # never the global RNG (dropout's)
    )
    yield from loader


class _ImageChunks:
    """Item ``c`` is chunk ``c`` of a training set's images, un-augmented (failures left out)."""

    def __init__(self, data: TrainingData, size: int) -> None:
        self.data = data
        self.size = size

    def __len__(self) -> int:
        return -(-len(self.data) // self.size)

    def __getitem__(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        rows: list[int] = []
        images: list[np.ndarray] = []
        for i in range(c * self.size, min((c + 1) * self.size, len(self.data))):
            try:
                images.append(self.data.image(i))
                rows.append(i)
            except ImageError:
                continue
        s = self.data.image_size
        pixels = np.stack(images) if images else np.zeros((0, s, s, 3), dtype=np.uint8)
        return np.asarray(rows, dtype=np.int64), pixels


def _chunk_as_is(chunk: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return chunk


def iter_images(
    data: TrainingData, *, workers: int = 0, size: int = 256
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every image of ``data`` in order, ``size`` at a time: (item indices, (n, S, S, 3) uint8)."""
    chunks = _ImageChunks(data, size)
    if workers <= 0:
        for c in range(len(chunks)):
            rows, pixels = chunks[c]
            if len(rows):
                yield rows, pixels
        return
    import torch
    from torch.utils.data import DataLoader

    loader: Any = DataLoader(
        chunks,  # type: ignore[arg-type]
        batch_size=None,
        num_workers=workers,
        collate_fn=_chunk_as_is,  # type: ignore[arg-type]
        worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(0),  # never the global RNG (dropout's)
    )
    for rows, pixels in loader:
        if len(rows):
            yield rows, pixels
