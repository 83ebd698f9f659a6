"""One training step's losses: the bi-encoder's contrastive loss and the cross-encoder's matching loss.

Everything a step reads is computed once per batch and shared: each image's tokens (the image
encoder runs once per distinct image), each caption's and image's twin-mode states (the
bi-encoder loss and the miner read their pooled vectors; late fusion, ``cross_layers > 0``, feeds
their lower layers' states to the fusion layers of every pair they appear in). The cross-encoder
then scores ``rows x (1 + K)`` candidate pairs, given as indices into a text table (the batch's
captions, then any extra negative captions) and an image table (the batch's images, then any
extra negative images): column 0 is each row's positive, the other ``K`` columns its negatives.

Under DDP (:mod:`search_backend.training.distributed`) each rank computes the states of its own
rows and gathers everyone's (with gradients), so in-batch negatives and mined negatives come from
the global batch; each rank scores the candidates of its own rows, and every loss returned is this
rank's share of the global loss (the shares sum to what one process with the whole batch gets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.runtime import autocast
from search_backend.training.distributed import Dist, all_reduce_sum, gather_rows
from search_backend.training.losses import bi_loss_share, cross_loss_share
from search_backend.training.pairs import CrossPairs, cross_lists, cross_pairs, subset_pairs

if TYPE_CHECKING:
    import torch

    from search_backend.model.base import RetrievalModel
    from search_backend.model.joint import JointModel
    from search_backend.training.trainer import TrainConfig

__all__ = ["Candidates", "StepBatch", "step_losses"]

_ALONE = Dist()


@dataclass
class StepBatch:
    """A batch as the step reads it: which training items, one caption each, their pixels."""

    idx: np.ndarray
    captions: list[str]
    pixels: torch.Tensor
    """(B, 3, S, S) prepared pixels of every row (all ranks')."""
    uint8: np.ndarray
    """The same images as (B, S, S, 3) uint8 (what a separate miner model encodes)."""
    local: slice = field(default_factory=lambda: slice(None))
    """The rows this process computes (all of them outside DDP)."""
    sizes: list[int] | None = None
    """Rows per rank, in rank order (None outside DDP)."""


@dataclass
class Candidates:
    """The cross-encoder's pairs: ``text[r, j]`` with ``image[r, j]``; column 0 is row r's positive."""

    rows: np.ndarray
    text: np.ndarray
    image: np.ndarray
    extra_texts: list[str]
    """Text-table entries after the batch's captions (index B, B+1, ...)."""
    extra_pixels: torch.Tensor | None
    """Image-table entries after the batch's images."""


def _from_pairs(pairs: CrossPairs, batch: int) -> Candidates:
    """One negative per row (:func:`cross_pairs`) as candidate indices."""
    import torch

    extra_texts: list[str] = []
    neg_text = pairs.neg_caption_rows.copy()
    for i in np.flatnonzero(neg_text < 0):
        neg_text[i] = batch + len(extra_texts)
        extra_texts.append(pairs.neg_captions[int(i)])
    neg_image = pairs.neg_rows.copy()
    custom = np.flatnonzero(pairs.neg_custom)
    neg_image[custom] = batch + np.arange(len(custom))
    extra = pairs.neg_pixels[torch.from_numpy(custom)] if len(custom) else None
    text = np.stack([pairs.rows, neg_text], axis=1)
    image = np.stack([pairs.rows, neg_image], axis=1)
    return Candidates(pairs.rows, text, image, extra_texts, extra)


def _text_side(net: Any, ids: torch.Tensor, mask: torch.Tensor, *, vec: bool, grad: bool) -> tuple[Any, Any]:
    """(lower states for late fusion or None, pooled twin vectors or None) of a text table."""
    low, top = _states(net, lambda final: net.text_states(ids, mask, final=final), mask, vec=vec, grad=grad)
    return low, (net.pool_text(top, mask) if vec else None)


def _image_side(net: Any, tokens: torch.Tensor, *, vec: bool, grad: bool) -> tuple[Any, Any]:
    """As :func:`_text_side`, for an image table given as image tokens."""
    import torch

    ones = torch.ones(tokens.shape[0], tokens.shape[1] + 1, dtype=torch.long, device=tokens.device)
    low, top = _states(net, lambda final: net.image_states(tokens, final=final), ones, vec=vec, grad=grad)
    return low, (net.pool_image(top) if vec else None)


def _states(net: Any, run: Any, mask: torch.Tensor, *, vec: bool, grad: bool) -> tuple[Any, Any]:
    """``run(final)`` -> (lower, top) with gradients where they are used: the lower states always
    (late fusion trains through them), the top only when ``grad`` (the bi-encoder loss reads it)."""
    import contextlib

    import torch

    late = bool(net.cfg.cross_layers)
    if not vec:
        return (run(False)[0] if late else None), None
    if grad or not late:
        with contextlib.nullcontext() if grad else torch.no_grad():
            low, top = run(True)
        return (low if late else None), top
    low = run(False)[0]
    with torch.no_grad():
        top = net.top_states(low, mask)
    return low, top


def step_losses(
    cfg: TrainConfig,
    model: JointModel,
    batch: StepBatch,
    rng: np.random.Generator,
    pool: Any,
    *,
    miner: RetrievalModel | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    ground_head: Any = None,
    dist: Dist = _ALONE,
) -> tuple[torch.Tensor, dict[str, float]]:
    """This process's share of the step's loss (to back-propagate) and the global losses (for logs)."""
    import torch

    net = model.net
    do_bi, do_ce = cfg.setup in ("be", "joint"), cfg.setup in ("ce", "joint")
    residual = net.cfg.cross_readout == "residual"
    late = bool(net.cfg.cross_layers)
    b = len(batch.captions)
    loc = batch.local
    device = batch.pixels.device
    loss = torch.zeros((), device=device)
    logs: dict[str, float] = {}
    tok = model.tokenize(batch.captions)
    ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)

    def gather(x: Any) -> Any:
        return None if x is None else gather_rows(x, dist, batch.sizes)

    with autocast(cfg.precision):
        tokens = net.image_tokens(batch.pixels[loc])  # once per image, shared by every pass below
        vec = do_bi or residual
        # The residual readout's twin term: joint training's bi loss trains it, and the cross loss
        # sees it as a constant; a cross-encoder trained alone (``ce``, sep's cross half) trains it
        # through its own loss, or the shared layers would drift under it unseen.
        alone = residual and not do_bi
        t_low, t_vec = _text_side(net, ids[loc], mask[loc], vec=vec, grad=do_bi or alone)
        i_low, i_vec = _image_side(net, tokens, vec=vec, grad=do_bi or alone)
        t_low, t_vec, i_low, i_vec = gather(t_low), gather(t_vec), gather(i_low), gather(i_vec)
        tokens = gather(tokens) if not late else tokens
    sim: np.ndarray | None = None
    if do_bi:
        lb = bi_loss_share(cfg.bi_loss, t_vec, i_vec, net.logit_scale, cfg.margin, loc, b)
        loss = loss + lb
        logs["bi"] = all_reduce_sum(lb.item(), dist)
        sim = (t_vec @ i_vec.T).detach().float().cpu().numpy()
    if not do_ce:
        return loss, logs
    if miner is not None:
        images: Any = batch.uint8  # joint models take uint8 arrays
        sim = miner.encode_texts(batch.captions) @ miner.encode_images(images).T
    elif sim is None and residual:
        sim = (t_vec @ i_vec.T).detach().float().cpu().numpy()
    mine = np.arange(b)[loc]
    if cfg.ce_negatives > 1:
        rows, text, image = cross_lists(cfg, rng, pool.groups[batch.idx], sim)
        n_rows = len(rows)
        keep = np.isin(rows, mine)
        cand = Candidates(rows[keep], text[keep], image[keep], [], None)
    else:
        pairs = cross_pairs(cfg, rng, pool, batch.idx, batch.captions, batch.pixels, sim, neighbours)
        n_rows = len(pairs.rows)
        cand = _from_pairs(subset_pairs(pairs, np.flatnonzero(np.isin(pairs.rows, mine))), b)
    flat_text = torch.from_numpy(cand.text.T.reshape(-1))  # columns first: positives, then negatives
    flat_image = torch.from_numpy(cand.image.T.reshape(-1))
    with autocast(cfg.precision):
        if cand.extra_texts:
            ids, mask, t_low, t_vec = _extend_texts(net, model, cand.extra_texts, ids, mask, t_low, t_vec)
        if cand.extra_pixels is not None:
            extra_tokens = net.image_tokens(cand.extra_pixels)
            e_low, e_vec = _image_side(net, extra_tokens, vec=residual, grad=alone)
            if late:
                i_low = _append_rows(i_low, e_low, b)
            else:
                tokens = _append_rows(tokens, extra_tokens, b)
            if residual:
                i_vec = _append_rows(i_vec, e_vec.to(i_vec.dtype), b)
        relation = attn = None
        if late:
            words = net.relation_words(ids, mask)
            hidden, relation, attn = net.fuse_parts(
                t_low[flat_text],
                mask[flat_text],
                i_low[flat_image],
                attention=cfg.attend_weight > 0,
                words=None if words is None else words[flat_text],
            )
        else:
            hidden = net.cross_hidden(ids[flat_text], mask[flat_text], tokens=tokens[flat_image])
        twin = (t_vec[flat_text] * i_vec[flat_image]).sum(-1) if residual else None
        if twin is not None and not alone:
            twin = twin.detach()
        cls, second = net.cross_parts(hidden, mask[flat_text], twin, relation)
    shape = (cand.text.shape[1], len(cand.rows))
    lc = cross_loss_share(cfg.ce_loss, (cls + second).reshape(shape).T, n_rows)
    loss = loss + cfg.ce_weight * lc
    logs["ce"] = all_reduce_sum(lc.item(), dist)
    if cfg.cls_weight > 0:
        lcls = cross_loss_share(cfg.ce_loss, cls.reshape(shape).T, n_rows)
        loss = loss + cfg.cls_weight * lcls
        logs["cls"] = all_reduce_sum(lcls.item(), dist)
    if ground_head is not None or cfg.attend_weight > 0:
        from search_backend.training.grounding import attention_loss, grounding_loss, grounding_targets

        n_pos = len(cand.rows)
        targets = grounding_targets(
            model.tokenizer,
            [batch.captions[int(r)] for r in cand.rows],
            [pool.scenes[int(batch.idx[r])] for r in cand.rows],
            model.config.grid,
            model.config.max_text_len,
        )
        share = n_pos / max(1, n_rows)
        if ground_head is not None:
            lg = grounding_loss(ground_head, hidden[:n_pos], targets) * share
            loss = loss + cfg.ground_weight * lg
            logs["ground"] = all_reduce_sum(lg.item(), dist)
        if cfg.attend_weight > 0:
            if attn is None:
                raise ValueError(
                    "attend_weight supervises the cross-attention blocks: model.cross_attention > 0"
                )
            la = attention_loss(attn[:n_pos], targets, model.config.grid) * share
            loss = loss + cfg.attend_weight * la
            logs["attend"] = all_reduce_sum(la.item(), dist)
    return loss, logs


