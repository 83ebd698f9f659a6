"""Can a cross pass learn *where* a caption's objects are? A grounding probe on frozen states.

    .venv/bin/python benchmarks/binding_probe.py [--model default] [--train 1500] [--steps 300]

For a trained joint model with late fusion, the text's and the image's states where fusion starts
are computed once and frozen (shapes train / test scenes, two captions each). Then a grounding head
(``training.grounding``: every token of an object mention classifies the grid row and column of
its object) is trained on top of:

* ``fresh``: one freshly initialised cross-attention block (text queries over image states, then
  an MLP) at lr 1e-3, the ``model.cross_attention`` block;
* ``pretrained``: a copy of the model's own fusion layers over [text; image] (what the cross pass
  uses today) at lr 1e-4 (the recipe's backbone rate) and at 1e-3.

It prints the test split's grounding loss (chance ln 4 = 1.39) and how often both row and column
are right (chance 1/16), every 100 steps. This is a diagnostic, not a test: it says whether word-
to-patch binding is learnable by each kind of layer from the same frozen inputs.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_backend.runtime import configure_torch


def _states(model: Any, split: str, size: int) -> tuple[Any, ...]:
    import torch

    from search_backend.data.shapes import make_shapes
    from search_backend.model.image import images_to_tensor
    from search_backend.training.grounding import grounding_targets

    net, width = model.net, model.config.max_text_len
    caps, scenes, imgs = [], [], []
    for it in make_shapes(split, size, 0, image_size=model.config.image_size):
        for c in it.captions[:2]:
            caps.append(c)
            scenes.append(it.scene)
            imgs.append(it.image)
    texts, masks, images = [], [], []
    with torch.no_grad():
        for k in range(0, len(caps), 128):
            enc = model.tokenize(caps[k : k + 128])
            ids, mask = enc["input_ids"], enc["attention_mask"]
            low = net.text_states(ids, mask, final=False)[0]
            pad = width - low.shape[1]
            texts.append(torch.nn.functional.pad(low, (0, 0, 0, pad)))
            masks.append(torch.nn.functional.pad(mask, (0, pad)))
            pixels = images_to_tensor(imgs[k : k + 128], model.config.image_size)
            images.append(net.image_states(net.image_tokens(pixels), final=False)[0])
    targets = grounding_targets(model.tokenizer, caps, scenes, model.config.grid, width)
    return torch.cat(texts), torch.cat(masks), torch.cat(images), targets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--train", type=int, default=1500, help="training scenes (two captions each)")
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    configure_torch()
    import torch
    from torch import nn
    from transformers.masking_utils import create_bidirectional_mask

    from search_backend.model import load_model

    torch.manual_seed(0)
    model: Any = load_model(args.model)
    net, grid, hidden = model.net, model.config.grid, model.net.hidden
    if not model.config.cross_layers:
        sys.exit("the probe needs a late-fusion model (cross_layers > 0)")
    t0 = time.time()
    train, test = _states(model, "train", args.train), _states(model, "test", args.test)
    print(
        f"frozen states: {len(train[3])} grounded tokens to train on ({time.time() - t0:.0f} s)", flush=True
    )
    heads = int(net.backbone.config.num_attention_heads)

    class Fresh(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
            self.att = nn.MultiheadAttention(hidden, heads, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))

        def forward(self, t: Any, mask: Any, i: Any) -> Any:
            t = t + self.att(self.ln(t), i, i, need_weights=False)[0]
            return t + self.mlp(self.ln2(t))

    class Pretrained(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = copy.deepcopy(net.backbone.encoder.layer[net.fusion_start :])

        def forward(self, t: Any, mask: Any, i: Any) -> Any:
            h = torch.cat([t, i], 1)
            full = torch.cat([mask, torch.ones(i.shape[:2], dtype=mask.dtype)], 1)
            m4 = create_bidirectional_mask(config=net.backbone.config, inputs_embeds=h, attention_mask=full)
            for layer in self.layers:
                out = layer(h, m4)
                h = out[0] if isinstance(out, tuple) else out
            return h[:, : t.shape[1]]

    def loss_on(block: Any, head: Any, data: tuple[Any, ...], rows: Any) -> tuple[Any, Any]:
        texts, masks, images, tg = data
        sel = torch.isin(tg.rows, rows)
        uniq, inv = torch.unique(tg.rows[sel], return_inverse=True)
        logits = head(block(texts[uniq], masks[uniq], images[uniq])[inv, tg.tokens[sel]])
        row, col = logits[:, :grid], logits[:, grid:]
        ce = nn.functional.cross_entropy(row, tg.patch_row[sel]) + nn.functional.cross_entropy(
            col, tg.patch_col[sel]
        )
        right = (row.argmax(1) == tg.patch_row[sel]) & (col.argmax(1) == tg.patch_col[sel])
        return ce / 2, right.float().mean()

    for name, block, lr in (
        ("fresh", Fresh(), 1e-3),
        ("pretrained", Pretrained(), 1e-4),
        ("pretrained", Pretrained(), 1e-3),
    ):
        head = nn.Linear(hidden, 2 * grid)
        opt = torch.optim.AdamW([*block.parameters(), *head.parameters()], lr)
        n = train[0].shape[0]
        for step in range(1, args.steps + 1):
            loss, _ = loss_on(block, head, train, torch.randint(0, n, (64,)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 100 == 0 or step == args.steps:
                with torch.no_grad():
                    test_loss, acc = loss_on(block, head, test, torch.arange(test[0].shape[0]))
                print(
                    f"{name:10s} lr {lr:g} step {step}: train loss {loss.item():.3f}, test loss "
                    f"{test_loss.item():.3f}, cell right {100 * acc.item():.1f}% ({time.time() - t0:.0f} s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
