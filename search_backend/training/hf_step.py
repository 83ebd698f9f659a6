"""One fine-tuning step of a Hugging Face checkpoint: losses, mined negatives, chunks, DDP shares.

Losses (per global batch of ``B`` rows, row ``i`` a positive caption-image pair):

* bi-encoder (``be``, and ITC of ``joint``): symmetric InfoNCE over the cosines times the
  checkpoint's own learned scale (``bi_loss=vsepp``: the paper's hinge), or SigLIP's pairwise
  sigmoid loss (``sigmoid_loss``) with the checkpoint's scale and bias;
* matching (``ce``, and ITM of ``joint``): BLIP's 2-class cross-entropy over ``3B`` pairs: each
  positive, its caption with a negative image and its image with a negative caption. Negatives are
  mined (``hard_rate``, of which ``hard_other_group_rate`` outside the row's distractor group) by
  the bi-encoder's in-batch similarities: a ``miner`` model, else the checkpoint's own ITC head
  (for ``joint`` the head being trained), or drawn at random.

Chunks (``grad_accum = K``): the rows run in ``K`` chunks, each forward and backward on its own,
so activations are held for one chunk at a time. The whole batch's loss and gradient are kept
(as open_clip's ``accum_freq``): a first pass without gradients embeds every row; each chunk then
recomputes its own rows with gradients, put in place of their cached embeddings, so contrastive
negatives come from the whole batch. A chunk's matching pairs recompute the vision states of the
negative images they read, so their gradient reaches those images' vision pass too. The learned
scale (and bias) take their gradient once, from the cached embeddings.

DDP: every rank holds the global batch's captions and pixels and computes its own rows (its share
of the chunks); the cached embeddings of all ranks are gathered (no gradients needed: each rank
differentiates the global loss with respect to its own rows only), so the sum over ranks of the
gradients is the gradient of one process with the whole batch. The caller sums gradients over
ranks (:func:`search_backend.training.hf.all_reduce_grads`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.training.distributed import Dist, all_reduce_sum, gather_rows
from search_backend.training.losses import bi_loss_share
from search_backend.training.mining import sample_negatives

if TYPE_CHECKING:
    import torch

    from search_backend.model.base import RetrievalModel
    from search_backend.training.config import TrainConfig
    from search_backend.training.hf_model import Trainee

__all__ = ["HFBatch", "hf_autocast", "hf_step", "sigmoid_loss"]

_ALONE = Dist()


@dataclass
class HFBatch:
    """The global batch: every rank's rows (captions, pixels, distractor groups)."""

    captions: list[str]
    uint8: np.ndarray
    """(B, S, S, 3) uint8 images."""
    groups: np.ndarray
    local: slice = field(default_factory=lambda: slice(None))
    """The rows this process computes (all of them outside DDP)."""
    sizes: list[int] | None = None
    """Rows per rank, in rank order (None outside DDP)."""