def _append_rows(table: torch.Tensor, extra: torch.Tensor, batch: int) -> torch.Tensor:
    """``table``'s first ``batch`` rows, then ``extra`` (extra entries are indexed from ``batch``)."""
    import torch

    return torch.cat([table[:batch], extra.to(table.dtype)])


def _extend_texts(
    net: Any,
    model: JointModel,
    extra: list[str],
    ids: torch.Tensor,
    mask: torch.Tensor,
    t_low: Any,
    t_vec: Any,
) -> tuple[torch.Tensor, torch.Tensor, Any, Any]:
    """The text table with ``extra`` captions appended (tokens, lower states, vectors as constants)."""
    import torch
    import torch.nn.functional as F

    etok = model.tokenize(extra)
    e_ids, e_mask = etok["input_ids"].to(ids.device), etok["attention_mask"].to(ids.device)
    width = max(ids.shape[1], e_ids.shape[1])

    def pad(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, width - x.shape[1]))

    e_low, e_vec = _text_side(net, e_ids, e_mask, vec=t_vec is not None, grad=False)
    if t_low is not None:
        t_low = torch.cat(
            [F.pad(t_low, (0, 0, 0, width - t_low.shape[1])), F.pad(e_low, (0, 0, 0, width - e_low.shape[1]))]
        )
    if t_vec is not None:
        t_vec = torch.cat([t_vec, e_vec.to(t_vec.dtype)])
    return torch.cat([pad(ids), pad(e_ids)]), torch.cat([pad(mask), pad(e_mask)]), t_low, t_vec
