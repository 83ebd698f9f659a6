from __future__ import annotations

from pathlib import Path

import pytest

from search_backend.config import Settings, get_settings


def test_defaults_live_in_the_users_home() -> None:
    s = get_settings({})
    assert s.home == Path.home() / ".xmr"
    assert s.default_model_dir == s.home / "models" / "default"


def test_environment_overrides_with_types() -> None:
    s = get_settings({"XMR_HOME": "/tmp/x", "XMR_THREADS": "3", "XMR_UNKNOWN": "1", "XMR_BACKBONE": ""})
    assert s == Settings(home=Path("/tmp/x"), threads=3)


def test_bad_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="XMR_THREADS"):
        get_settings({"XMR_THREADS": "many"})
    with pytest.raises(ValueError, match="XMR_PRECISION='fp16': unknown precision 'fp16'"):
        get_settings({"XMR_PRECISION": "fp16"})
