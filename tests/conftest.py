"""Shared fixtures: offline mode, a tiny random BERT checkpoint, a tiny saved joint model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests._services", "tests._multilingual"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Inference in float32 everywhere (workers started by tests inherit it), so that exactness checks
# (batch-size invariance, store parity) stay exact; tests/model covers bfloat16 on its own.
os.environ.setdefault("XMR_PRECISION", "fp32")


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) with the bundled MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from search_backend.model.backbone import default_backbone_dir

    path = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(default_backbone_dir(), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_config() -> dict[str, int]:
    return {"image_size": 32, "patch_size": 8, "embed_dim": 16, "max_text_len": 40}


@pytest.fixture()
def tiny_model(tiny_backbone: Path, tiny_model_config: dict[str, int]):  # type: ignore[no-untyped-def]
    import torch

    from search_backend.model.joint import JointConfig, JointModel

    torch.manual_seed(0)
    return JointModel.from_backbone(tiny_backbone, JointConfig(**tiny_model_config))


@pytest.fixture(scope="session")
def tiny_model_dir(
    tiny_backbone: Path, tiny_model_config: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny joint model saved to a folder (what collections record and workers load)."""
    import torch

    from search_backend.model.joint import JointConfig, JointModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_model") / "model"
    JointModel.from_backbone(tiny_backbone, JointConfig(**tiny_model_config)).save(path)
    return path
