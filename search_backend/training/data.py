"""The training-data protocol and its two implementations: the ``shapes`` pool and manifests.

A training set is a list of *items*: one image, its captions (one or more), and a group id
(items of one group, such as a scene and its hard distractors, are drawn into a batch together).
The trainer reads it through :class:`TrainingData`:

* :class:`ShapesPool`: scenes of the synthetic ``shapes`` train split, rendered once into memory
  (what ``xmr train`` uses without ``--manifest``; ``TrainingPool`` is its older name);
* :class:`ManifestData`: any captioned JSONL or Karpathy manifest, read by the same readers as
  indexing. Only paths and captions are held, packed into a few numpy buffers (no per-caption
  Python objects, so DataLoader worker processes share them without copying); each image is
  decoded when a batch needs it, reduced to what the model reads (JPEG draft decoding), then
  cropped, flipped and resized (:func:`augment`).

A bad image (missing, empty, corrupt, truncated, not an image, over the pixel limit) raises
:class:`~search_backend.data.images.ImageError` from :meth:`TrainingData.image`; the loader skips
it and reports it (see :mod:`search_backend.training.loader`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from search_backend.data.images import MAX_IMAGE_PIXELS

if TYPE_CHECKING:
    from search_backend.data.manifest import ItemProblem
    from search_backend.data.shapes import Scene

__all__ = [
    "SIDE_WORDS",
    "CaptionTable",
    "ManifestData",
    "ShapesPool",
    "StringTable",
    "TrainingData",
    "TrainingPool",
    "augment",
    "check_disjoint",
    "group_members",
    "names_a_side",
    "sample_batch",
    "split_validation",
]


class StringTable:
    """Strings packed into one UTF-8 buffer and an offset array (cheap to hold, to pickle and to
    share with forked worker processes: no per-string Python objects)."""

    def __init__(self, strings: Iterable[str] = ()) -> None:
        data = bytearray()
        offsets = [0]
        for s in strings:
            data += s.encode("utf-8", "surrogatepass")
            offsets.append(len(data))
        self._data = np.frombuffer(bytes(data), dtype=np.uint8)
        self._offsets = np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        a, b = self._offsets[i], self._offsets[i + 1]
        return self._data[a:b].tobytes().decode("utf-8", "surrogatepass")

    def take(self, indices: Iterable[int]) -> StringTable:
        return StringTable(self[int(i)] for i in indices)


class CaptionTable:
    """Each item's captions: ``table[i]`` is item i's list (what ``ShapesPool.captions[i]`` is)."""

    def __init__(self, strings: StringTable, starts: np.ndarray) -> None:
        self._strings = strings
        self._starts = np.asarray(starts, dtype=np.int64)  # item i: strings[starts[i]:starts[i+1]]

    @classmethod
    def from_lists(cls, lists: Iterable[Sequence[str]]) -> CaptionTable:
        flat: list[str] = []
        starts = [0]
        for captions in lists:
            flat.extend(captions)
            starts.append(len(flat))
        return cls(StringTable(flat), np.asarray(starts))

    def __len__(self) -> int:
        return len(self._starts) - 1

    def __getitem__(self, i: int) -> list[str]:
        return [self._strings[k] for k in range(int(self._starts[i]), int(self._starts[i + 1]))]

    def count(self) -> int:
        return len(self._strings)

    def take(self, indices: Iterable[int]) -> CaptionTable:
        return CaptionTable.from_lists(self[int(i)] for i in indices)


class TrainingData(Protocol):
    """What the trainer reads: items of (image, captions, group)."""

    image_size: int
    captions: Any
    """``captions[i]``: item i's captions (a list of non-empty strings)."""
    groups: np.ndarray
    """(N,) int64: items with the same value are drawn into a batch together."""
    scenes: list[Scene] | None
    """The ``shapes`` scenes behind the items (for shapes-only training options), else None."""
    flip_safe: bool
    """Whether a mirrored image still matches its captions (not for ``shapes``: left / right)."""

    def __len__(self) -> int: ...

    def image(self, i: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Item i's image as (S, S, 3) uint8, augmented when ``rng`` is given; raises ImageError."""
        ...

    def source(self, i: int) -> str:
        """Where item i's image comes from (a path), for reports."""
        ...


def group_members(groups: np.ndarray) -> list[np.ndarray]:
    """Item indices of each group, groups in first-seen order."""
    order = np.argsort(groups, kind="stable")
    _, starts = np.unique(groups[order], return_index=True)
    parts = np.split(order, starts[1:])
    parts.sort(key=lambda p: int(p[0]))
    return parts


def sample_batch(members: list[np.ndarray], rng: np.random.Generator, batch_size: int) -> np.ndarray:
    """Indices of ``batch_size`` distinct items made of whole groups, in random order."""
    picked: list[int] = []
    for g in rng.permutation(len(members)):
        picked.extend(int(i) for i in members[int(g)])
        if len(picked) >= batch_size:
            break
    return np.array(picked[:batch_size], dtype=np.int64)


def augment(img: Any, size: int, rng: np.random.Generator | None, *, flip: bool) -> np.ndarray:
    """``img`` (RGB PIL image) as (size, size, 3) uint8; with ``rng`` a random resized crop (8-100%
    of the area at aspect 3/4-4/3, as in CLIP / open_clip training, here from 50%) and, when
    ``flip``, a horizontal flip half of the time."""
    from PIL import Image as PILImage

    box: tuple[float, float, float, float] | None = None
    if rng is not None:
        w, h = img.size
        for _ in range(10):
            area = w * h * rng.uniform(0.5, 1.0)
            ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
            cw, ch = np.sqrt(area * ratio), np.sqrt(area / ratio)
            if cw <= w and ch <= h:
                x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
                box = (x0, y0, x0 + cw, y0 + ch)
                break
        if flip and rng.random() < 0.5:
            img = img.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT)
            if box is not None:
                box = (w - box[2], box[1], w - box[0], box[3])
    out = img.resize((size, size), PILImage.Resampling.BICUBIC, box=box)
    return np.asarray(out, dtype=np.uint8)


