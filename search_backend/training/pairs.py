"""The cross-encoder's training rows: each positive pair and one negative, by configured strategy.

Every row of a batch is a positive (caption, image) pair. Its negative swaps the image (a share
``image_negative_share`` of the rows, half by default) or the caption (the others); what is
swapped in comes from, in this order:

1. ``sample_negatives``: mined by the bi-encoder's in-batch similarities (``hard_rate``, of which
   ``hard_other_group_rate`` from outside the distractor group) or random;
2. ``text_hard_rate``: a contrast caption of the row's own scene (objects or colours swapped);
3. ``flip_negative_rate``: the row's own image mirrored along its relation (``shapes.mirror_axis``);
4. ``swap_negative_rate``: the row's own scene rendered with two objects' colours, shapes or sizes
   traded (``shapes.attribute_twin``);
5. ``pool_negative_rate``: the bi-encoder's top neighbours over the whole training pool;
6. ``ce_rows``: a subset of the rows, when the cross-encoder should not see them all.

Later strategies overwrite earlier choices for the rows they draw. The random draws happen in
exactly this order, so a configuration trains to the same weights under a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.data.images import ImageError
from search_backend.training.mining import sample_negative_lists, sample_negatives

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from search_backend.data.shapes import Scene
    from search_backend.model.base import RetrievalModel
    from search_backend.training.trainer import TrainConfig, TrainingPool

__all__ = ["CrossPairs", "cross_lists", "cross_pairs", "pool_neighbours", "subset_pairs"]


@dataclass
class CrossPairs:
    rows: np.ndarray
    """The batch rows (positions in ``idx``) the positives come from."""
    pos_captions: list[str]
    pos_pixels: torch.Tensor
    neg_captions: list[str]
    neg_pixels: torch.Tensor
    neg_caption_rows: np.ndarray
    """The batch row whose caption each negative reads; -1 where it is no batch caption (a
    contrast caption, or one from the pool)."""
    neg_rows: np.ndarray
    """The batch row whose image each negative shows (its own row when only the caption is wrong)."""
    neg_custom: np.ndarray
    """True where the negative's pixels are not a batch image (mirrored, or from the pool)."""


def cross_pairs(
    cfg: TrainConfig,
    rng: np.random.Generator,
    pool: TrainingPool,
    idx: np.ndarray,
    captions: list[str],
    pixels: torch.Tensor,
    sim: np.ndarray | None,
    neighbours: tuple[np.ndarray, np.ndarray] | None,
) -> CrossPairs:
    """Rows ``idx`` of ``pool`` (with their ``captions`` and prepared ``pixels``) and a negative each.

    ``sim`` is the bi-encoder's caption x image similarity within the batch (``None``: no miner);
    ``neighbours`` the pool-wide tables of ``pool_neighbours`` when ``pool_negative_rate`` is on.
    """
    neg_img, neg_txt = sample_negatives(sim, pool.groups[idx], rng, cfg.hard_rate, cfg.hard_other_group_rate)
    swap_image = rng.random(len(idx)) < cfg.image_negative_share  # wrong image; the rest: wrong caption
    rows = np.arange(len(idx))
    neg_caption_rows = np.where(swap_image, rows, neg_txt)
    neg_captions = [captions[int(r)] for r in neg_caption_rows]
    if cfg.text_hard_rate > 0:
        _contrast_captions(
            neg_captions, captions, cfg.text_hard_rate, rng, pool, idx, swap_image, neg_caption_rows
        )
    neg_rows = np.where(swap_image, neg_img, rows)
    neg_pixels = pixels[neg_rows]  # a copy: rows below are edited in place
    custom = np.zeros(len(idx), dtype=bool)
    if cfg.flip_negative_rate > 0:
        _image_negatives(
            _mirrored(pixels), neg_pixels, cfg.flip_negative_rate, rng, pool, idx, swap_image, custom
        )
    if cfg.swap_negative_rate > 0:
        twins = _twins(int(neg_pixels.shape[-1]), rng)
        _image_negatives(twins, neg_pixels, cfg.swap_negative_rate, rng, pool, idx, swap_image, custom)
    if neighbours is not None:
        _pool_swaps(
            neg_captions,
            neg_pixels,
            cfg.pool_negative_rate,
            rng,
            pool,
            idx,
            swap_image,
            neighbours,
            custom,
            neg_caption_rows,
        )
    pairs = CrossPairs(rows, captions, pixels, neg_captions, neg_pixels, neg_caption_rows, neg_rows, custom)
    if 0 < cfg.ce_rows < len(idx):
        pairs = subset_pairs(pairs, np.sort(rng.permutation(len(idx))[: cfg.ce_rows]))
    return pairs


