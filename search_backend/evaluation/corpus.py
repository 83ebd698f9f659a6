"""Evaluation corpora: the ``shapes`` dataset or any JSONL / Karpathy manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from search_backend.evaluation.evaluate import EvalCorpus

__all__ = ["manifest_corpus", "shapes_corpus"]


def shapes_corpus(split: str, size: int, seed: int, *, image_size: int = 64) -> EvalCorpus:
    from search_backend.data.shapes import make_shapes

    images, captions, owner = [], [], []
    for i, item in enumerate(make_shapes(split, size, seed, image_size=image_size)):
        images.append(item.image)
        captions.extend(item.captions)
        owner.extend([i] * len(item.captions))
    return EvalCorpus(images, captions, np.array(owner))


def manifest_corpus(
    path: str | Path, *, image_root: str | Path | None = None, split: str | None = None
) -> EvalCorpus:
    """Every captioned image of a manifest; bad items are an error (evaluation needs clean data)."""
    from search_backend.data.images import load_image
    from search_backend.data.manifest import ManifestError, group_by_image, read_manifest

    result = read_manifest(path, image_root=image_root, split=split, validate_images=True)
    if result.problems:
        listed = "; ".join(f"{p.item}: {p.reason}" for p in result.problems[:5])
        more = f" (and {len(result.problems) - 5} more)" if len(result.problems) > 5 else ""
        raise ManifestError(str(path), f"{len(result.problems)} bad item(s): {listed}{more}")
    images, captions, owner = [], [], []
    for i, records in enumerate(group_by_image(result.records).values()):
        first = records[0]
        if first.image is None:
            continue
        images.append(load_image(first.image))
        for rec in records:
            if rec.caption is not None:
                captions.append(rec.caption)
                owner.append(i)
    if not captions:
        raise ManifestError(str(path), "no captions to evaluate with")
    return EvalCorpus(images, captions, np.array(owner))
