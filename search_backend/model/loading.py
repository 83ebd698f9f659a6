"""Load any saved model directory by its ``type``; resolve ``default``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from search_backend.model.base import ModelLoadError, read_model_config

if TYPE_CHECKING:
    from search_backend.config import Settings
    from search_backend.model.base import RetrievalModel

__all__ = ["cached_model", "load_model", "resolve_model_path"]

_MAX_MODELS = 4
_CACHE: dict[str, tuple[float, RetrievalModel]] = {}
"""Resolved model folder -> (mtime of its config when loaded, the model); oldest first."""


def resolve_model_path(spec: str | Path, settings: Settings | None = None) -> Path:
    """``"default"`` -> the user's default joint model (``$XMR_HOME/models/default``) when there is
    one, else the model shipped with the package; anything else is a path."""
    from search_backend.config import get_settings
    from search_backend.model.shipped import shipped_model_dir

    if str(spec) == "default":
        settings = settings or get_settings()
        path = settings.default_model_dir
        if path.is_dir():
            return path
        shipped = shipped_model_dir() if settings.shipped_model else None
        if shipped is not None:
            return shipped
        raise ModelLoadError(
            f"no default model at {path}: run `xmr demo` or `xmr train --setup joint --out {path}` first"
        )
    return Path(spec).expanduser()


def load_model(spec: str | Path, settings: Settings | None = None) -> RetrievalModel:
    path = resolve_model_path(spec, settings)
    kind = read_model_config(path)["type"]
    if kind == "joint":
        from search_backend.model.joint import JointModel

        return JointModel.load(path)
    if kind == "sep":
        from search_backend.model.sep import SepModel

        return SepModel.load(path)
    if kind == "adapter":
        from search_backend.model.adapters import AdapterModel

        return AdapterModel.load(path)
    raise ModelLoadError(f"{path}: unknown model type {kind!r}")


def cached_model(path: str | Path) -> RetrievalModel:
    """Load the model saved at ``path`` once per process (reloaded if its folder is re-saved).

    Workers and the search path call this for every batch or query; the model stays in memory.
    """
    from search_backend.model.base import CONFIG_NAME

    folder = Path(path).expanduser().resolve()
    try:
        stamp = (folder / CONFIG_NAME).stat().st_mtime
    except OSError:
        raise ModelLoadError(f"no saved model at {folder} (missing {CONFIG_NAME})") from None
    hit = _CACHE.pop(str(folder), None)
    if hit is None or hit[0] != stamp:  # not loaded yet, or re-saved since
        while len(_CACHE) >= _MAX_MODELS:
            _CACHE.pop(next(iter(_CACHE)))
        hit = (stamp, load_model(folder))
    _CACHE[str(folder)] = hit  # (re)inserted last: the most recently used
    return hit[1]
