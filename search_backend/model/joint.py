"""The joint retrieve-and-rerank model: one transformer, two modes.

* twin (bi-encoder) mode: text alone or image alone -> mean-pooled -> projection -> L2-normalised;
* cross mode: ``[CLS] text [SEP] image-patches`` -> CLS state -> relevance head -> logit
  (``cross_readout="cls+pair"`` adds a learned multiple of the cosine between the cross pass's
  pooled text and pooled patch states, through the twin-mode projections).

Images enter the text transformer as ``inputs_embeds``: a conv patch embedder gives one vector per
patch, plus learned row/column (2-D position) embeddings and a modality-type embedding.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search_backend.config import Settings, check_choice, get_settings
from search_backend.model.base import ModelLoadError, read_model_config, write_model_config
from search_backend.model.image import IMAGE_ENCODERS, build_image_encoder, images_to_tensor
from search_backend.model.states import ImageStates
from search_backend.runtime import autocast, resolve_precision

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "CROSS_READOUTS",
    "GROWABLE",
    "GROWN_WITH",
    "POSITION_INITS",
    "JointConfig",
    "JointModel",
    "build_joint_model",
]

CROSS_READOUTS = ("cls", "cls+pair", "residual")
POSITION_INITS = ("random", "sincos")

GROWABLE = {"cross_attention": "cross_blocks.", "relation_head": "relation."}
"""The JointConfig fields that can be switched on for a trained model (``JointModel.load(grow=)``)
and the parameter-name prefix of the module each adds; that module starts as it would in a new
model, every other weight is the trained one."""
GROWN_WITH = {"relation_layer": "relation_head"}
"""Settings of a growable module: free to change while the model lacks that module (they do
nothing until it is added), fixed once it is there."""

_WEIGHTS = "model.safetensors"
_BACKBONE_DIR = "backbone"
_TYPE = "joint"


@dataclass
class JointConfig:
    image_size: int = 64
    patch_size: int = 16
    embed_dim: int = 384
    max_text_len: int = 48
    position_init: str = "random"
    """How the learned 2-D patch positions start: ``random`` (Gaussian rows and columns) or
    ``sincos`` (rows in the first half of the hidden units, columns in the second, as sines and
    cosines of the coordinate: order and distance are readable from the start, so spatial
    relations need not be discovered from scratch). Only the initialisation differs."""
    image_encoder: str = "patches"
    """``patches`` (a conv stem learnt from scratch) or ``efficientnet-lite0`` (ImageNet-pretrained
    CNN features, one grid cell per patch; see :func:`search_backend.model.image.build_image_encoder`)."""
    encoder_resolution: int = 0
    """Side the image is resized to before a CNN encoder (0: ``image_size``); the CNN's feature
    stride is ``encoder_resolution / grid``. Ignored by ``patches``."""
    cross_readout: str = "cls"
    """How cross mode turns its hidden states into a logit: ``cls`` (relevance head on the CLS
    state) or ``cls+pair`` (that, plus a learned multiple of the cosine between the cross pass's
    mean-pooled text states and mean-pooled patch states, projected by the twin-mode projections:
    the matching that the bi-encoder loss teaches is then readable by the cross-encoder too), or
    ``residual`` (the pair's own bi-encoder logit, the twin-mode cosine times the bi-encoder's
    scale, plus the CLS head's correction: at initialisation the cross-encoder ranks exactly as
    the bi-encoder does, and joint training, which sees the twin term as a constant (the
    bi-encoder loss trains it), teaches the cross-attention path only what the bi-encoder gets
    wrong; a cross-encoder trained alone, ``ce`` or sep's cross half, trains the twin term through
    its own loss)."""
    cross_layers: int = 0
    """How many of the transformer's top layers cross mode runs on text and image together: 0 (every
    layer: early fusion) or n (late fusion: text and image pass the lower layers alone, exactly as
    in twin mode, then the last n layers attend across both). Late fusion shares the lower layers'
    work with twin mode and across pairs, so a cross pass costs about n / L of an early-fusion one."""
    cross_attention: int = 0
    """Late fusion only: how many freshly initialised cross-attention blocks (the text's lower
    states as queries, the image's as keys and values, then an MLP; pre-norm, residual) run on the
    text before the fusion layers, learning at the new modules' rate. The pretrained layers'
    attention has only ever matched words with words; these blocks start from nothing and only
    have to learn which patches a word is about (as the cross-attention layers of ALBEF and BLIP
    do). Twin mode never passes them, so the bi-encoder is unchanged. 0: none."""
    relation_head: int = 0
    """With ``cross_attention``: width of a relation-network readout (0: none). Every pair of
    caption tokens (i, j) is scored from their states as they enter the cross-attention blocks
    (the caption alone) and from the difference of where in the image each attends (the
    attention-weighted patch row and column, from the last block); an attention over the pairs
    pools the pair scores into a term added to the CLS head's. A spatial relation ("left of")
    compares two grounded positions, which the CLS state of the fusion layers was measured to
    lose. Reading the pairs after the blocks instead (where the attended image content has been
    added to each word) was measured not to learn: the head fitted image content, not layout.
    Its output layer starts at zero: the model starts as it would without it."""
    relation_layer: int = -1
    """Which backbone layer's text states the ``relation_head`` reads its word pairs from: -1 (the
    default) the states entering the cross-attention blocks, N the output of the first N layers
    (0: the embeddings). A deep sentence-embedding backbone can blur which word is which: on
    multilingual-e5-small (12 layers, the blocks after layer 10) a fresh head fitted image against
    mirror on 78% of training pairs in 300 steps from layer 10's states, and on 98% from layer 0 or
    4 (README, *Multilingual*). It can change only while the model has no relation head (``xmr
    model derive --set model.relation_layer=4`` gives it to every phase)."""
    trained: list[str] = field(default_factory=list)
    """Which modes were trained ("bi", "cross"); informational, reported by tools."""
    backbone: str = ""
    """Where the backbone was initialised from (provenance only; a saved model is self-contained)."""

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid


def _sincos_grid(grid: int, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column tables (grid, hidden): sines/cosines of the row index in the first half of
    the units, of the column index in the second half, at geometric frequencies; unit RMS over the
    half each table fills."""
    import torch

    half = hidden // 2
    n_freq = max(half // 2, 1)
    freqs = 1.0 / (100.0 ** (torch.arange(n_freq, dtype=torch.float32) / n_freq))
    angles = torch.arange(grid, dtype=torch.float32)[:, None] * freqs[None, :]
    waves = torch.cat([angles.sin(), angles.cos()], dim=1)[:, :half]  # (grid, <= half)
    rows = torch.zeros(grid, hidden)
    cols = torch.zeros(grid, hidden)
    rows[:, : waves.shape[1]] = waves
    cols[:, half : half + waves.shape[1]] = waves
    norm = float(np.sqrt(2.0))  # sin/cos pairs have RMS 1/sqrt(2) over the half they fill
    return rows * norm, cols * norm


def _grown(cfg: JointConfig, grow: dict[str, Any], path: Path) -> tuple[JointConfig, tuple[str, ...]]:
    """``cfg`` with the ``grow`` values (see :meth:`JointModel.load`) and the parameter-name
    prefixes of the modules that they add."""
    known = set(JointConfig.__dataclass_fields__)
    changes: dict[str, Any] = {}
    for key, value in grow.items():
        if key not in known:
            raise ValueError(f"model.{key}: not a JointConfig field")
        current = getattr(cfg, key)
        if value == current:
            continue
        module = GROWN_WITH.get(key)
        if module is not None and not getattr(cfg, module):  # no effect until that module exists
            changes[key] = value
            continue
        if key not in GROWABLE or current:
            addable = " and ".join(GROWABLE)
            raise ValueError(
                f"model.{key}={value!r}: {path} was trained with {key}={current!r}; a trained model keeps "
                f"its settings, only {addable} can be switched on (from 0) for it"
            )
        changes[key] = value
    if not changes:
        return cfg, ()
    return replace(cfg, **changes), tuple(GROWABLE[k] for k in changes if k in GROWABLE)


@functools.cache
def _torch_modules() -> Any:
    """The nn.Module class, defined on first use so that importing this module stays torch-free."""
    import torch
    from torch import nn

    class _CrossBlock(nn.Module):
        """Text queries over image keys and values, then an MLP (pre-norm, residual). The output
        projections start at zero, so at initialisation the block passes the text through."""

        def __init__(self, hidden: int, heads: int) -> None:
            super().__init__()
            self.norm_q = nn.LayerNorm(hidden)
            self.norm_kv = nn.LayerNorm(hidden)
            self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
            self.norm_mlp = nn.LayerNorm(hidden)
            out = nn.Linear(4 * hidden, hidden)
            self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), out)
            for layer in (self.attn.out_proj, out):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

        def forward(
            self, text: torch.Tensor, image: torch.Tensor, *, weights: bool = False
        ) -> tuple[torch.Tensor, torch.Tensor | None]:
            """The text after the block, and (``weights``) each text token's attention over the
            image tokens, averaged over heads (B, T, K)."""
            kv = self.norm_kv(image)
            attended, attn = self.attn(self.norm_q(text), kv, kv, need_weights=weights)
            text = text + attended
            return text + self.mlp(self.norm_mlp(text)), attn

    class _RelationHead(nn.Module):
        """The ``relation_head`` readout (see :class:`JointConfig`): pair scores of caption tokens
        from their states and the offset between the image positions they attend to."""

        def __init__(self, hidden: int, width: int, grid: int) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(hidden)
            self.first = nn.Linear(hidden, width)
            self.second = nn.Linear(hidden, width, bias=False)
            self.offset = nn.Linear(4, width, bias=False)
            self.mid = nn.Linear(width, width)
            self.score = nn.Linear(width, 1)
            self.gate = nn.Linear(width, 1)
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)
            axis = torch.linspace(-1.0, 1.0, grid) if grid > 1 else torch.zeros(1)
            rows, cols = torch.meshgrid(axis, axis, indexing="ij")
            self.register_buffer(
                "coords", torch.stack([rows, cols], -1).reshape(grid * grid, 2), persistent=False
            )

        def forward(self, text: torch.Tensor, attn: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            coords: torch.Tensor = self.coords  # type: ignore[assignment]
            p = coords.shape[0]
            w = attn[..., -p:].float()  # the patches (late fusion puts an image CLS before them)
            w = w / w.sum(-1, keepdim=True).clamp(min=1e-6)
            where = w @ coords  # (B, T, 2): the row and column each token attends to
            delta = where[:, :, None, :] - where[:, None, :, :]
            h = self.norm(text.float())
            z = torch.nn.functional.gelu(
                self.first(h)[:, :, None]
                + self.second(h)[:, None, :]
                + self.offset(torch.cat([delta, delta.abs()], -1))
            )
            z = torch.nn.functional.gelu(self.mid(z))
            n = mask.shape[1]
            valid = mask.bool()[:, :, None] & mask.bool()[:, None, :]
            valid = valid & ~torch.eye(n, dtype=torch.bool, device=mask.device)
            gate = self.gate(z).squeeze(-1).masked_fill(~valid, float("-inf")).flatten(1)
            gate = torch.softmax(gate, -1).nan_to_num(0.0)
            out: torch.Tensor = (gate * self.score(z).squeeze(-1).flatten(1)).sum(-1)
            return out

    class JointNet(nn.Module):
        """The trainable parameters. ``JointModel`` wraps it with the tokenizer and inference API."""

        def __init__(
            self, backbone: Any, tokenizer: Any, cfg: JointConfig, *, pretrained_encoder: bool = False
        ) -> None:
            super().__init__()
            if cfg.image_size % cfg.patch_size:
                raise ValueError(
                    f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}"
                )
            check_choice("image_encoder", cfg.image_encoder, IMAGE_ENCODERS)
            check_choice("cross_readout", cfg.cross_readout, CROSS_READOUTS)
            check_choice("position_init", cfg.position_init, POSITION_INITS)
            self.cfg = cfg
            self.backbone = backbone
            hidden = int(backbone.config.hidden_size)
            self.hidden = hidden
            self.type_vocab = int(getattr(backbone.config, "type_vocab_size", 0) or 0)
            self.patch_embed = build_image_encoder(
                cfg.image_encoder,
                image_size=cfg.image_size,
                patch_size=cfg.patch_size,
                hidden_size=hidden,
                resolution=cfg.encoder_resolution,
                pretrained=pretrained_encoder,
            )
            # Patch vectors and 2-D positions start at the scale of the pretrained word embeddings,
            # so that neither content nor position drowns the other in the embedding LayerNorm
            # (unnormalised conv features are ~10x larger and made spatial relations unlearnable).
            scale = float(backbone.get_input_embeddings().weight.detach().std())
            self.patch_norm = nn.LayerNorm(hidden)
            with torch.no_grad():
                self.patch_norm.weight.fill_(scale)
            if cfg.position_init == "sincos":
                rows, cols = _sincos_grid(cfg.grid, hidden)
                self.row_embed = nn.Parameter(rows * scale)
                self.col_embed = nn.Parameter(cols * scale)
            else:
                self.row_embed = nn.Parameter(torch.randn(cfg.grid, hidden) * scale)
                self.col_embed = nn.Parameter(torch.randn(cfg.grid, hidden) * scale)
            self.modality_embed = nn.Embedding(2, hidden)
            nn.init.zeros_(self.modality_embed.weight)  # text keeps its pretrained embeddings at start
            self.text_proj = nn.Linear(hidden, cfg.embed_dim)
            self.image_proj = nn.Linear(hidden, cfg.embed_dim)
            if cfg.embed_dim == hidden:  # start text vectors at the pretrained sentence embedding
                with torch.no_grad():
                    self.text_proj.weight.copy_(torch.eye(hidden))
                    self.text_proj.bias.zero_()
            self.cross_head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
            self.logit_scale = nn.Parameter(torch.tensor(float(np.log(20.0))))
            if cfg.cross_readout == "cls+pair":
                self.pair_scale = nn.Parameter(torch.tensor(10.0))
            self.cls_id = int(tokenizer.cls_token_id)
            self.n_layers = int(backbone.config.num_hidden_layers)
            if not 0 <= cfg.cross_layers <= self.n_layers:
                raise ValueError(f"cross_layers must be within [0, {self.n_layers}], got {cfg.cross_layers}")
            if cfg.cross_layers and not hasattr(getattr(backbone, "encoder", None), "layer"):
                raise ValueError(
                    f"cross_layers > 0 needs a BERT-style backbone (embeddings + encoder.layer); "
                    f"{type(backbone).__name__} has none"
                )
            self.fusion_start = self.n_layers - cfg.cross_layers
            if cfg.cross_attention and not cfg.cross_layers:
                raise ValueError("cross_attention needs late fusion (cross_layers > 0)")
            heads = int(getattr(backbone.config, "num_attention_heads", 1) or 1)
            self.cross_blocks = nn.ModuleList(
                [_CrossBlock(hidden, heads) for _ in range(max(0, int(cfg.cross_attention)))]
            )
            if cfg.relation_head and not cfg.cross_attention:
                raise ValueError(
                    "relation_head reads the cross-attention blocks: it needs cross_attention > 0"
                )
            self.relation = (
                _RelationHead(hidden, int(cfg.relation_head), cfg.grid) if cfg.relation_head else None
            )
            if not -1 <= cfg.relation_layer <= self.fusion_start:
                raise ValueError(
                    f"relation_layer={cfg.relation_layer}: -1 or a layer from 0 to {self.fusion_start} "
                    "(where the cross-attention blocks start)"
                )

        # -- building blocks ---------------------------------------------------------------
        def _word_embeddings(self) -> Any:
            return self.backbone.get_input_embeddings()

        def _run(
            self, embeds: torch.Tensor, mask: torch.Tensor, types: torch.Tensor, positions: torch.Tensor
        ) -> torch.Tensor:
            kwargs: dict[str, Any] = {
                "inputs_embeds": embeds,
                "attention_mask": mask,
                "position_ids": positions,
            }
            if self.type_vocab:
                kwargs["token_type_ids"] = types.clamp(max=self.type_vocab - 1)
            return self.backbone(**kwargs).last_hidden_state

        def _embed(self, embeds: torch.Tensor, types: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
            """The backbone's embedding layer (position and type embeddings, LayerNorm) on ``embeds``."""
            kwargs: dict[str, Any] = {"inputs_embeds": embeds, "position_ids": positions}
            if self.type_vocab:
                kwargs["token_type_ids"] = types.clamp(max=self.type_vocab - 1)
            out: torch.Tensor = self.backbone.embeddings(**kwargs)
            return out

        def _layers(self, hidden: torch.Tensor, mask: torch.Tensor, start: int, stop: int) -> torch.Tensor:
            """Transformer layers ``start``..``stop - 1`` on ``hidden`` (padding masked out)."""
            from transformers.masking_utils import create_bidirectional_mask

            if start >= stop:
                return hidden
            mask4d = create_bidirectional_mask(
                config=self.backbone.config, inputs_embeds=hidden, attention_mask=mask
            )
            for layer in self.backbone.encoder.layer[start:stop]:
                out = layer(hidden, mask4d)
                hidden = out[0] if isinstance(out, tuple) else out
            return hidden

        def _states(
            self,
            embeds: torch.Tensor,
            mask: torch.Tensor,
            types: torch.Tensor,
            positions: torch.Tensor,
            final: bool,
        ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            """(states entering the fusion layers, last layer's states); early fusion has no split."""
            if not self.cfg.cross_layers:
                return None, self._run(embeds, mask, types, positions)
            lower = self._layers(self._embed(embeds, types, positions), mask, 0, self.fusion_start)
            top = self._layers(lower, mask, self.fusion_start, self.n_layers) if final else None
            return lower, top

        def text_states(
            self, ids: torch.Tensor, mask: torch.Tensor, *, final: bool = True
        ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            """A text's hidden states where late fusion starts (None for early fusion) and at the top."""
            emb, types, pos = self._text_inputs(ids)
            return self._states(emb, mask, types, pos, final)

        def image_states(
            self, tokens: torch.Tensor, *, final: bool = True
        ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            """As :meth:`text_states`, for images given as ``image_tokens`` (an image CLS goes first)."""
            patches, ptypes, ppos = self._patch_inputs(tokens)
            b = patches.shape[0]
            cls = self._word_embeddings()(torch.full((b, 1), self.cls_id, device=patches.device))
            cls = cls + self.modality_embed.weight[1]
            emb = torch.cat([cls, patches], dim=1)
            types = torch.cat([ptypes[:, :1], ptypes], dim=1)
            pos = torch.cat([torch.zeros_like(ppos[:, :1]), ppos], dim=1)
            mask = torch.ones(emb.shape[:2], dtype=torch.long, device=patches.device)
            return self._states(emb, mask, types, pos, final)

        def pool_text(self, top: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self._head(self.text_proj, self._mean_pool(top.float(), mask), normalize=True)

        def pool_image(self, top: torch.Tensor) -> torch.Tensor:
            return self._head(self.image_proj, top.float().mean(1), normalize=True)

        def top_states(self, lower: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            """Late fusion: a single modality's lower states through the top layers (its twin-mode top)."""
            return self._layers(lower, mask, self.fusion_start, self.n_layers)

        def fuse(
            self, text_lower: torch.Tensor, mask: torch.Tensor, image_lower: torch.Tensor
        ) -> torch.Tensor:
            """Late fusion: the top ``cross_layers`` layers over a text's and an image's lower states."""
            return self.fuse_parts(text_lower, mask, image_lower)[0]

        def relation_words(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
            """The text states the relation head reads when ``relation_layer`` names a layer (None:
            it reads the states entering the cross-attention blocks, or there is no head)."""
            if self.relation is None or self.cfg.relation_layer < 0:
                return None
            emb, types, pos = self._text_inputs(ids)
            return self._layers(self._embed(emb, types, pos), mask, 0, self.cfg.relation_layer)

        def fuse_parts(
            self,
            text_lower: torch.Tensor,
            mask: torch.Tensor,
            image_lower: torch.Tensor,
            *,
            attention: bool = False,
            words: torch.Tensor | None = None,
        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
            """:meth:`fuse`, the ``relation_head`` term of each pair (None without one) and (with
            ``attention``, or a relation head) the last cross-attention block's head-averaged
            attention of each text token over the image tokens (None without such blocks).
            ``words``: the pairs' states (:meth:`relation_words`), if not ``text_lower``."""
            attn = None
            if words is None:
                words = text_lower  # the caption alone: what the relation head reads its pairs from
            for n, block in enumerate(self.cross_blocks):
                last = (attention or self.relation is not None) and n == len(self.cross_blocks) - 1
                text_lower, attn = block(text_lower, image_lower, weights=last)
            relation = None
            if self.relation is not None:
                assert attn is not None
                relation = self.relation(words, attn, mask)
            hidden = torch.cat([text_lower, image_lower], dim=1)
            ones = torch.ones(image_lower.shape[:2], dtype=mask.dtype, device=mask.device)
            top = self._layers(hidden, torch.cat([mask, ones], dim=1), self.fusion_start, self.n_layers)
            return top, relation, attn

        def _text_inputs(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            b, n = ids.shape
            emb = self._word_embeddings()(ids) + self.modality_embed.weight[0]
            types = torch.zeros(b, n, dtype=torch.long, device=ids.device)
            pos = torch.arange(n, device=ids.device).expand(b, n)
            return emb, types, pos

        def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
            """(B, P, H): each image's patch vectors with their 2-D positions and modality type,
            ready to enter the transformer (twin or cross mode). A batch's images can be turned into
            tokens once and shared by every pass that reads them."""
            feats = self.patch_embed(pixels)  # (B, H, g, g)
            g = self.cfg.grid
            if feats.shape[-1] != g or feats.shape[-2] != g:
                raise ValueError(
                    f"expected {self.cfg.image_size}px images, got patch grid {tuple(feats.shape[-2:])}"
                )
            feats = self.patch_norm(feats.flatten(2).transpose(1, 2))  # (B, g*g, H)
            pos2d = (self.row_embed[:, None, :] + self.col_embed[None, :, :]).reshape(g * g, -1)
            return feats + pos2d + self.modality_embed.weight[1]

        def _tokens(self, pixels: torch.Tensor | None, tokens: torch.Tensor | None) -> torch.Tensor:
            if tokens is not None:
                return tokens
            if pixels is None:
                raise ValueError("give pixels or image tokens")
            return self.image_tokens(pixels)

        def _patch_inputs(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            b, p = tokens.shape[:2]
            types = torch.ones(b, p, dtype=torch.long, device=tokens.device)
            pos = torch.arange(1, p + 1, device=tokens.device).expand(b, p)
            return tokens, types, pos

        @staticmethod
        def _head(head: nn.Module, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
            """Projections and heads run in float32 even inside a bfloat16 autocast region."""
            with torch.autocast(x.device.type, enabled=False):
                out = head(x.float())
                return torch.nn.functional.normalize(out, dim=-1) if normalize else out

        @staticmethod
        def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-6)

        # -- twin mode ----------------------------------------------------------------------
        def embed_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            top = self.text_states(ids, mask)[1]
            assert top is not None
            return self.pool_text(top, mask)

        def embed_image(
            self, pixels: torch.Tensor | None = None, *, tokens: torch.Tensor | None = None
        ) -> torch.Tensor:
            """Twin-mode image vectors from ``pixels``, or from their ``image_tokens``."""
            top = self.image_states(self._tokens(pixels, tokens))[1]
            assert top is not None
            return self.pool_image(top)

        # -- cross mode ---------------------------------------------------------------------
        def cross_hidden(
            self,
            ids: torch.Tensor,
            mask: torch.Tensor,
            pixels: torch.Tensor | None = None,
            *,
            tokens: torch.Tensor | None = None,
        ) -> torch.Tensor:
            """The cross pass's hidden states: ``ids``' text tokens first, then the image's (from
            ``pixels`` or their ``image_tokens``; late fusion puts the image CLS before the patches)."""
            tokens = self._tokens(pixels, tokens)
            if self.cfg.cross_layers:
                text_lower = self.text_states(ids, mask, final=False)[0]
                image_lower = self.image_states(tokens, final=False)[0]
                assert text_lower is not None and image_lower is not None
                return self.fuse(text_lower, mask, image_lower)
            temb, ttypes, tpos = self._text_inputs(ids)
            pemb, ptypes, ppos = self._patch_inputs(tokens)
            emb = torch.cat([temb, pemb], dim=1)
            full_mask = torch.cat(
                [mask, torch.ones(ptypes.shape, dtype=mask.dtype, device=mask.device)], dim=1
            )
            return self._run(emb, full_mask, torch.cat([ttypes, ptypes], 1), torch.cat([tpos, ppos], 1))

        def cross_parts(
            self,
            hidden: torch.Tensor,
            mask: torch.Tensor,
            twin: torch.Tensor | None = None,
            relation: torch.Tensor | None = None,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """The two terms of the cross logit: the CLS head's (plus the ``relation`` term of
            :meth:`fuse_parts`, when given) and the second term (0 for ``cls``; the pair cosine for
            ``cls+pair``; for ``residual`` the twin-mode cosine ``twin`` of each pair, as given,
            times the bi-encoder's scale, taken as a constant; the trainer detaches ``twin`` when
            a bi-encoder loss trains it)."""
            cls = self._head(self.cross_head, hidden[:, 0]).squeeze(-1)
            if relation is not None:
                cls = cls + relation.float()
            if self.cfg.cross_readout == "cls":
                return cls, torch.zeros_like(cls)
            if self.cfg.cross_readout == "residual":
                if twin is None:
                    raise ValueError("the residual readout needs the pairs' twin-mode cosines")
                return cls, self.bi_scale().detach() * twin.float()
            n = mask.shape[1]
            hidden = hidden.float()
            t = self._head(self.text_proj, self._mean_pool(hidden[:, :n], mask), normalize=True)
            v = self._head(self.image_proj, hidden[:, n:].mean(1), normalize=True)
            return cls, self.pair_scale * (t * v).sum(-1)

        def bi_scale(self) -> torch.Tensor:
            """The bi-encoder's logit scale (what its contrastive loss multiplies cosines by)."""
            return self.logit_scale.exp().clamp(1.0, 100.0)

    return JointNet


class JointModel:
    """Bi-encoder and cross-encoder sharing one set of transformer weights (the model contract)."""

    def __init__(
        self, net: Any, tokenizer: Any, config: JointConfig, *, settings: Settings | None = None
    ) -> None:
        settings = settings or get_settings()
        self.net = net
        self.tokenizer = tokenizer
        self.config = config
        self.batch_size = settings.encode_batch_size
        self.score_batch_size = settings.score_batch_size
        self.precision = resolve_precision(settings.precision)
        self.quantized = False
        """Whether the transformer's linear layers run in int8 (:meth:`quantize_int8`)."""
        self.weights_path: Path | None = None
        """The weights file this model was loaded from (None: built in memory)."""
        self._states_key: str | None = None
        self.net.eval()

    # -- construction / persistence ----------------------------------------------------------
    @classmethod
    def from_backbone(
        cls, backbone: str | Path | None = None, config: JointConfig | None = None
    ) -> JointModel:
        """A fresh model whose transformer starts from a local checkpoint (default: bundled MiniLM)."""
        from search_backend.model.backbone import load_backbone, resolve_backbone

        path = resolve_backbone(backbone)
        cfg = config or JointConfig()
        cfg.backbone = str(path)
        model, tokenizer = load_backbone(path)
        return cls(_torch_modules()(model, tokenizer, cfg, pretrained_encoder=True), tokenizer, cfg)

    def save(self, path: str | Path, *, half: bool = False) -> None:
        """Write the self-describing folder. ``half`` stores floating-point weights as float16
        (half the size; they load back as float32)."""
        import copy

        from safetensors.torch import save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        bdir = path / _BACKBONE_DIR
        if bdir.exists():
            shutil.rmtree(bdir)
        bdir.mkdir()
        self.net.backbone.config.save_pretrained(bdir)
        self.tokenizer.save_pretrained(bdir)
        net = copy.deepcopy(self.net).half() if half else self.net
        save_model(net, str(path / _WEIGHTS))
        write_model_config(path, {"type": _TYPE, "config": asdict(self.config)})

    @classmethod
    def load(cls, path: str | Path, *, grow: dict[str, Any] | None = None) -> JointModel:
        """The model saved in ``path``. ``grow``: JointConfig values for the loaded model; a value
        equal to the saved one is kept, a :data:`GROWABLE` field that is off (0) is switched on with
        its module freshly initialised (e.g. a relation head added to a trained model before a
        ``train_only`` phase); any other change raises ValueError, since trained weights fix it."""
        from safetensors.torch import load_model

        from search_backend.model.backbone import load_backbone

        path = Path(path)
        meta = read_model_config(path)
        if meta["type"] != _TYPE:
            raise ModelLoadError(f"{path}: model type is {meta['type']!r}, not {_TYPE!r}")
        try:
            cfg = JointConfig(**meta.get("config", {}))
        except TypeError as exc:
            raise ModelLoadError(f"{path}: bad joint model config ({exc})") from exc
        cfg, fresh = _grown(cfg, grow or {}, path)
        if not (path / _WEIGHTS).is_file():
            raise ModelLoadError(f"{path}: missing {_WEIGHTS}")
        backbone, tokenizer = load_backbone(path / _BACKBONE_DIR, pretrained=False)
        net = _torch_modules()(backbone, tokenizer, cfg)
        try:
            missing, unexpected = load_model(net, str(path / _WEIGHTS), strict=not fresh)
        except (RuntimeError, OSError) as exc:
            raise ModelLoadError(f"{path}: weights do not match the saved config ({exc})") from exc
        stray = [k for k in missing if not k.startswith(fresh)] + list(unexpected)
        if stray:
            raise ModelLoadError(f"{path}: weights do not match the saved config ({', '.join(stray[:5])})")
        model = cls(net, tokenizer, cfg)
        model.weights_path = path / _WEIGHTS
        if get_settings().quantize == "int8":
            model.quantize_int8()
        return model

    def quantize_int8(self) -> None:
        """Dynamic int8 quantisation of the transformer's linear layers (CPU inference only)."""
        import torch
        from torch.ao.quantization import quantize_dynamic

        self.net.backbone = quantize_dynamic(self.net.backbone, {torch.nn.Linear}, dtype=torch.qint8)
        self.precision = "fp32"  # int8 kernels take float32 activations; no bf16 autocast around them
        self.quantized = True
        self._states_key = None
        self.net.eval()

    def num_parameters(self) -> int:
        return sum(int(p.numel()) for p in self.net.parameters())

    # -- image states (computed once per image, read by every rerank) ---------------------
    @property
    def states_key(self) -> str | None:
        """The name under which this model's :class:`ImageStates` are stored (None: a model built
        in memory, whose states are not stored). See :mod:`search_backend.model.states`."""
        if self._states_key is None and self.weights_path is not None:
            from search_backend.model.states import states_key

            self._states_key = states_key(
                self.weights_path, asdict(self.config), "int8" if self.quantized else self.precision
            )
        return self._states_key

    @property
    def states_shape(self) -> tuple[tuple[int, int], int]:
        """(shape of :attr:`ImageStates.tokens`, length of its vector: 0 when it has none)."""
        tokens = self.config.num_patches + (1 if self.config.cross_layers else 0)
        dim = self.config.embed_dim if self.config.cross_readout == "residual" else 0
        return (tokens, int(self.net.hidden)), dim

    def _image_parts(
        self, pixels: torch.Tensor, *, vector: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(what a cross pass reads of each image, its residual vector or None, its bi-encoder
        vector when ``vector`` or the readout needs it): one pass of the image side for all three."""
        net = self.net
        tokens = net.image_tokens(pixels)
        residual = self.config.cross_readout == "residual"
        vec = None
        if self.config.cross_layers:
            low, top = net.image_states(tokens, final=vector or residual)
            assert low is not None
            if top is not None:
                vec = net.pool_image(top)
        else:
            low = tokens
            if vector or residual:
                vec = net.embed_image(tokens=tokens)
        return low, (vec if residual else None), vec

    def image_states(self, images: list[Image.Image] | np.ndarray | torch.Tensor) -> list[ImageStates]:
        """Each image's query-independent states (:mod:`search_backend.model.states`)."""
        return self.encode_images_with_states(images)[1]

    def encode_images_with_states(
        self, images: list[Image.Image] | np.ndarray | torch.Tensor, batch_size: int | None = None
    ) -> tuple[np.ndarray, list[ImageStates]]:
        """``encode_images`` and ``image_states`` of the same images, from one pass of the image side
        (what indexing stores)."""
        import torch

        from search_backend.model.states import ImageStates

        bs = batch_size or self.batch_size
        vectors = np.zeros((len(images), self.config.embed_dim), dtype=np.float32)
        states: list[ImageStates] = []
        self.net.eval()
        with torch.inference_mode(), autocast(self.precision):
            for s in range(0, len(images), bs):
                chunk = images[s : s + bs]
                pixels = chunk if isinstance(chunk, torch.Tensor) else self.prepare_images(chunk)
                low, res, vec = self._image_parts(pixels, vector=True)
                assert vec is not None
                vectors[s : s + bs] = vec.float().numpy()
                half = low.to(torch.float16).numpy()
                extra = None if res is None else res.float().numpy()
                states.extend(
                    ImageStates(half[i], None if extra is None else extra[i]) for i in range(len(half))
                )
        return vectors, states

    # -- preparation (exposed so evaluation and services can cache it) -------------------
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text #{i}: empty caption")
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.config.max_text_len, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def prepare_images(self, images: list[Image.Image] | np.ndarray) -> torch.Tensor:
        return images_to_tensor(images, self.config.image_size)

    # -- the contract ---------------------------------------------------------------------
    def encode_texts(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        import torch

        bs = batch_size or self.batch_size
        out = np.zeros((len(texts), self.config.embed_dim), dtype=np.float32)
        self.net.eval()
        with torch.inference_mode(), autocast(self.precision):
            for s in range(0, len(texts), bs):
                tok = self.tokenize(texts[s : s + bs])
                out[s : s + bs] = self.net.embed_text(tok["input_ids"], tok["attention_mask"]).float().numpy()
        return out

    def encode_images(
        self, images: list[Image.Image] | np.ndarray, batch_size: int | None = None
    ) -> np.ndarray:
        import torch

        bs = batch_size or self.batch_size
        out = np.zeros((len(images), self.config.embed_dim), dtype=np.float32)
        self.net.eval()
        with torch.inference_mode(), autocast(self.precision):
            for s in range(0, len(images), bs):
                pixels = self.prepare_images(images[s : s + bs])
                out[s : s + bs] = self.net.embed_image(pixels).float().numpy()
        return out

    def score(
        self,
        texts: list[str],
        images: list[Image.Image] | np.ndarray,
        batch_size: int | None = None,
    ) -> np.ndarray:
        if len(texts) != len(images):
            raise ValueError(f"score needs as many texts as images (got {len(texts)} and {len(images)})")
        return self.score_prepared(texts, images, batch_size=batch_size)

    def score_prepared(
        self,
        texts: list[str],
        images: list[Image.Image] | np.ndarray | torch.Tensor,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """``score`` that also takes already-prepared pixel tensors (N, 3, S, S)."""
        cls, pair = self.score_parts(texts, images, batch_size=batch_size)
        return cls + pair

    def score_parts(
        self,
        texts: list[str],
        images: list[Image.Image] | np.ndarray | torch.Tensor,
        batch_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The two terms of ``score``: the CLS head's and the pair cosine's (zeros for ``cls``).

        A diagnostic: which part of the cross-encoder ranks what (``benchmarks/rerank_errors.py``).
        """
        import torch

        bs = batch_size or self.score_batch_size
        cls = np.zeros(len(texts), dtype=np.float32)
        pair = np.zeros(len(texts), dtype=np.float32)
        self.net.eval()
        with torch.inference_mode(), autocast(self.precision):
            for s in range(0, len(texts), bs):
                chunk = images[s : s + bs]
                if isinstance(chunk, torch.Tensor):
                    c, p = self._score_chunk(texts[s : s + bs], self._image_side(chunk))
                elif any(isinstance(x, ImageStates) for x in chunk):
                    c, p = self._score_chunk(texts[s : s + bs], self._stored_side(list(chunk)))
                else:
                    c, p = self._score_chunk(texts[s : s + bs], self._image_side(self.prepare_images(chunk)))
                cls[s : s + bs], pair[s : s + bs] = c.float().numpy(), p.float().numpy()
        return cls, pair

    def _image_side(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(which row of the image side each pair reads, the cross pass's image input, residual
        vectors or None). An image that recurs in every pair (an image query) is run once."""
        import torch

        flat = pixels.flatten(1)
        if len(flat) > 1 and bool((flat == flat[:1]).all()):  # one image for every pair
            iw, pixels = torch.zeros(len(flat), dtype=torch.long), pixels[:1]
        else:
            iw = torch.arange(len(flat))
        low, res, _ = self._image_parts(pixels, vector=False)
        return iw, low, res

    def _stored_side(self, chunk: list[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`_image_side` for a chunk holding :class:`ImageStates` (images among them get theirs)."""
        import torch

        todo = [i for i, x in enumerate(chunk) if not isinstance(x, ImageStates)]
        if todo:
            for i, st in zip(todo, self.image_states([chunk[i] for i in todo]), strict=True):
                chunk[i] = st
        (tokens, _), dim = self.states_shape
        for n, st in enumerate(chunk):
            if st.tokens.shape[0] != tokens or (dim and (st.vector is None or st.vector.shape != (dim,))):
                raise ValueError(f"image states #{n} do not fit this model (tokens {st.tokens.shape})")
        low = torch.from_numpy(np.stack([st.tokens for st in chunk])).float()
        res = torch.from_numpy(np.stack([st.vector for st in chunk])) if dim else None
        return torch.arange(len(chunk)), low, res

    def _score_chunk(
        self, texts: list[str], image: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross logits' two terms for pairs (texts[i], image row iw[i]), ``image`` being
        :meth:`_image_side`'s (iw, image input, residual vectors). A text that recurs (reranking
        pairs one query with every hit) goes through its own passes once."""
        import torch

        net = self.net
        iw, low, res = image
        unique = list(dict.fromkeys(texts))
        slot = {t: k for k, t in enumerate(unique)}
        tw = torch.tensor([slot[t] for t in texts])
        tok = self.tokenize(unique)
        ids, mask = tok["input_ids"], tok["attention_mask"]
        residual = self.config.cross_readout == "residual"
        if self.config.cross_layers:
            t_low, t_top = net.text_states(ids, mask, final=residual)
            words = net.relation_words(ids, mask)
            hidden, relation, _ = net.fuse_parts(
                t_low[tw], mask[tw], low[iw], words=None if words is None else words[tw]
            )
            text_vec = net.pool_text(t_top, mask) if residual else None
        else:
            hidden, relation = net.cross_hidden(ids[tw], mask[tw], tokens=low[iw]), None
            text_vec = net.embed_text(ids, mask) if residual else None
        twin = None
        if text_vec is not None:
            if res is None:
                raise ValueError("the residual readout needs each image's bi-encoder vector")
            twin = (text_vec[tw] * res[iw]).sum(-1)
        result: tuple[torch.Tensor, torch.Tensor] = net.cross_parts(hidden, mask[tw], twin, relation)
        return result


def build_joint_model(backbone: str | Path | None = None, **config: Any) -> JointModel:
    """Convenience: ``JointModel.from_backbone(backbone, JointConfig(**config))``."""
    return JointModel.from_backbone(backbone, JointConfig(**config))
