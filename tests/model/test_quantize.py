"""XMR_QUANTIZE=int8: the transformer's linear layers become dynamically quantised int8 ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search_backend.model.joint import JointModel


def test_int8_load_quantises_the_transformer(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(6)]
    texts = ["a red circle"] * 6
    plain = JointModel.load(tiny_model_dir)
    monkeypatch.setenv("XMR_QUANTIZE", "int8")
    quant = JointModel.load(tiny_model_dir)
    kinds = {type(m).__module__ for m in quant.net.backbone.modules() if "Linear" in type(m).__name__}
    assert any("quantized" in k for k in kinds)
    assert not any(isinstance(m, torch.nn.Linear) for m in quant.net.backbone.modules())
    a, b = plain.score(texts, images), quant.score(texts, images)
    assert np.isfinite(b).all() and np.abs(a - b).max() < 0.1 * (np.abs(a).max() + 1e-6) + 0.05
    vecs = quant.encode_texts(["a red circle", "two blue squares"])
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)


def test_unknown_quantize_value_is_refused() -> None:
    from search_backend.config import get_settings

    with pytest.raises(ValueError, match="unknown quantize 'int4'"):
        get_settings({"XMR_QUANTIZE": "int4"})