def cross_lists(
    cfg: TrainConfig, rng: np.random.Generator, groups: np.ndarray, sim: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``cfg.ce_negatives`` in-batch negatives per row, for a listwise cross-encoder loss.

    A share ``image_negative_share`` of the rows (drawn; half by default) keep their caption and
    list ``K`` wrong images, the others keep their image and list ``K`` wrong captions
    (:func:`sample_negative_lists`: mined by ``sim`` at ``hard_rate``). Returns (rows, text,
    image): ``text[r, j]`` / ``image[r, j]`` are batch rows, column 0 the positive. ``ce_rows``
    keeps a drawn subset of the rows.
    """
    k = cfg.ce_negatives
    neg_img, neg_txt = sample_negative_lists(sim, groups, rng, k, cfg.hard_rate, cfg.hard_other_group_rate)
    n = len(groups)
    rows = np.arange(n)
    swap_image = rng.random(n) < cfg.image_negative_share
    own = np.repeat(rows[:, None], k, axis=1)
    text = np.concatenate([rows[:, None], np.where(swap_image[:, None], own, neg_txt)], axis=1)
    image = np.concatenate([rows[:, None], np.where(swap_image[:, None], neg_img, own)], axis=1)
    if 0 < cfg.ce_rows < n:
        sub = np.sort(rng.permutation(n)[: cfg.ce_rows])
        rows, text, image = rows[sub], text[sub], image[sub]
    return rows, text, image


def _contrast_captions(
    neg_captions: list[str],
    captions: list[str],
    rate: float,
    rng: np.random.Generator,
    pool: TrainingPool,
    idx: np.ndarray,
    swap_image: np.ndarray,
    caption_rows: np.ndarray,
) -> None:
    """Replace a share ``rate`` of the wrong-caption rows' negatives by a contrast caption of the
    row's scene, in the language of the row's own caption."""
    from search_backend.data.shapes import contrast_caption

    lang_of = getattr(pool, "caption_lang", None)
    for i in range(len(idx)):
        if not swap_image[i] and rng.random() < rate:
            row = int(idx[i])
            lang = lang_of(row, captions[i]) if lang_of is not None else "en"
            contrast = contrast_caption(_scenes(pool)[row], rng, lang)
            if contrast is not None:
                neg_captions[i] = contrast
                caption_rows[i] = -1


def _image_negatives(
    make: Callable[[int, Scene], torch.Tensor | None],
    neg_pixels: torch.Tensor,
    rate: float,
    rng: np.random.Generator,
    pool: TrainingPool,
    idx: np.ndarray,
    swap_image: np.ndarray,
    custom: np.ndarray,
) -> None:
    """Replace a share ``rate`` of the wrong-image rows' negatives by ``make(row, its scene)``
    (``None``: the row keeps the negative it has)."""
    for i in range(len(idx)):
        if swap_image[i] and rng.random() < rate:
            image = make(i, _scenes(pool)[int(idx[i])])
            if image is not None:
                neg_pixels[i] = image
                custom[i] = True


def _mirrored(pixels: torch.Tensor) -> Callable[[int, Scene], torch.Tensor | None]:
    """The row's own image mirrored along its first relation's axis (none without a clean axis)."""
    from search_backend.data.shapes import mirror_axis

    def make(i: int, scene: Scene) -> torch.Tensor | None:
        axis = mirror_axis(scene)
        return None if axis is None else pixels[i].flip(-1 if axis == "h" else -2)

    return make


def _twins(size: int, rng: np.random.Generator) -> Callable[[int, Scene], torch.Tensor | None]:
    """The row's scene rendered at ``size`` with two objects' colours, shapes or sizes traded."""
    from search_backend.data.shapes import attribute_twin, render_scene
    from search_backend.model.image import images_to_tensor

    def make(i: int, scene: Scene) -> torch.Tensor | None:
        twin = attribute_twin(scene, rng)
        if twin is None:
            return None
        image = np.array(render_scene(twin, size, rng))  # writable, for torch
        return images_to_tensor(image[None], size)[0]

    return make


def _pool_swaps(
    neg_captions: list[str],
    neg_pixels: torch.Tensor,
    rate: float,
    rng: np.random.Generator,
    pool: TrainingPool,
    idx: np.ndarray,
    swap_image: np.ndarray,
    neighbours: tuple[np.ndarray, np.ndarray],
    custom: np.ndarray,
    caption_rows: np.ndarray,
) -> None:
    from search_backend.model.image import images_to_tensor

    for i in range(len(idx)):
        if rng.random() >= rate:
            continue
        pick = int(rng.choice(neighbours[0 if swap_image[i] else 1][idx[i]]))
        if swap_image[i]:
            try:
                image = pool.image(pick)
            except ImageError:  # a neighbour that cannot be read leaves the row's negative as drawn
                continue
            neg_pixels[i] = images_to_tensor(image[None], int(neg_pixels.shape[-1]))[0]
            custom[i] = True
        else:
            neg_captions[i] = pool.captions[pick][int(rng.integers(len(pool.captions[pick])))]
            caption_rows[i] = -1


def _scenes(pool: Any) -> list[Any]:
    if pool.scenes is None:
        raise ValueError("this negative strategy needs the shapes scenes behind each image")
    scenes: list[Any] = pool.scenes
    return scenes


def subset_pairs(pairs: CrossPairs, sub: np.ndarray) -> CrossPairs:
    """The pairs at positions ``sub`` (e.g. the rows one DDP rank computes)."""
    return CrossPairs(
        pairs.rows[sub],
        [pairs.pos_captions[int(i)] for i in sub],
        pairs.pos_pixels[sub],
        [pairs.neg_captions[int(i)] for i in sub],
        pairs.neg_pixels[sub],
        pairs.neg_caption_rows[sub],
        pairs.neg_rows[sub],
        pairs.neg_custom[sub],
    )


def pool_neighbours(
    bi: RetrievalModel, pool: Any, k: int, *, workers: int = 0, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Per training item: its first caption's top-k other images, and its image's top-k other
    items' captions, by ``bi``'s similarity over the whole training set (the paper's pool-mined
    negatives). Images are read through the loader (un-augmented); one that fails to load is never
    a neighbour. Similarities are taken ``chunk`` rows at a time, so memory stays O(N k)."""
    from search_backend.training.loader import iter_images

    n = len(pool)
    k = min(k, n - 1)
    images: np.ndarray | None = None
    usable = np.zeros(n, dtype=bool)
    for rows, pixels in iter_images(pool, workers=workers):
        v = bi.encode_images(pixels)  # type: ignore[arg-type]  # joint models take uint8 arrays
        if images is None:
            images = np.zeros((n, v.shape[1]), dtype=np.float32)
        images[rows] = v
        usable[rows] = True
    if images is None:
        raise ValueError("pool negatives: no training image could be read")
    texts = bi.encode_texts([pool.captions[i][0] for i in range(n)])
    return _top_k(texts, images, usable, k, chunk), _top_k(images, texts, np.ones(n, dtype=bool), k, chunk)


def _top_k(queries: np.ndarray, keys: np.ndarray, key_ok: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Row i: the k best keys for query i by dot product, never key i nor an unusable key."""
    n = len(queries)
    out = np.zeros((n, k), dtype=np.int64)
    for a in range(0, n, chunk):
        sim = queries[a : a + chunk] @ keys.T
        sim[:, ~key_ok] = -np.inf
        rows = np.arange(a, min(a + chunk, n))
        sim[rows - a, rows] = -np.inf
        out[a : a + chunk] = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return out
