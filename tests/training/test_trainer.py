from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from search_backend.model import JointModel, SepModel, load_model
from search_backend.training import TrainConfig, TrainingPool, train, train_single


@pytest.fixture(scope="module")
def pool() -> TrainingPool:
    return TrainingPool(60, 0, image_size=32)


def _cfg(
    tiny_backbone: Path, tiny_model_config: dict[str, int], setup: str = "joint", **kw: object
) -> TrainConfig:
    base = TrainConfig(
        setup=setup,
        steps=4,
        batch_size=6,
        pool_size=60,
        backbone=str(tiny_backbone),
        model=dict(tiny_model_config),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _weights(model: JointModel) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.net.state_dict().items()}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _batch(pool: TrainingPool) -> tuple[np.ndarray, list[str], Any]:
    """24 rows of ``pool`` drawn under seed 3: their indices, first captions and 32-px pixels."""
    from search_backend.model.image import images_to_tensor

    idx = pool.sample(np.random.default_rng(3), 24)
    return idx, [pool.captions[i][0] for i in idx], images_to_tensor(pool.pixels[idx], 32)


def test_pool_batches_keep_distractor_groups_together(pool: TrainingPool) -> None:
    idx = pool.sample(np.random.default_rng(0), 12)
    assert len(idx) == 12 and len(set(idx.tolist())) == 12
    groups = pool.groups[idx]
    assert len(set(groups.tolist())) < 12  # at least one distractor pair in the batch


def test_training_changes_weights_and_is_deterministic(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_backbone, tiny_model_config)
    init = _weights(JointModel.from_backbone(tiny_backbone))
    a = train_single(cfg, tmp_path / "a", pool=pool, progress=False)
    b = train_single(cfg, tmp_path / "b", pool=pool, progress=False)
    wa, wb = _weights(a), _weights(b)
    assert _same(wa, wb)
    assert not np.array_equal(
        wa["backbone.encoder.layer.0.attention.self.query.weight"],
        init["backbone.encoder.layer.0.attention.self.query.weight"],
    )
    assert a.config.trained == ["bi", "cross"]
    assert not (tmp_path / "a" / "checkpoint").exists()
    assert _same(_weights(JointModel.load(tmp_path / "a")), wa)


def test_bf16_training_is_deterministic_and_keeps_float32_weights(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_backbone, tiny_model_config, steps=3, precision="bf16")
    a = _weights(train_single(cfg, tmp_path / "a", pool=pool, progress=False))
    b = _weights(train_single(cfg, tmp_path / "b", pool=pool, progress=False))
    assert _same(a, b)
    assert all(v.dtype == np.float32 for v in a.values() if v.dtype.kind == "f")  # master weights
    fp32 = _weights(train_single(replace(cfg, precision="fp32"), tmp_path / "c", pool=pool, progress=False))
    assert not _same(a, fp32)  # the bf16 run really computed in bfloat16


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_backbone, tiny_model_config, steps=5, checkpoint_every=100)
    full = train_single(cfg, tmp_path / "full", pool=pool, progress=False)
    train_single(cfg, tmp_path / "cut", pool=pool, progress=False, stop_after=2)
    assert (tmp_path / "cut" / "checkpoint" / "train_state.pt").is_file()
    resumed = train_single(cfg, tmp_path / "cut", pool=pool, progress=False)
    assert _same(_weights(full), _weights(resumed))


def test_resume_refuses_a_different_config(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_backbone, tiny_model_config, steps=5)
    train_single(cfg, tmp_path / "m", pool=pool, progress=False, stop_after=1)
    with pytest.raises(ValueError, match="another training config"):
        train_single(replace(cfg, lr_new=0.5), tmp_path / "m", pool=pool, progress=False)


