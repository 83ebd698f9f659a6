"""The default model that ships with the package: trained once, stored as fp16 safetensors.

``--model default`` (and ``xmr demo``) use ``$XMR_HOME/models/default`` when a user trained one
there (``xmr train --setup joint``), else this folder, so a fresh install searches and reranks
without training. ``SHIPPED.json`` beside the weights records the exact command that produced
them (it reproduces them under its seed) and what it measured; ``XMR_SHIPPED_MODEL=false`` turns
the fallback off (the demo then trains a fresh default, as before a model shipped).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["SHIPPED_INFO", "ship", "shipped_info", "shipped_model_dir"]

SHIPPED_INFO = "SHIPPED.json"
_FOLDER = Path(__file__).resolve().parent / "shipped"


def shipped_model_dir() -> Path | None:
    """The packaged default model's folder, or None when this installation has none."""
    from search_backend.model.base import CONFIG_NAME

    return _FOLDER if (_FOLDER / CONFIG_NAME).is_file() else None


def shipped_info() -> dict[str, Any]:
    """How the shipped model was made (command, seed, training time), or {} without one."""
    folder = shipped_model_dir()
    if folder is None or not (folder / SHIPPED_INFO).is_file():
        return {}
    info: dict[str, Any] = json.loads((folder / SHIPPED_INFO).read_text())
    return info


def ship(model_dir: str | Path, *, command: str, notes: dict[str, Any] | None = None) -> Path:
    """Store the joint model at ``model_dir`` as the shipped default (fp16 safetensors).

    ``command`` is the exact command that trained it (recorded in ``SHIPPED.json`` with the
    weights' sha256, the training config and ``notes``). Returns the shipped folder.
    """
    import shutil

    from search_backend.checksums import file_checksum
    from search_backend.model.joint import JointModel

    source = Path(model_dir)
    model = JointModel.load(source)
    if _FOLDER.exists():
        shutil.rmtree(_FOLDER)
    model.save(_FOLDER, half=True)
    for extra in ("train_config.json", "training.json"):
        if (source / extra).is_file():
            shutil.copy(source / extra, _FOLDER / extra)
    digest = file_checksum(_FOLDER / "model.safetensors")
    info = {
        "command": command,
        "weights_sha256": digest,
        "weights_bytes": (_FOLDER / "model.safetensors").stat().st_size,
        "parameters": model.num_parameters(),
        **(notes or {}),
    }
    (_FOLDER / SHIPPED_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return _FOLDER
