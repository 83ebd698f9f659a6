from __future__ import annotations

import pytest

from search_backend.training.recipes import default_recipe, with_overrides


def test_overrides_set_training_and_model_fields_with_their_types() -> None:
    base = default_recipe("joint")
    cfg = with_overrides(base, ["steps=300", "hard_rate=0.5", "ce_loss=rank", "model.patch_size=8"])
    assert (cfg.steps, cfg.hard_rate, cfg.ce_loss) == (300, 0.5, "rank")
    assert cfg.model == {**base.model, "patch_size": 8}
    assert with_overrides(base, ["model.max_text_len=32"]).model["max_text_len"] == 32  # not in the recipe
    assert base.steps == 450 and base.model["patch_size"] == 16  # the recipe itself is untouched
    assert with_overrides(base, []) == base


def test_init_from_keeps_only_the_model_values_given() -> None:
    base = default_recipe("joint")
    cfg = with_overrides(base, ["init_from=some/model", "model.relation_head=64"])
    assert cfg.model == {"relation_head": 64}  # the recipe's model settings give way to the saved model's
    assert with_overrides(base, ["init_from=some/model"]).model == {}


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("steps", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("stepz=3", "unknown training setting 'stepz'"),
        ("setup=be", "unknown training setting 'setup'"),
        ("model.patch=8", "unknown model setting 'patch'"),
        ("steps=many", "steps='many': expected an integer"),
        ("hard_rate=lots", "hard_rate='lots': expected a number"),
        ("hard_rate=1.5", "hard_rate must be within"),
        ("bi_loss=cosine", "unknown bi-encoder loss 'cosine'"),
    ],
)
def test_bad_overrides_name_the_key(assignment: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        with_overrides(default_recipe("joint"), [assignment])