@pytest.mark.parametrize("setup,trained", [("be", ["bi"]), ("ce", ["cross"])])
def test_single_mode_setups(
    setup: str,
    trained: list[str],
    tiny_backbone: Path,
    tiny_model_config: dict[str, int],
    pool: TrainingPool,
    tmp_path: Path,
) -> None:
    model = train_single(
        _cfg(tiny_backbone, tiny_model_config, setup, steps=2), tmp_path, pool=pool, progress=False
    )
    assert model.config.trained == trained


def test_sep_trains_two_models_and_saves_one_directory(
    tiny_backbone: Path, tiny_model_config: dict[str, int], tmp_path: Path
) -> None:
    model = train(_cfg(tiny_backbone, tiny_model_config, "sep", steps=2), tmp_path / "sep", progress=False)
    assert isinstance(model, SepModel)
    loaded = load_model(tmp_path / "sep")
    assert isinstance(loaded, SepModel)
    assert loaded.bi.config.trained == ["bi"] and loaded.cross.config.trained == ["cross"]
    assert loaded.num_parameters() == 2 * loaded.bi.num_parameters()


def test_ce_rows_limits_the_cross_encoder_to_a_subset_of_the_batch(
    tiny_backbone: Path,
    tiny_model_config: dict[str, int],
    pool: TrainingPool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net_class = type(JointModel.from_backbone(tiny_backbone).net)
    original = net_class.cross_hidden
    rows: list[int] = []

    def counting(self, ids, mask, pixels=None, *, tokens=None):  # type: ignore[no-untyped-def]
        rows.append(int(ids.shape[0]))
        return original(self, ids, mask, pixels, tokens=tokens)

    monkeypatch.setattr(net_class, "cross_hidden", counting)
    cfg = _cfg(tiny_backbone, tiny_model_config, steps=3, ce_rows=2)
    a = train_single(cfg, tmp_path / "a", pool=pool, progress=False)
    assert rows == [4, 4, 4]  # 2 positives + 2 negatives per step, out of a batch of 6
    b = train_single(cfg, tmp_path / "b", pool=pool, progress=False)
    assert _same(_weights(a), _weights(b))
    rows.clear()
    train_single(replace(cfg, ce_rows=0), tmp_path / "all", pool=pool, progress=False)
    assert rows == [12, 12, 12]


def test_pool_mined_negatives_train_and_resume_exactly(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool, tmp_path: Path
) -> None:
    from search_backend.training.pairs import pool_neighbours

    cfg = _cfg(
        tiny_backbone, tiny_model_config, steps=4, pool_negative_rate=1.0, pool_refresh=2, pool_negatives=5
    )
    full = train_single(cfg, tmp_path / "full", pool=pool, progress=False)
    train_single(cfg, tmp_path / "cut", pool=pool, progress=False, stop_after=3)
    resumed = train_single(cfg, tmp_path / "cut", pool=pool, progress=False)
    assert _same(_weights(full), _weights(resumed))  # the neighbour table travels in the checkpoint
    batch_only = train_single(replace(cfg, pool_negative_rate=0.0), tmp_path / "b", pool=pool, progress=False)
    assert not _same(_weights(full), _weights(batch_only))

    to_images, to_captions = pool_neighbours(full, pool, 5)
    assert to_images.shape == to_captions.shape == (len(pool), 5)
    own = np.arange(len(pool))[:, None]
    assert not (to_images == own).any() and not (to_captions == own).any()
    with pytest.raises(ValueError, match="needs a bi-encoder"):
        train_single(replace(cfg, setup="ce"), tmp_path / "ce", pool=pool, progress=False)


def test_ranking_loss_is_selectable(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_backbone, tiny_model_config, "ce", steps=2)
    bce = _weights(train_single(cfg, tmp_path / "bce", pool=pool, progress=False))
    rank = _weights(train_single(replace(cfg, ce_loss="rank"), tmp_path / "rank", pool=pool, progress=False))
    assert not _same(bce, rank)


def test_bad_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown set-up"):
        train(TrainConfig(setup="both"), tmp_path)
    with pytest.raises(ValueError, match="unknown bi-encoder loss"):
        train(TrainConfig(bi_loss="hinge"), tmp_path)
    with pytest.raises(ValueError, match="unknown cross-encoder loss"):
        train(TrainConfig(ce_loss="hinge"), tmp_path)
    with pytest.raises(ValueError, match="unknown precision"):
        train(TrainConfig(precision="fp16"), tmp_path)
    with pytest.raises(ValueError, match="ce_rows"):
        train(TrainConfig(ce_rows=-1), tmp_path)
    with pytest.raises(ValueError, match=r"hard_other_group_rate must be within \[0, 1\], got 1.5"):
        train(TrainConfig(hard_other_group_rate=1.5), tmp_path)
    with pytest.raises(ValueError, match="flip_negative_rate must be within"):
        train(TrainConfig(flip_negative_rate=-0.1), tmp_path)


def test_init_from_starts_at_a_saved_model(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool, tmp_path: Path
) -> None:
    be = train_single(
        _cfg(tiny_backbone, tiny_model_config, "be", steps=2), tmp_path / "be", pool=pool, progress=False
    )
    frozen = _cfg(tiny_backbone, tiny_model_config, "ce", steps=2, lr_backbone=0.0, lr_new=0.0)
    ce = train_single(
        replace(frozen, init_from=str(tmp_path / "be")), tmp_path / "ce", pool=pool, progress=False
    )
    assert _same(_weights(ce), _weights(be))  # zero learning rate: nothing moved from the start point
    fresh = train_single(frozen, tmp_path / "fresh", pool=pool, progress=False)
    assert not _same(_weights(fresh), _weights(be))


def test_flip_negatives_mirror_the_positive_along_its_relation(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool
) -> None:
    import torch

    from search_backend.data.shapes import mirror_axis
    from search_backend.training.pairs import cross_pairs

    idx, captions, pixels = _batch(pool)
    flipped = 0
    for rate in (1.0, 0.0):
        cfg = _cfg(tiny_backbone, tiny_model_config, flip_negative_rate=rate)
        pairs = cross_pairs(cfg, np.random.default_rng(5), pool, idx, captions, pixels, None, None)
        neg_captions, neg_pixels = pairs.neg_captions, pairs.neg_pixels
        for i, scene_index in enumerate(idx):
            axis = mirror_axis(pool.scenes[int(scene_index)])
            if neg_captions[i] != captions[i] or axis is None:
                continue  # a wrong-caption row, or a scene without a clean mirror
            mirrored = pixels[i].flip(-1 if axis == "h" else -2)
            assert torch.equal(neg_pixels[i], mirrored) == (rate == 1.0)
            flipped += rate == 1.0
    assert flipped >= 3


def test_contrast_negatives_are_written_in_the_language_of_the_rows_caption(
    tiny_backbone: Path, tiny_model_config: dict[str, int]
) -> None:
    import re
    from importlib import import_module

    from search_backend.data.grammars import caption_function
    from search_backend.model.image import images_to_tensor
    from search_backend.training.pairs import cross_pairs

    langs = ("en", "de", "cs")
    pool = TrainingPool(40, 0, image_size=32, langs=langs)
    idx = pool.sample(np.random.default_rng(3), 24)
    # row r reads its caption in en, de and cs by turns
    captions = [pool.captions[int(i)][5 * (r % 3)] for r, i in enumerate(idx)]
    pixels = images_to_tensor(pool.pixels[idx], 32)
    cfg = _cfg(tiny_backbone, tiny_model_config, text_hard_rate=1.0, image_negative_share=0.0)
    pairs = cross_pairs(cfg, np.random.default_rng(5), pool, idx, captions, pixels, None, None)
    english = {w for c in pool.captions for w in re.split(r"[\s,]+", " ".join(c[:5]))}
    vocabulary = {
        "en": english,
        **{g: import_module(f"search_backend.data.grammars.{g}").vocabulary() for g in langs[1:]},
    }
    contrasts = 0
    for r, i in enumerate(idx):
        if pairs.neg_caption_rows[r] != -1:
            continue  # every swap of this scene gives it back: the drawn negative stays
        contrasts += 1
        lang = langs[r % 3]
        assert pool.caption_lang(int(i), captions[r]) == lang
        words = {w for w in re.split(r"[\s,]+", pairs.neg_captions[r]) if w}
        assert words <= vocabulary[lang], (lang, pairs.neg_captions[r])
        # a caption of another scene: none of this scene's own paraphrases
        own = caption_function(lang)(pool.scenes[int(i)], 50, np.random.default_rng(0))
        assert pairs.neg_captions[r] not in own
    assert contrasts >= 18


def test_swap_negatives_render_the_positive_with_two_attributes_traded(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool
) -> None:
    import torch

    from search_backend.training.pairs import cross_pairs

    idx, captions, pixels = _batch(pool)
    base = _cfg(tiny_backbone, tiny_model_config, flip_negative_rate=1.0)
    drawn = cross_pairs(base, np.random.default_rng(5), pool, idx, captions, pixels, None, None)
    cfg = replace(base, swap_negative_rate=1.0)
    pairs = cross_pairs(cfg, np.random.default_rng(5), pool, idx, captions, pixels, None, None)
    swapped = 0
    for i in range(len(idx)):
        if pairs.neg_captions[i] != captions[i]:  # a wrong-caption row keeps its image
            assert torch.equal(pairs.neg_pixels[i], drawn.neg_pixels[i])
            continue
        swapped += 1
        assert pairs.neg_custom[i]
        assert not torch.equal(pairs.neg_pixels[i], drawn.neg_pixels[i])  # no longer the mirror
        assert not any(torch.equal(pairs.neg_pixels[i], p) for p in pixels)  # a new rendering, not a row
    assert swapped >= 3
    with pytest.raises(ValueError, match="swap_negative_rate must be within"):
        replace(cfg, swap_negative_rate=1.5).validate()
    with pytest.raises(ValueError, match="swap_negative_rate needs the shapes scenes"):
        replace(cfg, flip_negative_rate=0.0, text_hard_rate=0.0, manifest="x.jsonl").validate()


@pytest.mark.parametrize("cross_layers", [0, 1])
def test_a_cross_encoder_trained_alone_trains_its_residual_term(
    tiny_backbone: Path,
    tiny_model_config: dict[str, int],
    pool: TrainingPool,
    tmp_path: Path,
    cross_layers: int,
) -> None:
    """``ce`` with the residual readout: the twin term is part of the cross-encoder's score and no
    bi-encoder loss keeps it, so the cross loss trains it (its projections move). Treated as a
    constant, the shared layers drifted under it unseen: sep's cross half lost its ranking."""
    model_cfg = {**tiny_model_config, "cross_layers": cross_layers, "cross_readout": "residual"}
    cfg = _cfg(tiny_backbone, model_cfg, "ce", steps=3)
    at_init = _weights(train_single(replace(cfg, lr_new=0.0), tmp_path / "init", pool=pool, progress=False))
    trained = _weights(train_single(cfg, tmp_path / "res", pool=pool, progress=False))
    for name in ("text_proj.weight", "image_proj.weight"):
        assert not np.array_equal(at_init[name], trained[name]), name


def test_cls_weight_trains_the_cls_head_on_its_own(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool, tmp_path: Path
) -> None:
    model = {**tiny_model_config, "cross_readout": "cls+pair"}
    cfg = _cfg(tiny_backbone, model, steps=3)
    off = _weights(train_single(cfg, tmp_path / "off", pool=pool, progress=False))
    on = _weights(train_single(replace(cfg, cls_weight=1.0), tmp_path / "on", pool=pool, progress=False))
    assert not np.array_equal(off["cross_head.0.weight"], on["cross_head.0.weight"])
    with pytest.raises(ValueError, match="cls_weight must be >= 0"):
        replace(cfg, cls_weight=-0.5).validate()


def test_freeze_word_embeddings_keeps_the_table_and_trains_the_layers(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool, tmp_path: Path
) -> None:
    init = _weights(JointModel.from_backbone(tiny_backbone))
    table = "backbone.embeddings.word_embeddings.weight"
    layer = "backbone.encoder.layer.0.attention.self.query.weight"
    frozen = _weights(
        train_single(
            _cfg(tiny_backbone, tiny_model_config, freeze_word_embeddings=True),
            tmp_path / "f",
            pool=pool,
            progress=False,
        )
    )
    assert np.array_equal(frozen[table], init[table])
    assert not np.array_equal(frozen[layer], init[layer])
    free = _weights(
        train_single(_cfg(tiny_backbone, tiny_model_config), tmp_path / "t", pool=pool, progress=False)
    )
    assert not np.array_equal(free[table], init[table])  # without the option the table trains


def test_freeze_backbone_layers_keeps_the_lowest_layers_and_trains_the_rest(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool, tmp_path: Path
) -> None:
    init = _weights(JointModel.from_backbone(tiny_backbone))
    cfg = _cfg(tiny_backbone, tiny_model_config, freeze_backbone_layers=1)
    trained = _weights(train_single(cfg, tmp_path / "f", pool=pool, progress=False))
    kept = [k for k in init if k.startswith(("backbone.embeddings.", "backbone.encoder.layer.0."))]
    assert kept and all(np.array_equal(trained[k], init[k]) for k in kept)
    above = "backbone.encoder.layer.1.attention.self.query.weight"
    assert not np.array_equal(trained[above], init[above])
    assert not np.array_equal(trained["image_proj.weight"], init["image_proj.weight"])
    with pytest.raises(ValueError, match="only 2 layers"):
        train_single(replace(cfg, freeze_backbone_layers=3), tmp_path / "x", pool=pool, progress=False)
    with pytest.raises(ValueError, match="freeze_backbone_layers must be >= 0"):
        replace(cfg, freeze_backbone_layers=-1).validate()


@pytest.mark.parametrize("relation_layer", [-1, 0])
def test_the_relation_head_trains(
    tiny_backbone: Path,
    tiny_model_config: dict[str, int],
    pool: TrainingPool,
    tmp_path: Path,
    relation_layer: int,
) -> None:
    model_cfg = {
        **tiny_model_config,
        "cross_layers": 1,
        "cross_attention": 1,
        "relation_head": 8,
        "relation_layer": relation_layer,
    }
    cfg = replace(_cfg(tiny_backbone, tiny_model_config), model=model_cfg, flip_negative_rate=0.5)
    model = train_single(cfg, tmp_path / "r", pool=pool, progress=False)
    score = model.net.state_dict()["relation.score.weight"].numpy()
    assert np.abs(score).max() > 0  # zero at initialisation: the matching loss reached it


def test_train_only_trains_the_named_parameters_and_nothing_else(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool, tmp_path: Path
) -> None:
    model_cfg = {**tiny_model_config, "cross_layers": 1, "cross_attention": 1, "relation_head": 8}
    cfg = replace(_cfg(tiny_backbone, tiny_model_config), model=model_cfg, flip_negative_rate=0.5)
    start = train_single(replace(cfg, steps=1), tmp_path / "a", pool=pool, progress=False)
    before = _weights(start)
    after = _weights(
        train_single(
            replace(cfg, init_from=str(tmp_path / "a"), train_only="relation.", ground_weight=0.5),
            tmp_path / "b",
            pool=pool,
            progress=False,
        )
    )
    moved = {k for k in before if not np.array_equal(before[k], after[k])}
    assert moved and all(k.startswith("relation.") for k in moved), sorted(moved)[:5]
    with pytest.raises(ValueError, match="names no parameter"):
        train_single(
            replace(cfg, init_from=str(tmp_path / "a"), train_only="nothing."),
            tmp_path / "c",
            pool=pool,
            progress=False,
        )


def test_init_from_adds_a_fresh_relation_head_to_a_trained_model(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool, tmp_path: Path
) -> None:
    model_cfg = {**tiny_model_config, "cross_layers": 1, "cross_attention": 1}
    cfg = replace(_cfg(tiny_backbone, tiny_model_config), model=model_cfg, flip_negative_rate=1.0)
    before = _weights(train_single(replace(cfg, steps=1), tmp_path / "a", pool=pool, progress=False))
    assert not any(k.startswith("relation.") for k in before)
    head = replace(
        cfg,
        init_from=str(tmp_path / "a"),
        model={**model_cfg, "relation_head": 8},
        train_only="relation.",
        image_negative_share=1.0,
    )
    grown = train_single(head, tmp_path / "b", pool=pool, progress=False)
    after = _weights(grown)
    added = {k for k in after if k not in before}
    assert added and all(k.startswith("relation.") for k in added)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # the trained model is kept
    assert np.abs(after["relation.score.weight"]).max() > 0  # the new head learnt
    loaded = JointModel.load(tmp_path / "b")
    assert loaded.config.relation_head == 8 and _same(_weights(loaded), after)
    with pytest.raises(ValueError, match=r"patch_size=16: .* was trained with patch_size=8; .* keeps"):
        JointModel.load(tmp_path / "a", grow={**model_cfg, "patch_size": 16})
    with pytest.raises(ValueError, match=r"model\.no_such_field: not a JointConfig field"):
        JointModel.load(tmp_path / "a", grow={"no_such_field": 1})
    assert JointModel.load(tmp_path / "b", grow={"relation_head": 8}).config.relation_head == 8


def test_image_negative_share_sets_how_many_rows_swap_the_image(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool
) -> None:
    from search_backend.training.pairs import cross_lists, cross_pairs

    idx, captions, pixels = _batch(pool)
    rows = np.arange(len(idx))
    for share in (1.0, 0.0):
        cfg = _cfg(tiny_backbone, tiny_model_config, image_negative_share=share)
        pairs = cross_pairs(cfg, np.random.default_rng(5), pool, idx, captions, pixels, None, None)
        kept_caption = np.array([neg == pos for neg, pos in zip(pairs.neg_captions, captions, strict=True)])
        assert kept_caption.all() == (share == 1.0)
        assert (pairs.neg_rows == rows).all() == (share == 0.0)
        _, text, image = cross_lists(
            replace(cfg, ce_negatives=2), np.random.default_rng(5), pool.groups[idx], None
        )
        assert (text[:, 1:] == rows[:, None]).all() == (share == 1.0)  # every list: its caption, wrong images
        assert (image[:, 1:] == rows[:, None]).all() == (share == 0.0)
    with pytest.raises(ValueError, match="image_negative_share"):
        replace(cfg, image_negative_share=1.5).validate()


def test_attend_weight_sharpens_the_cross_attention_on_the_mentioned_objects(
    tiny_backbone: Path, tiny_model_config: dict[str, int], pool: TrainingPool, tmp_path: Path
) -> None:
    import json

    model_cfg = {**tiny_model_config, "cross_layers": 1, "cross_attention": 1}
    base = replace(_cfg(tiny_backbone, tiny_model_config), model=model_cfg, steps=12, log_every=1)
    train_single(replace(base, attend_weight=1.0, lr_new=1e-2), tmp_path / "a", pool=pool, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    attend = [x["attend"] for x in lines if "attend" in x]
    assert len(attend) >= 10 and np.mean(attend[-3:]) < np.mean(attend[:3])  # it learns where to look
    with pytest.raises(ValueError, match="attend_weight supervises the cross-attention blocks"):
        train_single(
            replace(base, attend_weight=1.0, model=tiny_model_config),
            tmp_path / "b",
            pool=pool,
            progress=False,
        )
