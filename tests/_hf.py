"""Tiny randomly initialised Hugging Face checkpoints (CLIP, BLIP) saved with their processors,
for the fine-tuning tests; the tokenizer's vocabulary holds every word of the shapes captions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["SHAPES_WORDS", "tiny_tokenizer", "write_tiny_blip", "write_tiny_clip"]

SHAPES_WORDS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",",
    "a", "above", "and", "below", "beneath", "big", "blue", "circle", "cyan", "diamond", "green",
    "is", "large", "left", "little", "of", "on", "over", "placed", "purple", "red", "right",
    "small", "square", "the", "there", "to", "triangle", "under", "yellow",
]  # fmt: skip
TEXT_LIMIT = 40


def tiny_tokenizer() -> Any:
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(SHAPES_WORDS)}, model_max_length=TEXT_LIMIT)


def _text(tok: Any, hidden: int, layers: int) -> dict[str, Any]:
    return {
        "vocab_size": len(SHAPES_WORDS),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": max(2, hidden // 16),
        "max_position_embeddings": TEXT_LIMIT,
        "pad_token_id": tok.pad_token_id,
    }


def _vision(image_size: int, patch: int, hidden: int, layers: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": max(2, hidden // 16),
        "image_size": image_size,
        "patch_size": patch,
    }


def write_tiny_clip(
    out: Path, *, image_size: int = 32, patch: int = 8, hidden: int = 32, layers: int = 2, seed: int = 0
) -> Path:
    """A random CLIP (2-layer towers) with a CLIPProcessor over the shapes vocabulary."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tok = tiny_tokenizer()
    text = {**_text(tok, hidden, layers), "bos_token_id": tok.cls_token_id, "eos_token_id": tok.sep_token_id}
    config = CLIPConfig(
        text_config=text, vision_config=_vision(image_size, patch, hidden, layers), projection_dim=hidden
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(out)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(out)
    return out


def write_tiny_blip(
    out: Path,
    *,
    image_size: int = 32,
    patch: int = 8,
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
    architecture: str = "BlipForImageTextRetrieval",
    processor: bool = True,
    init_range: float = 0.02,
    text_layers: int | None = None,
) -> Path:
    """A random BLIP model of ``architecture`` with a BlipProcessor over the shapes vocabulary."""
    import torch
    import transformers
    from transformers import BlipConfig, BlipImageProcessorPil, BlipProcessor

    tok = tiny_tokenizer()
    text = {
        **_text(tok, hidden, text_layers or layers),
        "encoder_hidden_size": hidden,
        "bos_token_id": tok.cls_token_id,
        "sep_token_id": tok.sep_token_id,
        "initializer_range": init_range,
    }
    vision = {**_vision(image_size, patch, hidden, layers), "initializer_range": init_range}  # default 1e-10
    config = BlipConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=hidden,
        image_text_hidden_size=hidden,
    )
    torch.manual_seed(seed)
    getattr(transformers, architecture)(config).save_pretrained(out)
    if processor:
        image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
        BlipProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(out)
    return out