class ShapesPool:
    """Training scenes of the ``shapes`` train split rendered once: uint8 pixels in memory."""

    flip_safe = False  # captions name left and right

    def __init__(self, size: int, seed: int, image_size: int, langs: str | Sequence[str] = ("en",)) -> None:
        from search_backend.data.shapes import make_shapes

        items = list(make_shapes("train", size, seed, image_size=image_size, langs=langs))
        self.image_size = image_size
        self.pixels = np.stack([np.asarray(it.image, dtype=np.uint8) for it in items])
        self.captions = [it.captions for it in items]
        self.groups = np.array([it.group for it in items], dtype=np.int64)
        self.scenes: list[Scene] | None = [it.scene for it in items]
        self.caption_langs = [it.caption_langs for it in items]
        self._members = group_members(self.groups)

    def __len__(self) -> int:
        return len(self.captions)

    def image(self, i: int, rng: np.random.Generator | None = None) -> np.ndarray:
        return self.pixels[i]

    def source(self, i: int) -> str:
        return f"shapes train #{i}"

    def caption_lang(self, i: int, caption: str) -> str:
        """The language of ``caption``, one of item ``i``'s captions (English if it is not one)."""
        captions = self.captions[i]
        return self.caption_langs[i][captions.index(caption)] if caption in captions else "en"

    def sample(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """Indices of ``batch_size`` scenes made of whole distractor groups, in random order."""
        return sample_batch(self._members, rng, batch_size)


TrainingPool = ShapesPool


@dataclass
class ManifestData:
    """A captioned manifest's items: image paths and captions, images decoded on demand."""

    paths: StringTable
    captions: CaptionTable
    groups: np.ndarray
    image_size: int
    augment: bool = True
    max_pixels: int = MAX_IMAGE_PIXELS
    name: str = ""
    scenes: list[Scene] | None = None
    flip_safe: bool = True
    flip_ok: np.ndarray | None = None
    """Per item: may its image be mirrored? Not when a caption names a side (see :data:`SIDE_WORDS`)."""

    def __post_init__(self) -> None:
        self._members = group_members(self.groups) if len(self.groups) else []
        if self.flip_ok is None:
            self.flip_ok = np.array(
                [not names_a_side(self.captions[i]) for i in range(len(self.paths))], dtype=bool
            )

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def read(
        cls,
        path: str | Path,
        *,
        image_size: int,
        image_root: str | Path | None = None,
        split: str | list[str] | None = None,
        augment: bool = True,
        max_pixels: int = MAX_IMAGE_PIXELS,
        langs: Sequence[str] = (),
    ) -> tuple[ManifestData, list[ItemProblem]]:
        """Every captioned image of the manifest at ``path`` and the items left out (with reasons).

        Images are checked for existence only (decoding them all up front would read the whole
        collection); one that fails to decode later is skipped by the loader. A JSONL line may
        carry a ``"group"``; images without one are groups of their own. Captions of one image
        may be on any lines. ``langs`` keeps only lines whose ``"lang"`` is one of them (lines
        without one are kept).
        """
        from search_backend.data.manifest import ItemProblem, ManifestError, ManifestRecord, iter_manifest

        index: dict[str, int] = {}
        paths: list[str] = []
        group_names: list[str | None] = []
        owners: list[int] = []
        texts: list[str] = []
        problems: list[ItemProblem] = []
        for item in iter_manifest(path, image_root=image_root, split=split, strict=False):
            if isinstance(item, ItemProblem):
                problems.append(item)
                continue
            assert isinstance(item, ManifestRecord)
            if item.caption is None or item.image is None:
                raise ManifestError(path, "training needs captions: an image folder has none")
            if langs and item.lang is not None and item.lang not in langs:
                continue
            key = str(item.image)
            at = index.get(key)
            if at is None:
                at = index[key] = len(paths)
                paths.append(key)
                group_names.append(item.group)
            owners.append(at)
            texts.append(item.caption)
        if not paths:
            shown = "; ".join(str(p) for p in problems[:3])
            raise ManifestError(path, "no usable item to train on" + (f" ({shown})" if shown else ""))
        order = np.argsort(np.asarray(owners, dtype=np.int64), kind="stable")
        starts = np.searchsorted(np.asarray(owners, dtype=np.int64)[order], np.arange(len(paths) + 1))
        captions = CaptionTable(StringTable(texts[int(k)] for k in order), starts)
        del texts, owners, index
        data = cls(
            StringTable(paths),
            captions,
            _group_ids(group_names),
            image_size,
            augment=augment,
            max_pixels=max_pixels,
            name=str(path),
        )
        return data, problems

    def image(self, i: int, rng: np.random.Generator | None = None) -> np.ndarray:
        from search_backend.data.images import load_image

        img = load_image(self.paths[i], max_pixels=self.max_pixels, reduce_to=2 * self.image_size)
        flip = self.flip_safe and self.flip_ok is not None and bool(self.flip_ok[i])
        return augment(img, self.image_size, rng if self.augment else None, flip=flip)

    def source(self, i: int) -> str:
        return self.paths[i]

    def sample(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        return sample_batch(self._members, rng, batch_size)

    def subset(self, indices: np.ndarray) -> ManifestData:
        """The items at ``indices`` (in that order), sharing this data's settings."""
        return ManifestData(
            self.paths.take(indices),
            self.captions.take(indices),
            self.groups[indices],
            self.image_size,
            augment=self.augment,
            max_pixels=self.max_pixels,
            name=self.name,
            flip_safe=self.flip_safe,
            flip_ok=None if self.flip_ok is None else self.flip_ok[indices],
        )


SIDE_WORDS = re.compile(
    r"\b(left|right|links|rechts|gauche|droite|vlevo|vpravo|izquierda|derecha|sinistra|destra)\b",
    re.IGNORECASE,
)
"""Words that name a side: an image whose captions use one is never mirrored (its label would flip)."""


def names_a_side(captions: Sequence[str]) -> bool:
    return any(SIDE_WORDS.search(c) for c in captions)


def _group_ids(names: list[str | None]) -> np.ndarray:
    """One int per item: equal names share an id; items without a name get ids of their own."""
    ids = np.empty(len(names), dtype=np.int64)
    known: dict[str, int] = {}
    for i, name in enumerate(names):
        ids[i] = len(names) + known.setdefault(name, len(known)) if name is not None else i
    return ids


def split_validation(data: ManifestData, fraction: float, seed: int) -> tuple[ManifestData, ManifestData]:
    """(train, validation): a ``fraction`` of the groups (drawn under ``seed``) held out whole, so no
    image, and no group, is in both."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--val-fraction must be within (0, 1), got {fraction}")
    members = group_members(data.groups)
    order = np.random.default_rng([seed, 17]).permutation(len(members))
    n_val = max(1, round(fraction * len(members)))
    if n_val >= len(members):
        raise ValueError(f"{data.name}: too few items ({len(data)}) to hold out a validation set")
    val = np.sort(np.concatenate([members[int(g)] for g in order[:n_val]]))
    train = np.sort(np.concatenate([members[int(g)] for g in order[n_val:]]))
    return data.subset(train), data.subset(val)


def check_disjoint(train: ManifestData, val: ManifestData) -> None:
    """A validation set must not share an image (by resolved path) with the training set."""
    train_paths = {train.paths[i] for i in range(len(train))}
    shared = [val.paths[i] for i in range(len(val)) if val.paths[i] in train_paths]
    if shared:
        raise ValueError(
            f"the validation set shares {len(shared)} image(s) with the training set "
            f"(e.g. {shared[0]}); hold out other images, or use --val-fraction"
        )
