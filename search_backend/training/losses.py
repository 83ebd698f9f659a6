"""Losses of the four training set-ups.

Bi-encoder: ``infonce`` (default) is a symmetric in-batch cross-entropy over cosine similarities
times a learned scale (initialised at 20, the paper's NT-Xent scale, clamped to [1, 100]). Every
in-batch negative contributes, weighted by its softmax probability, so hard negatives (our batches
always hold distractor pairs) dominate without the instability of using only the single hardest
one. ``vsepp`` is the paper's VSE++ hardest-negative triplet loss (margin 0.1), kept for
comparison: with a vision side trained from scratch it gets a gradient from one negative per row and
learns markedly slower in our runs.

Cross-encoder: binary cross-entropy on relevance logits (positives 1, negatives 0), which equals the
paper's 2-class cross-entropy with one logit tied to zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from search_backend.config import check_choice

if TYPE_CHECKING:
    import torch

__all__ = [
    "BI_LOSSES",
    "CE_LOSSES",
    "bi_loss",
    "ce_loss",
    "infonce_loss",
    "listwise_loss",
    "matching_loss",
    "ranking_loss",
    "vsepp_loss",
]

BI_LOSSES = ("infonce", "vsepp")
CE_LOSSES = ("bce", "rank", "listwise")


def infonce_loss(text: torch.Tensor, image: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; row i of ``text`` matches row i of ``image`` (both L2-normalised)."""
    import torch
    import torch.nn.functional as F

    scale = log_scale.exp().clamp(1.0, 100.0)
    logits = scale * text @ image.T
    target = torch.arange(text.shape[0], device=text.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def vsepp_loss(text: torch.Tensor, image: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """VSE++ (Faghri et al.): hinge on the hardest in-batch negative, both directions."""
    import torch

    sim = text @ image.T
    pos = sim.diag()
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    neg = sim.masked_fill(eye, float("-inf"))
    t2i = (margin + neg.max(dim=1).values - pos).clamp(min=0)
    i2t = (margin + neg.max(dim=0).values - pos).clamp(min=0)
    return (t2i + i2t).mean()


def bi_loss(
    name: str, text: torch.Tensor, image: torch.Tensor, log_scale: torch.Tensor, margin: float = 0.1
) -> torch.Tensor:
    if check_choice("bi-encoder loss", name, BI_LOSSES) == "infonce":
        return infonce_loss(text, image, log_scale)
    return vsepp_loss(text, image, margin)


def matching_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    logits = torch.cat([pos_logits, neg_logits])
    labels = torch.cat([torch.ones_like(pos_logits), torch.zeros_like(neg_logits)])
    return F.binary_cross_entropy_with_logits(logits, labels)


def ranking_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """Pairwise logistic loss: row i's positive should outscore its own negative (same query).

    Reranking only orders one query's candidates, so this asks for exactly that, where
    ``matching_loss`` also asks every score to be calibrated against every other row's.
    """
    import torch.nn.functional as F

    return F.softplus(neg_logits - pos_logits).mean()


def ce_loss(name: str, pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    if check_choice("cross-encoder loss", name, CE_LOSSES) == "bce":
        return matching_loss(pos_logits, neg_logits)
    return ranking_loss(pos_logits, neg_logits)


def listwise_loss(logits: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each row's candidates, the positive in column 0 (as reranking
    one query's top-k asks: the right hit above all the others at once)."""
    return cross_loss_share("listwise", logits, logits.shape[0])


def bi_loss_share(
    name: str,
    text: torch.Tensor,
    image: torch.Tensor,
    log_scale: torch.Tensor,
    margin: float,
    rows: slice,
    n: int,
) -> torch.Tensor:
    """The part of the batch's bi-encoder loss ``name`` that ``rows`` own (their captions against
    every image, their images against every caption); the parts of all rows sum to
    :func:`bi_loss` over the whole batch of ``n`` rows (what DDP ranks add up)."""
    import torch
    import torch.nn.functional as F

    check_choice("bi-encoder loss", name, BI_LOSSES)
    own = torch.arange(n, device=text.device)[rows]
    if name == "infonce":
        logits = log_scale.exp().clamp(1.0, 100.0) * text @ image.T
        t2i = F.cross_entropy(logits[own], own, reduction="sum")
        i2t = F.cross_entropy(logits.T[own], own, reduction="sum")
        return 0.5 * (t2i + i2t) / n
    sim = text @ image.T
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    neg = sim.masked_fill(eye, float("-inf"))
    pos = sim.diag()
    t2i = (margin + neg[own].max(dim=1).values - pos[own]).clamp(min=0)
    i2t = (margin + neg.T[own].max(dim=1).values - pos[own]).clamp(min=0)
    return (t2i + i2t).sum() / n


def cross_loss_share(name: str, logits: torch.Tensor, total_rows: int) -> torch.Tensor:
    """The cross-encoder loss ``name`` over (rows, 1 + K) logits (column 0 the positives) as a share
    of a loss averaged over ``total_rows`` rows (equal to it when these are all the rows)."""
    import torch
    import torch.nn.functional as F

    check_choice("cross-encoder loss", name, CE_LOSSES)
    k = logits.shape[1] - 1
    if name == "listwise":
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target, reduction="sum") / total_rows
    pos, neg = logits[:, :1], logits[:, 1:]
    if name == "rank":
        return F.softplus(neg - pos).sum() / (total_rows * k)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / (total_rows * (k + 1))
