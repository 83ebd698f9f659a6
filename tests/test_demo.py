from __future__ import annotations

from pathlib import Path

import pytest

from search_backend.config import Settings
from search_backend.demo import run_demo
from search_backend.model import JointModel


def test_demo_uses_the_cached_model_and_shows_both_rankings(tiny_model: JointModel, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, threads=1)
    tiny_model.save(settings.default_model_dir)
    lines: list[str] = []
    hits = run_demo(n_images=12, k=3, k_retrieve=6, seed=0, echo=lines.append, settings=settings)
    text = "\n".join(lines)
    assert "using cached default model" in text
    assert text.count("before rerank (bi-encoder)") == 5
    assert text.count("after rerank (cross-encoder)") == 5
    assert "text -> image" in text and "image -> text" in text
    assert set(hits) == {"t2i_be", "t2i_rr", "i2t_be", "i2t_rr"}
    assert all(0 <= v <= 3 for v in hits.values())


@pytest.mark.slow
def test_demo_trains_the_default_model_when_none_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh home: the demo trains (here a shortened recipe) and then searches with it."""
    from search_backend import demo
    from search_backend.training.recipes import default_recipe

    def short_recipe(setup: str = "joint", *, seed: int = 0, data: str = "shapes"):  # type: ignore[no-untyped-def]
        cfg = default_recipe(setup, seed=seed, data=data)
        cfg.steps, cfg.pool_size = 3, 64
        return cfg

    monkeypatch.setattr("search_backend.training.recipes.default_recipe", short_recipe)
    settings = Settings(home=tmp_path, shipped_model=False)
    lines: list[str] = []
    demo.run_demo(n_images=10, k=2, k_retrieve=4, echo=lines.append, settings=settings)
    assert "training the default joint model once (3 steps" in "\n".join(lines)
    assert JointModel.load(settings.default_model_dir).config.trained == ["bi", "cross"]
    assert "another recipe" not in "\n".join(lines)

    lines.clear()  # cached now: reused as is, and nothing to report while the recipe is unchanged
    demo.run_demo(n_images=10, k=2, k_retrieve=4, echo=lines.append, settings=settings)
    assert "using cached default model" in lines[0] and "another recipe" not in "\n".join(lines)

    def newer_recipe(setup: str = "joint", *, seed: int = 0, data: str = "shapes"):  # type: ignore[no-untyped-def]
        cfg = short_recipe(setup, seed=seed, data=data)
        cfg.steps = 4
        return cfg

    monkeypatch.setattr("search_backend.training.recipes.default_recipe", newer_recipe)
    lines.clear()
    demo.run_demo(n_images=10, k=2, k_retrieve=4, echo=lines.append, settings=settings)
    assert "using cached default model" in lines[0] and "another recipe" in lines[1]
