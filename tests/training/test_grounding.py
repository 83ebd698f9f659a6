from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from search_backend.data.shapes import Scene, ShapeObject, make_shapes
from search_backend.training.grounding import (
    build_grounding_head,
    grounding_loss,
    grounding_targets,
    mentions,
)

_SCENE = Scene(
    (
        ShapeObject("circle", "red", "small", cx=0.2, cy=0.5),
        ShapeObject("square", "cyan", "large", cx=0.7, cy=0.55),
        ShapeObject("circle", "red", "large", cx=0.7, cy=0.1),
    ),
    ((0, "left of", 1), (2, "above", 1)),
)


def test_mentions_resolve_to_the_one_object_they_name() -> None:
    caption = "a little red circle left of the cyan square, and a big red circle is over the cyan square"
    found = [(caption[s:e], k) for s, e, k in mentions(caption, _SCENE)]
    assert found == [
        ("little red circle", 0),
        ("cyan square", 1),
        ("big red circle", 2),
        ("cyan square", 1),
    ]
    # "red circle" without a size fits two objects; "blue square" fits none: neither is grounded
    assert mentions("a red circle above a blue square", _SCENE) == []


def test_every_shapes_caption_grounds_every_object_in_every_language() -> None:
    for item in make_shapes("train", 40, 1, langs="all"):
        assert set(item.langs) == {"en", "de", "fr", "cs"}
        for caption in item.captions:
            named = {k for _, _, k in mentions(caption, item.scene)}
            assert named == set(range(len(item.scene.objects))), caption


def test_mentions_in_other_word_orders_and_cases() -> None:
    cases = {
        "un petit cercle rouge à gauche du grand carré cyan": ["petit cercle rouge", "grand carré cyan"],
        "der kleine rote Kreis ist links vom türkisfarbenen Quadrat": [
            "kleine rote Kreis",
            "türkisfarbenen Quadrat",
        ],
        "malý červený kruh je vlevo od azurového čtverce": ["malý červený kruh", "azurového čtverce"],
    }
    for caption, spans in cases.items():
        found = mentions(caption, _SCENE)
        assert [caption[s:e] for s, e, _ in found] == spans and [k for *_, k in found] == [0, 1]
    # a run with two colours, or a colour and no shape, is no mention
    assert mentions("a small red cyan circle left of a red thing", _SCENE) == []


def test_no_grammar_word_outside_a_mention_means_an_attribute() -> None:
    """A function word of one language that is another's colour or shape would glue mentions."""
    from importlib import import_module

    from search_backend.data.grammars import word_meanings

    meanings = word_meanings()
    for lang in ("de", "fr", "cs"):
        module = import_module(f"search_backend.data.grammars.{lang}")
        own = set(module.lexicon())
        others = {w.lower() for w in module.vocabulary()} - own
        assert not others & set(meanings), (lang, sorted(others & set(meanings)))
    from search_backend.data.grammars import _english_lexicon

    english = {
        w.lower() for it in make_shapes("train", 60, 0) for c in it.captions for w in re.findall(r"\w+", c)
    }
    assert not (english - set(_english_lexicon())) & set(meanings)


def test_targets_point_each_mention_token_at_its_objects_cell() -> None:
    from search_backend.model.backbone import load_backbone, resolve_backbone

    _, tokenizer = load_backbone(resolve_backbone(None))
    captions = ["pad pad", "a small red circle left of a large cyan square"]
    t = grounding_targets(tokenizer, captions, [_SCENE, _SCENE], grid=8, max_len=48)
    assert t.rows.tolist() == [1] * 7  # "small red circle" (3 tokens), "large cy ##an square" (4)
    tokens = tokenizer(captions[1])["input_ids"]
    words = tokenizer.convert_ids_to_tokens([tokens[i] for i in t.tokens.tolist()])
    assert words == ["small", "red", "circle", "large", "cy", "##an", "square"]
    assert t.patch_row.tolist() == [4] * 3 + [4] * 4  # cy 0.5 and 0.55 -> row 4
    assert t.patch_col.tolist() == [1] * 3 + [5] * 4  # cx 0.2 -> col 1, cx 0.7 -> col 5


def test_grounding_loss_rewards_pointing_at_the_right_cell() -> None:
    import torch

    from search_backend.training.grounding import GroundingTargets

    head = build_grounding_head(4, grid=2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) * 10)
        head.bias.zero_()
    one = torch.tensor([0])
    targets = GroundingTargets(one, one, patch_row=torch.tensor([1]), patch_col=torch.tensor([0]))
    right = torch.tensor([[[0.0, 1, 1, 0]]])
    wrong = torch.tensor([[[1.0, 0, 0, 1]]])
    assert grounding_loss(head, right, targets) < 1e-3 < 5 < grounding_loss(head, wrong, targets)
    empty = GroundingTargets(*(torch.zeros(0, dtype=torch.long) for _ in range(4)))
    assert grounding_loss(head, right, empty).item() == 0.0


def test_training_with_grounding_is_deterministic_and_resumes_exactly(
    tiny_backbone: Path, tiny_model_config: dict[str, int], tmp_path: Path
) -> None:
    from search_backend.training import TrainConfig, TrainingPool, train_single

    pool = TrainingPool(40, 0, image_size=32)
    cfg = TrainConfig(
        steps=4,
        batch_size=6,
        pool_size=40,
        backbone=str(tiny_backbone),
        model=dict(tiny_model_config),
        ground_weight=1.0,
        checkpoint_every=100,
    )

    def weights(m: object) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in m.net.state_dict().items()}  # type: ignore[attr-defined]

    full = weights(train_single(cfg, tmp_path / "full", pool=pool, progress=False))
    train_single(cfg, tmp_path / "cut", pool=pool, progress=False, stop_after=2)
    resumed = weights(train_single(cfg, tmp_path / "cut", pool=pool, progress=False))
    assert all(np.array_equal(full[k], resumed[k]) for k in full)  # the head travels in the checkpoint
    off = weights(train_single(replace(cfg, ground_weight=0.0), tmp_path / "off", pool=pool, progress=False))
    assert not all(np.array_equal(full[k], off[k]) for k in full)
    assert "ground" not in " ".join(full)  # a training-only head: not part of the saved model
    with pytest.raises(ValueError, match="ground_weight"):
        replace(cfg, ground_weight=-1.0).validate()
