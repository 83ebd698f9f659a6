"""Grounding: an auxiliary cross-encoder loss that points caption words at their objects.

In the cross pass of a positive pair, every word of an object mention ("small red circle") is asked
where that object lies in the image: the patch row and the patch column of its centre, two
classifications over the grid from the word's hidden state. The word can only answer by attending
to the right patches, so the loss teaches exactly what the matching loss learns slowly from a few
twin negatives: which patches an attribute phrase binds to and where they are. Spatial relations
then reduce to comparing positions that the mentioned words already carry.

The targets come from the ``shapes`` scene behind each caption (``Scene.objects`` centres); the
head is a training-only linear layer (kept in checkpoints, not in the saved model). Captions whose
mentions cannot be resolved to exactly one object contribute nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from search_backend.data.shapes import Scene

__all__ = [
    "GroundingTargets",
    "attention_loss",
    "build_grounding_head",
    "grounding_loss",
    "grounding_targets",
    "mentions",
]

_WORD = re.compile(r"\w+")


def mentions(caption: str, scene: Scene) -> list[tuple[int, int, int]]:
    """Object mentions in ``caption``: (first char, end char, index of the object in ``scene``).

    A mention is a run of size, colour and shape words with only spaces between them (any
    language with a grammar, in its own word order and inflection: ``small red circle``, ``petit
    cercle rouge``, ``kleinen roten Kreis``), holding one colour, one shape and at most one size;
    one that fits no object, or several, is left out.
    """
    from search_backend.data.grammars import word_meanings

    meanings = word_meanings()
    runs: list[list[re.Match[str]]] = []
    for m in _WORD.finditer(caption):
        if m.group().lower() not in meanings:
            continue
        if runs and caption[runs[-1][-1].end() : m.start()].isspace():
            runs[-1].append(m)
        else:
            runs.append([m])
    found: list[tuple[int, int, int]] = []
    for run in runs:
        slots: dict[str, list[str]] = {}
        for m in run:
            slot, value = meanings[m.group().lower()]
            slots.setdefault(slot, []).append(value)
        if (
            len(slots.get("colour", ())) != 1
            or len(slots.get("shape", ())) != 1
            or len(slots.get("size", ())) > 1
        ):
            continue
        size = slots.get("size", [None])[0]
        fits = [
            k
            for k, o in enumerate(scene.objects)
            if o.colour == slots["colour"][0] and o.shape == slots["shape"][0] and size in (None, o.size)
        ]
        if len(fits) == 1:
            found.append((run[0].start(), run[-1].end(), fits[0]))
    return found


@dataclass
class GroundingTargets:
    """Flat lists over every grounded token of a batch of captions."""

    rows: torch.Tensor
    """Which caption (row of the batch) each token belongs to."""
    tokens: torch.Tensor
    """The token's position in that caption's tokenisation."""
    patch_row: torch.Tensor
    patch_col: torch.Tensor

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def grounding_targets(
    tokenizer: Any, captions: list[str], scenes: list[Scene], grid: int, max_len: int
) -> GroundingTargets:
    """The grid cell of the object behind every token of every mention in ``captions``.

    ``tokenizer`` and ``max_len`` must be those the cross pass tokenises with (right padding, so
    token positions do not depend on the batch).
    """
    import torch

    enc = tokenizer(captions, truncation=True, max_length=max_len)
    out: list[tuple[int, int, int, int]] = []
    for b, (caption, scene) in enumerate(zip(captions, scenes, strict=True)):
        for start, end, k in mentions(caption, scene):
            obj = scene.objects[k]
            cell = (min(int(obj.cy * grid), grid - 1), min(int(obj.cx * grid), grid - 1))
            tokens = {enc.char_to_token(b, c) for c in range(start, end) if not caption[c].isspace()}
            out.extend((b, t, *cell) for t in sorted(t for t in tokens if t is not None))
    cols = list(zip(*out, strict=True)) if out else [(), (), (), ()]
    rows, toks, prow, pcol = (torch.tensor(c, dtype=torch.long) for c in cols)
    return GroundingTargets(rows, toks, prow, pcol)


def build_grounding_head(hidden: int, grid: int) -> torch.nn.Module:
    """Token state -> ``grid`` row logits followed by ``grid`` column logits."""
    from torch import nn

    return nn.Linear(hidden, 2 * grid)


def grounding_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: GroundingTargets) -> torch.Tensor:
    """Mean of the row and column cross-entropies over the grounded tokens (0 if there are none).

    ``hidden``: the cross pass's states (batch, tokens, width) for the captions of ``targets``.
    """
    import torch
    from torch.nn.functional import cross_entropy

    if len(targets) == 0:
        return hidden.sum() * 0.0
    with torch.autocast("cpu", enabled=False):
        logits = head(hidden[targets.rows, targets.tokens].float())
    grid = logits.shape[-1] // 2
    rows = cross_entropy(logits[:, :grid], targets.patch_row)
    return (rows + cross_entropy(logits[:, grid:], targets.patch_col)) / 2


def attention_loss(attn: torch.Tensor, targets: GroundingTargets, grid: int) -> torch.Tensor:
    """Mean over the grounded tokens of −log of the attention their object's cell gets.

    ``attn``: a cross-attention block's head-averaged weights (batch, tokens, image tokens) for the
    captions of ``targets``; its last ``grid²`` image tokens are the patches (row-major), and their
    weights are renormalised among themselves (an image CLS before them takes its share).
    """
    import torch

    if len(targets) == 0:
        return attn.sum() * 0.0
    patches = grid * grid
    w = attn[targets.rows, targets.tokens][:, -patches:].float()
    w = w / w.sum(-1, keepdim=True).clamp(min=1e-6)
    cell = targets.patch_row * grid + targets.patch_col
    return -torch.log(w.gather(1, cell[:, None]).clamp(min=1e-6)).mean()
