from __future__ import annotations

import pytest

from search_backend.runtime import autocast, resolve_precision


def test_precision_names_resolve() -> None:
    assert resolve_precision("fp32") == "fp32"
    assert resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto") in {"fp32", "bf16"}
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        resolve_precision("half")


def test_autocast_switches_matmuls_to_bfloat16_only_for_bf16() -> None:
    import torch

    a = torch.ones(2, 2)
    with autocast("bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast("fp32"):
        assert (a @ a).dtype == torch.float32
