from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search_backend.data.shapes import make_shapes
from search_backend.model import JointModel, ModelLoadError, load_model
from search_backend.model.base import CONFIG_NAME, RetrievalModel


def _items(n: int = 4, size: int = 32):  # type: ignore[no-untyped-def]
    return list(make_shapes("test", n, 0, image_size=size))


def test_contract_shapes_dtype_and_norms(tiny_model: JointModel) -> None:
    items = _items()
    texts = [it.captions[0] for it in items]
    images = [it.image for it in items]
    assert isinstance(tiny_model, RetrievalModel)
    t = tiny_model.encode_texts(texts, batch_size=3)
    v = tiny_model.encode_images(images, batch_size=3)
    s = tiny_model.score(texts, images, batch_size=3)
    assert t.shape == (4, 16) and v.shape == (4, 16) and s.shape == (4,)
    assert t.dtype == v.dtype == s.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_batch_size_does_not_change_results(tiny_model: JointModel) -> None:
    items = _items(5)
    texts = [it.captions[1] for it in items]
    images = [it.image for it in items]
    np.testing.assert_allclose(
        tiny_model.encode_texts(texts, 1), tiny_model.encode_texts(texts, 5), atol=1e-5
    )
    np.testing.assert_allclose(
        tiny_model.encode_images(images, 2), tiny_model.encode_images(images, 5), atol=1e-5
    )
    np.testing.assert_allclose(
        tiny_model.score(texts, images, 2), tiny_model.score(texts, images, 5), atol=1e-5
    )