def hf_autocast(precision: str, device: str) -> contextlib.AbstractContextManager[object]:
    """bfloat16 autocast: on a GPU where it computes bfloat16 (``auto``) or when asked (``bf16``);
    on the CPU as :func:`search_backend.runtime.autocast` decides (``auto``: native bfloat16 only)."""
    import torch

    from search_backend.runtime import autocast, check_precision

    if not device.startswith("cuda"):
        return autocast(precision)
    if check_precision(precision) == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sigmoid_loss(
    text: torch.Tensor, image: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """SigLIP (Zhai et al. 2023): every caption-image pair of the batch a binary decision, summed
    over the pairs and divided by the rows."""
    import torch
    import torch.nn.functional as F

    logits = log_scale.exp().clamp(max=100.0) * text @ image.T + bias
    labels = 2.0 * torch.eye(text.shape[0], device=text.device) - 1.0
    return -F.logsigmoid(labels * logits).sum() / text.shape[0]


def _bi_loss(cfg: TrainConfig, trainee: Trainee, text: Any, image: Any, *, detach_scale: bool) -> Any:
    scale = trainee.log_scale()
    scale = scale.detach() if detach_scale else scale
    if cfg.sigmoid_loss:
        bias = trainee.logit_bias()
        return sigmoid_loss(text, image, scale, bias.detach() if detach_scale else bias)
    return bi_loss_share(cfg.bi_loss, text, image, scale, cfg.margin, slice(None), text.shape[0])


class _Images:
    """Vision states of global images, computed with gradients per chunk (or once, and kept, when
    the vision tower is frozen: nothing then needs its activations)."""

    def __init__(self, trainee: Trainee, pixels: torch.Tensor, precision: str, device: str) -> None:
        self.trainee = trainee
        self.pixels = pixels
        self.precision = precision
        self.device = device
        self.frozen = not any(p.requires_grad for p in trainee.image_state_parameters())
        self.kept: dict[int, Any] = {}

    def states(self, rows: np.ndarray, grad: bool = True) -> Any:
        import torch

        if not len(rows):
            return None
        if self.frozen:
            todo = [int(r) for r in rows if int(r) not in self.kept]
            if todo:
                with torch.no_grad(), hf_autocast(self.precision, self.device):
                    out = self.trainee.image_states(self.pixels[torch.as_tensor(todo, device=self.device)])
                for r, s in zip(todo, out, strict=True):
                    self.kept[r] = s
            return torch.stack([self.kept[int(r)] for r in rows])
        index = torch.as_tensor(rows, device=self.device)
        with contextlib.nullcontext() if grad else torch.no_grad(), hf_autocast(self.precision, self.device):
            return self.trainee.image_states(self.pixels[index])


def hf_step(
    cfg: TrainConfig,
    trainee: Trainee,
    role: str,
    batch: HFBatch,
    rng: np.random.Generator,
    *,
    device: str,
    miner: RetrievalModel | None = None,
    dist: Dist = _ALONE,
) -> tuple[float, dict[str, float]]:
    """Forward and backward of one step (gradients accumulate in the parameters; the caller sums them
    over ranks and steps the optimiser); returns the global loss and its parts for the logs."""
    import torch

    do_bi, do_itm = role in ("be", "joint"), role in ("ce", "joint")
    b = len(batch.captions)
    own = np.arange(b)[batch.local]
    chunks = [c for c in np.array_split(own, min(cfg.grad_accum, max(1, len(own)))) if len(c)]
    ids, mask = trainee.tokenize(batch.captions, device)
    pixels = trainee.pixels(batch.uint8, device)
    images = _Images(trainee, pixels, cfg.precision, device)
    mine_itc = do_itm and miner is None
    logs: dict[str, float] = {}

    def vectors(rows: np.ndarray, grad: bool) -> tuple[Any, Any, Any]:
        """(text vectors, image vectors, image states) of ``rows``; vectors only where a loss or the
        miner reads them; gradients where ``grad`` and a bi-encoder loss is trained."""
        index = torch.as_tensor(rows, device=device)
        states = images.states(rows, grad=grad)
        if not (do_bi or mine_itc):
            return None, None, states
        grads = contextlib.nullcontext() if grad and do_bi else torch.no_grad()
        with grads, hf_autocast(cfg.precision, device):
            t = trainee.text_vectors(ids[index], mask[index])
            v = trainee.image_vectors(states if do_bi else states.detach())
        return t.float(), v.float(), states

    # pass 1: every own row's embeddings (with gradients when there is a single chunk, kept for it;
    # of several chunks only the detached vectors are kept)
    single = len(chunks) == 1
    first = [vectors(c, grad=True) if single else (*vectors(c, grad=False)[:2], None) for c in chunks]
    t_all = v_all = None
    if do_bi or mine_itc:
        empty = torch.zeros(0, trainee.embedding_dim, device=device)
        t_own = torch.cat([f[0].detach() for f in first]) if first else empty
        v_own = torch.cat([f[1].detach() for f in first]) if first else empty
        t_all, v_all = gather_rows(t_own, dist, batch.sizes), gather_rows(v_own, dist, batch.sizes)
    if do_bi:
        assert t_all is not None and v_all is not None
        scale_loss = _bi_loss(cfg, trainee, t_all, v_all, detach_scale=False)
        (scale_loss / dist.world).backward()  # the scale's (and bias's) gradient, once
        logs["bi"] = float(scale_loss.item())

    neg_img = neg_txt = None
    if do_itm:
        sim: np.ndarray | None = None
        if miner is not None:
            from PIL import Image

            pil = [Image.fromarray(im) for im in batch.uint8]
            sim = miner.encode_texts(batch.captions) @ miner.encode_images(pil).T
        elif t_all is not None and v_all is not None:
            sim = (t_all @ v_all.T).cpu().numpy()
        if cfg.hard_rate > 0 and sim is None:
            raise ValueError("mining hard negatives needs a bi-encoder: a --miner or an ITC head")
        neg_img, neg_txt = sample_negatives(sim, batch.groups, rng, cfg.hard_rate, cfg.hard_other_group_rate)

    itm_total = 0.0
    for rows in chunks:
        if single:
            t, v, states = first[0]
        elif do_bi:
            t, v, states = vectors(rows, grad=True)
        else:
            t, v, states = None, None, images.states(rows)
        loss = torch.zeros((), device=device)
        if do_bi:
            assert t_all is not None and v_all is not None
            index = torch.as_tensor(rows, device=device)
            t_sub, v_sub = t_all.index_copy(0, index, t), v_all.index_copy(0, index, v)
            loss = loss + _bi_loss(cfg, trainee, t_sub, v_sub, detach_scale=True)
        if do_itm:
            assert neg_img is not None and neg_txt is not None
            share = _itm_share(trainee, rows, states, images, ids, mask, neg_img, neg_txt, b, cfg, device)
            itm_total += float(share.item())
            loss = loss + cfg.ce_weight * share
        if loss.requires_grad:
            loss.backward()
    if do_itm:
        logs["ce"] = all_reduce_sum(itm_total, dist)
    total = logs.get("bi", 0.0) + cfg.ce_weight * logs.get("ce", 0.0)
    return total, logs


def _itm_share(
    trainee: Trainee,
    rows: np.ndarray,
    states: Any,
    images: _Images,
    ids: torch.Tensor,
    mask: torch.Tensor,
    neg_img: np.ndarray,
    neg_txt: np.ndarray,
    b: int,
    cfg: TrainConfig,
    device: str,
) -> torch.Tensor:
    """The matching loss of ``rows``' pairs (positive, wrong image, wrong caption) as a share of the
    loss over the batch's ``3b`` pairs."""
    import torch
    import torch.nn.functional as F

    extra = np.setdiff1d(np.unique(neg_img[rows]), rows)  # negative images outside these rows
    table = states if not len(extra) else torch.cat([states, images.states(extra)])
    where = {int(r): i for i, r in enumerate([*rows.tolist(), *extra.tolist()])}
    own = [where[int(r)] for r in rows]
    text_rows = np.concatenate([rows, rows, neg_txt[rows]])
    image_pos = own + [where[int(r)] for r in neg_img[rows]] + own
    text_index = torch.as_tensor(text_rows, device=device)
    with hf_autocast(cfg.precision, device):
        logits = trainee.itm_logits(
            ids[text_index], mask[text_index], table[torch.as_tensor(image_pos, device=device)]
        )
    labels = torch.zeros(len(text_rows), dtype=torch.long, device=device)
    labels[: len(rows)] = 1
    return F.cross_entropy(logits.float(), labels, reduction="sum") / (3 * b)
