from __future__ import annotations

import numpy as np
import pytest
import torch

from search_backend.training import bi_loss, infonce_loss, matching_loss, sample_negatives, vsepp_loss
from search_backend.training.losses import ce_loss, ranking_loss


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def test_infonce_prefers_aligned_pairs() -> None:
    torch.manual_seed(0)
    t = _unit(torch.randn(8, 16))
    scale = torch.tensor(float(np.log(20.0)))
    aligned = infonce_loss(t, t, scale)
    shuffled = infonce_loss(t, t[torch.randperm(8)], scale)
    assert aligned < shuffled
    assert aligned < np.log(8)


def test_vsepp_is_zero_only_when_margin_holds() -> None:
    eye = torch.eye(4)
    assert float(vsepp_loss(eye, eye, margin=0.1)) == 0.0
    near = _unit(eye + 3.0)  # all pairs similar: the hardest negative violates the margin
    assert float(vsepp_loss(near, near, margin=0.1)) > 0.0


def test_bi_loss_dispatch_and_unknown_name() -> None:
    t = _unit(torch.randn(4, 8))
    s = torch.tensor(0.0)
    assert torch.isclose(bi_loss("vsepp", t, t, s), vsepp_loss(t, t))
    with pytest.raises(ValueError, match="unknown bi-encoder loss"):
        bi_loss("triplet", t, t, s)


def test_matching_loss_rewards_separating_positives() -> None:
    good = matching_loss(torch.tensor([5.0, 5.0]), torch.tensor([-5.0, -5.0]))
    bad = matching_loss(torch.tensor([-5.0, -5.0]), torch.tensor([5.0, 5.0]))
    assert good < 0.01 < 5 < bad


def test_ranking_loss_only_asks_each_positive_to_beat_its_own_negative() -> None:
    # every positive is above its own negative, though not above the other row's negative
    pos, neg = torch.tensor([6.0, -4.0]), torch.tensor([4.0, -6.0])
    assert float(ranking_loss(pos, neg)) < 0.13
    assert float(matching_loss(pos, neg)) > 1.0  # calibration across rows is what BCE adds
    assert float(ranking_loss(neg, pos)) > 2.0
    assert torch.isclose(ce_loss("rank", pos, neg), ranking_loss(pos, neg))
    assert torch.isclose(ce_loss("bce", pos, neg), matching_loss(pos, neg))
    with pytest.raises(ValueError, match="unknown cross-encoder loss"):
        ce_loss("hinge", pos, neg)


def test_hard_negatives_follow_the_bi_encoder() -> None:
    sim = np.array([[1.0, 0.9, 0.1], [0.2, 1.0, 0.3], [0.8, 0.1, 1.0]])
    neg_img, neg_txt = sample_negatives(sim, np.arange(3), np.random.default_rng(0), hard_rate=1.0)
    assert neg_img.tolist() == [1, 2, 0]  # per caption: best other image
    assert neg_txt.tolist() == [2, 0, 1]  # per image: best other caption


def test_other_group_mining_skips_the_twin_for_the_best_partial_match() -> None:
    sim = np.array(
        [
            [1.0, 0.9, 0.5, 0.1],
            [0.9, 1.0, 0.1, 0.6],
            [0.2, 0.4, 1.0, 0.8],
            [0.3, 0.7, 0.9, 1.0],
        ]
    )
    groups = np.array([0, 0, 1, 1])  # rows 0/1 and 2/3 are distractor twins
    rng = np.random.default_rng(0)
    twin_img, twin_txt = sample_negatives(sim, groups, rng, hard_rate=1.0)
    assert twin_img.tolist() == [1, 0, 3, 2] and twin_txt.tolist() == [1, 0, 3, 2]
    neg_img, neg_txt = sample_negatives(sim, groups, rng, hard_rate=1.0, other_group_rate=1.0)
    assert neg_img.tolist() == [2, 3, 1, 1]  # per caption: best image outside its group
    assert neg_txt.tolist() == [3, 3, 0, 1]  # per image: best caption outside its group
    lone = sample_negatives(sim[:2, :2], np.array([0, 0]), rng, hard_rate=1.0, other_group_rate=1.0)
    assert lone[0].tolist() == [1, 0]  # no other group in the batch: the twin after all


def test_random_negatives_never_pick_the_positive() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        neg_img, neg_txt = sample_negatives(None, np.arange(5), rng, hard_rate=0.0)
        assert (neg_img != np.arange(5)).all() and (neg_txt != np.arange(5)).all()


def test_without_bi_encoder_distractor_twins_are_the_hard_negatives() -> None:
    groups = np.array([0, 0, 1, 2, 2])
    neg_img, _ = sample_negatives(None, groups, np.random.default_rng(0), hard_rate=1.0)
    assert neg_img[0] == 1 and neg_img[1] == 0 and neg_img[3] == 4 and neg_img[4] == 3
    assert neg_img[2] != 2


def test_a_batch_needs_two_pairs() -> None:
    with pytest.raises(ValueError, match="at least two"):
        sample_negatives(None, np.array([0]), np.random.default_rng(0), 0.5)