def test_bf16_inference_keeps_float32_outputs_close_to_fp32(tiny_model: JointModel) -> None:
    items = _items(6)
    texts = [it.captions[0] for it in items]
    images = [it.image for it in items]
    assert tiny_model.precision == "fp32"
    ref = (tiny_model.encode_texts(texts), tiny_model.encode_images(images), tiny_model.score(texts, images))
    tiny_model.precision = "bf16"
    got = (tiny_model.encode_texts(texts), tiny_model.encode_images(images), tiny_model.score(texts, images))
    for r, g in zip(ref, got, strict=True):
        assert g.dtype == np.float32 and g.shape == r.shape
    # projections and normalisation run in float32: unit vectors exactly, not to bf16's 3 digits
    np.testing.assert_allclose(np.linalg.norm(got[0], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got[1], axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(ref[0], got[0])  # the transformer really ran in bfloat16
    assert np.min(np.sum(ref[0] * got[0], axis=1)) > 0.99
    assert np.min(np.sum(ref[1] * got[1], axis=1)) > 0.99
    np.testing.assert_allclose(got[2], ref[2], atol=0.05 * max(1.0, float(np.abs(ref[2]).max())))


def test_any_image_size_is_resized(tiny_model: JointModel) -> None:
    big = Image.new("RGB", (97, 41), (200, 10, 10))
    grey = Image.new("L", (16, 16), 128)
    assert tiny_model.encode_images([big, grey]).shape == (2, 16)


def test_cross_mode_reads_the_image_and_its_layout(tiny_model: JointModel) -> None:
    item = _items(1)[0]
    flipped = item.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    text = item.captions[0]
    s = tiny_model.score([text, text], [item.image, flipped])
    assert abs(float(s[0] - s[1])) > 1e-6  # 2-D positions make a mirrored scene a different input
    v = tiny_model.encode_images([item.image, flipped])
    assert not np.allclose(v[0], v[1])


def test_save_load_round_trip_is_exact(tiny_model: JointModel, tmp_path: Path) -> None:
    items = _items(3)
    texts = [it.captions[0] for it in items]
    images = [it.image for it in items]
    tiny_model.save(tmp_path / "m")
    assert (tmp_path / "m" / CONFIG_NAME).is_file()
    assert (tmp_path / "m" / "backbone" / "config.json").is_file()
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, JointModel)
    np.testing.assert_array_equal(loaded.encode_texts(texts), tiny_model.encode_texts(texts))
    np.testing.assert_array_equal(loaded.encode_images(images), tiny_model.encode_images(images))
    np.testing.assert_array_equal(loaded.score(texts, images), tiny_model.score(texts, images))


def test_bad_inputs_have_clear_errors(tiny_model: JointModel, tmp_path: Path) -> None:
    img = _items(1)[0].image
    with pytest.raises(ValueError, match="empty caption"):
        tiny_model.encode_texts(["a red circle", "  "])
    with pytest.raises(ValueError, match="as many texts as images"):
        tiny_model.score(["a", "b"], [img])
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a saved xmodal-search model"):
        load_model(tmp_path / "empty")
    tiny_model.save(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"missing model\.safetensors"):
        JointModel.load(tmp_path / "m")


def test_default_backbone_starts_from_pretrained_minilm() -> None:
    """At initialisation the text tower is exactly the sentence-transformers MiniLM embedding."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from search_backend.model.backbone import default_backbone_dir

    model = JointModel.from_backbone(None)
    texts = ["a small red circle left of a big blue square", "two triangles"]
    ours = model.encode_texts(texts)
    path = default_backbone_dir()
    ref_model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = ref_model(**tok).last_hidden_state
    mask = tok["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert model.net.backbone.config.num_hidden_layers == 6


def test_pair_readout_adds_a_scaled_cosine_and_round_trips(
    tiny_backbone: Path, tiny_model_config: dict[str, int], tmp_path: Path
) -> None:
    import torch

    from search_backend.model.joint import JointConfig

    torch.manual_seed(0)
    cls_only = JointModel.from_backbone(tiny_backbone, JointConfig(**tiny_model_config))
    pair = JointModel.from_backbone(tiny_backbone, JointConfig(**tiny_model_config, cross_readout="cls+pair"))
    missing = pair.net.load_state_dict(cls_only.net.state_dict(), strict=False).missing_keys
    assert missing == ["pair_scale"]
    items = _items(3)
    texts = [it.captions[0] for it in items]
    images = [it.image for it in items]
    with torch.no_grad():
        pair.net.pair_scale.fill_(0.0)
    np.testing.assert_allclose(pair.score(texts, images), cls_only.score(texts, images), atol=1e-6)
    with torch.no_grad():
        pair.net.pair_scale.fill_(3.0)
    delta = pair.score(texts, images) - cls_only.score(texts, images)
    assert np.all(np.abs(delta) <= 3.0 + 1e-5) and np.any(np.abs(delta) > 1e-3)
    cls, pair_term = pair.score_parts(texts, images)
    np.testing.assert_allclose(cls, cls_only.score(texts, images), atol=1e-6)  # the shared CLS term
    np.testing.assert_allclose(pair_term, delta, atol=1e-5)
    assert not cls_only.score_parts(texts, images)[1].any()  # a cls-only readout has no pair term
    pair.save(tmp_path / "p")
    loaded = load_model(tmp_path / "p")
    assert isinstance(loaded, JointModel) and loaded.config.cross_readout == "cls+pair"
    np.testing.assert_array_equal(loaded.score(texts, images), pair.score(texts, images))
    with pytest.raises(ValueError, match="unknown cross_readout 'max'"):
        JointModel.from_backbone(tiny_backbone, JointConfig(**tiny_model_config, cross_readout="max"))


def test_sincos_positions_start_ordered_and_split_rows_from_columns(
    tiny_backbone: Path, tiny_model_config: dict[str, int]
) -> None:
    import torch

    from search_backend.model.joint import JointConfig

    cfg = JointConfig(**{**tiny_model_config, "image_size": 64}, position_init="sincos")
    net = JointModel.from_backbone(tiny_backbone, cfg).net
    rows, cols = net.row_embed.detach(), net.col_embed.detach()
    half = rows.shape[1] // 2
    assert torch.all(rows[:, half:] == 0) and torch.all(cols[:, :half] == 0)
    from search_backend.model.joint import _sincos_grid

    table, _ = _sincos_grid(8, 384)  # the default model's grid and hidden size
    sims = torch.nn.functional.cosine_similarity(table[:1], table, dim=-1)
    assert torch.all(sims[:-1] > sims[1:])  # farther rows are less alike: order is readable
    with pytest.raises(ValueError, match="unknown position_init 'grid'"):
        JointModel.from_backbone(tiny_backbone, JointConfig(**tiny_model_config, position_init="grid"))


def test_half_precision_folders_are_half_the_size_and_load_as_float32(
    tiny_model: JointModel, tmp_path: Path
) -> None:
    items = _items(3)
    texts, images = [it.captions[0] for it in items], [it.image for it in items]
    tiny_model.save(tmp_path / "full")
    tiny_model.save(tmp_path / "half", half=True)
    full, half = (tmp_path / "full" / "model.safetensors"), (tmp_path / "half" / "model.safetensors")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = JointModel.load(tmp_path / "half")
    assert all(
        p.dtype.is_floating_point is False or str(p.dtype) == "torch.float32" for p in loaded.net.parameters()
    )
    np.testing.assert_allclose(loaded.encode_texts(texts), tiny_model.encode_texts(texts), atol=2e-3)
    np.testing.assert_allclose(loaded.score(texts, images), tiny_model.score(texts, images), atol=5e-2)
    assert next(tiny_model.net.parameters()).dtype.is_floating_point  # the original stays float32


def test_the_shipped_model_is_the_default_only_without_a_trained_one(
    tiny_model: JointModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from search_backend.config import Settings
    from search_backend.model import resolve_model_path, shipped

    folder = tmp_path / "pkg" / "shipped"
    monkeypatch.setattr(shipped, "_FOLDER", folder)
    tiny_model.save(tmp_path / "trained")
    shipped.ship(tmp_path / "trained", command="xmr train --steps 1")
    info = json.loads((folder / "SHIPPED.json").read_text())
    assert info["command"] == "xmr train --steps 1" and len(info["weights_sha256"]) == 64
    settings = Settings(home=tmp_path / "home")
    assert resolve_model_path("default", settings) == folder
    with pytest.raises(ModelLoadError, match="no default model"):
        resolve_model_path("default", settings.with_overrides(shipped_model=False))
    tiny_model.save(settings.default_model_dir)
    assert resolve_model_path("default", settings) == settings.default_model_dir
