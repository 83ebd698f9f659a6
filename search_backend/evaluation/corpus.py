"""Evaluation corpora: the ``shapes`` dataset or any JSONL / Karpathy manifest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from search_backend.evaluation.evaluate import EvalCorpus

__all__ = ["manifest_corpus", "model_image_size", "shapes_corpus"]

SHAPES_IMAGE_SIZE = 64
"""Side of rendered shapes images for a model whose config names none."""


def model_image_size(model: object) -> int:
    """The side at which shapes images are rendered for ``model``: its ``config.image_size``, else 64."""
    return int(getattr(getattr(model, "config", None), "image_size", SHAPES_IMAGE_SIZE))


def shapes_corpus(
    split: str, size: int, seed: int, *, image_size: int = SHAPES_IMAGE_SIZE, lang: str | Sequence[str] = "en"
) -> EvalCorpus:
    """The shapes ``split`` with its captions in ``lang`` (same scenes and images in every language);
    several languages (``("en", "de")``, ``"en,de"``, ``"all"``): every image has all their captions."""
    from search_backend.data.grammars import parse_langs
    from search_backend.data.shapes import make_shapes

    langs = parse_langs(lang)
    images, captions, owner = [], [], []
    for i, item in enumerate(make_shapes(split, size, seed, image_size=image_size, langs=langs)):
        images.append(item.image)
        captions.extend(item.captions)
        owner.extend([i] * len(item.captions))
    return EvalCorpus(images, captions, np.array(owner))


def manifest_corpus(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    split: str | None = None,
    lang: str | None = None,
) -> EvalCorpus:
    """Every captioned image of a manifest; bad items are an error (evaluation needs clean data).

    ``lang``: only the captions whose line says ``"lang": <lang>`` (images without one are left out).
    """
    from search_backend.data.images import ImageError, load_image
    from search_backend.data.manifest import ManifestError, group_by_image, read_manifest

    # existence is checked by the reader; each image is decoded exactly once, here
    result = read_manifest(path, image_root=image_root, split=split)
    problems = [f"{p.item}: {p.reason}" for p in result.problems]
    images, captions, owner = [], [], []
    records_in = result.records
    if lang is not None:
        records_in = [r for r in records_in if r.lang == lang]
        if not records_in:
            found = sorted({r.lang for r in result.records if r.lang})
            raise ManifestError(
                str(path), f"no captions in language {lang!r} (languages found: {', '.join(found) or 'none'})"
            )
    for records in group_by_image(records_in).values():
        first = records[0]
        if first.image is None:
            continue
        try:
            images.append(load_image(first.image))
        except ImageError as exc:
            problems.append(str(exc))
            continue
        for rec in records:
            if rec.caption is not None:
                captions.append(rec.caption)
                owner.append(len(images) - 1)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ManifestError(str(path), f"{len(problems)} bad item(s): {'; '.join(problems[:5])}{more}")
    if not captions:
        raise ManifestError(str(path), "no captions to evaluate with")
    return EvalCorpus(images, captions, np.array(owner))
