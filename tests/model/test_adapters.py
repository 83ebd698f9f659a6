"""Adapters over local Hugging Face checkpoints, exercised with tiny random models built here."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import pytest
from PIL import Image

from search_backend.model.adapters import (
    AdapterModel,
    BlipMatcher,
    ClipDualEncoder,
    MissingCapabilityError,
)
from search_backend.model.base import (
    CONFIG_NAME,
    ModelLoadError,
    RetrievalModel,
    read_model_config,
    write_model_config,
)

WORDS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "a", "an", "the", "photo", "of", "red", "green", "blue", "yellow", "square", "circle",
    "triangle", "on", "in", "white", "black", "background", "small", "big", "and", "with",
]  # fmt: skip
TEXTS = [
    "a red square",
    "a photo of a big blue circle on a white background",
    "green triangle",
    "the small yellow square and a black circle with a red triangle",
    "unknownword circle",
]
TEXT_LIMIT = 16  # max_position_embeddings of the tiny text towers
IMG = 32


def _tokenizer(max_len: int) -> Any:
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}, model_max_length=max_len)


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(40, 50), (32, 32), (64, 20), (33, 47), (50, 50)]
    ims = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    ims[3] = ims[3].convert("L")  # grey-scale input must work too
    return ims


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """The models are tiny: extra intra-op threads only cost time, badly so on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return _images()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tok = _tokenizer(TEXT_LIMIT)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(WORDS),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": TEXT_LIMIT,
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.cls_token_id,
            "eos_token_id": tok.sep_token_id,  # CLIP pools at the first eos token
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMG,
            "patch_size": 8,
        },
        projection_dim=24,
    )
    torch.manual_seed(0)
    model = CLIPModel(config)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMG}, crop_size={"height": IMG, "width": IMG}
    )
    out = tmp_path_factory.mktemp("clip")
    model.save_pretrained(out)
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessorPil, BlipProcessor

    tok = _tokenizer(TEXT_LIMIT)
    config = BlipConfig(
        text_config={
            "vocab_size": len(WORDS),
            "hidden_size": 32,
            "encoder_hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": TEXT_LIMIT,
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.cls_token_id,
            "sep_token_id": tok.sep_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMG,
            "patch_size": 8,
        },
        projection_dim=16,
        image_text_hidden_size=16,
    )
    torch.manual_seed(1)
    model = BlipForImageTextRetrieval(config)
    # Random init gives a near-zero ITM head; widen it so scores differ visibly between pairs.
    with torch.no_grad():
        model.itm_head.weight.normal_(0.0, 1.0)
    image_processor = BlipImageProcessorPil(size={"height": IMG, "width": IMG})
    out = tmp_path_factory.mktemp("blip")
    model.save_pretrained(out)
    BlipProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def clip(clip_dir: Path) -> ClipDualEncoder:
    return ClipDualEncoder.from_pretrained(clip_dir, batch_size=8)


@pytest.fixture(scope="module")
def blip(blip_dir: Path) -> BlipMatcher:
    return BlipMatcher.from_pretrained(blip_dir, batch_size=8)


def _unit_rows(x: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------------- ClipDualEncoder


def test_clip_encode_shapes_dtype_norms(clip: ClipDualEncoder, images: list[Image.Image]) -> None:
    t = clip.encode_texts(TEXTS)
    v = clip.encode_images(images)
    assert t.shape == (len(TEXTS), 24) and v.shape == (len(images), 24)
    assert t.dtype == np.float32 and v.dtype == np.float32
    assert clip.embedding_dim == 24
    _unit_rows(t)
    _unit_rows(v)
    assert not np.allclose(t[0], t[1])  # different captions, different vectors


def test_clip_matches_hf_features_computed_directly(
    clip_dir: Path, clip: ClipDualEncoder, images: list[Image.Image]
) -> None:
    import torch
    from transformers import AutoProcessor, CLIPModel

    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(clip_dir, local_files_only=True)
    with torch.inference_mode():
        tin = processor.tokenizer([TEXTS[1]], return_tensors="pt")
        tf = model.get_text_features(input_ids=tin["input_ids"], attention_mask=tin["attention_mask"])
        tf = tf if isinstance(tf, torch.Tensor) else tf.pooler_output
        iin = processor.image_processor(images=[images[0].convert("RGB")], return_tensors="pt")
        vf = model.get_image_features(pixel_values=iin["pixel_values"])
        vf = vf if isinstance(vf, torch.Tensor) else vf.pooler_output
    expected_t = torch.nn.functional.normalize(tf, dim=-1).numpy()
    expected_v = torch.nn.functional.normalize(vf, dim=-1).numpy()
    np.testing.assert_allclose(clip.encode_texts([TEXTS[1]]), expected_t, atol=1e-6)
    np.testing.assert_allclose(clip.encode_images([images[0]]), expected_v, atol=1e-6)


def test_clip_deterministic_and_batch_split(clip: ClipDualEncoder, images: list[Image.Image]) -> None:
    t1 = clip.encode_texts(TEXTS)
    np.testing.assert_array_equal(t1, clip.encode_texts(TEXTS))
    np.testing.assert_allclose(clip.encode_texts(TEXTS, batch_size=2), t1, atol=1e-5)
    np.testing.assert_allclose(clip.encode_texts(TEXTS, batch_size=1), t1, atol=1e-5)
    v1 = clip.encode_images(images)
    np.testing.assert_array_equal(v1, clip.encode_images(images))
    np.testing.assert_allclose(clip.encode_images(images, batch_size=2), v1, atol=1e-5)


def test_clip_long_text_is_truncated(clip: ClipDualEncoder) -> None:
    long = " ".join(["red square"] * 40)  # far past the 16 positions of the tiny text tower
    out = clip.encode_texts([long])
    assert out.shape == (1, 24)
    _unit_rows(out)


def test_clip_empty_and_bad_input(clip: ClipDualEncoder) -> None:
    assert clip.encode_texts([]).shape == (0, 24)
    assert clip.encode_images([]).dtype == np.float32
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        clip.encode_texts(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"images\[0\]"):
        clip.encode_images(["not an image"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size"):
        clip.encode_texts(["x"], batch_size=0)


def test_clip_from_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        ClipDualEncoder.from_pretrained(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        ClipDualEncoder.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------- BlipMatcher


def test_blip_score_matches_hf_itm_logits(
    blip_dir: Path, blip: BlipMatcher, images: list[Image.Image]
) -> None:
    import torch
    from transformers import AutoProcessor, BlipForImageTextRetrieval

    model = BlipForImageTextRetrieval.from_pretrained(blip_dir, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(blip_dir, local_files_only=True)
    rgb = [im.convert("RGB") for im in images]
    expected = []
    with torch.inference_mode():
        for text, image in zip(TEXTS, rgb, strict=True):
            inp = processor(images=[image], text=[text], return_tensors="pt")
            logits = model(
                input_ids=inp["input_ids"],
                attention_mask=inp["attention_mask"],
                pixel_values=inp["pixel_values"],
                use_itm_head=True,
            ).itm_score
            expected.append(float(logits[0, 1] - logits[0, 0]))
    scores = blip.score(TEXTS, images, batch_size=1)
    assert scores.shape == (len(TEXTS),) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, np.array(expected, dtype=np.float32), atol=1e-5)
    assert np.ptp(scores) > 1e-3  # pairs get different scores


def test_blip_deterministic_and_batch_split(blip: BlipMatcher, images: list[Image.Image]) -> None:
    s = blip.score(TEXTS, images)
    np.testing.assert_array_equal(s, blip.score(TEXTS, images))
    np.testing.assert_allclose(blip.score(TEXTS, images, batch_size=2), s, atol=1e-5)
    np.testing.assert_allclose(blip.score(TEXTS, images, batch_size=1), s, atol=1e-5)


def test_blip_bad_input(blip: BlipMatcher, images: list[Image.Image]) -> None:
    assert blip.score([], []).shape == (0,)
    with pytest.raises(ValueError, match="one image per text"):
        blip.score(TEXTS[:2], images[:3])


def test_blip_rejects_checkpoint_without_itm_head(clip_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="image-text matching"):
        BlipMatcher.from_pretrained(clip_dir)


# ---------------------------------------------------------------------------------------- AdapterModel


def test_adapter_round_trip(
    tmp_path: Path, clip_dir: Path, blip_dir: Path, images: list[Image.Image]
) -> None:
    model = AdapterModel.from_checkpoints(clip_dir, blip_dir, batch_size=2)
    assert isinstance(model, RetrievalModel)
    before = (model.encode_texts(TEXTS), model.encode_images(images), model.score(TEXTS, images))

    out = tmp_path / "saved"
    model.save(out)
    cfg = json.loads((out / CONFIG_NAME).read_text())
    assert cfg["type"] == "adapter"
    assert cfg["bi"]["kind"] == "clip_dual_encoder" and cfg["cross"]["kind"] == "blip_matcher"
    for side in ("bi", "cross"):
        assert (out / side / "config.json").is_file()
        assert (out / side / "model.safetensors").is_file()

    loaded = AdapterModel.load(out)
    after = (loaded.encode_texts(TEXTS), loaded.encode_images(images), loaded.score(TEXTS, images))
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.batch_size == 2


def test_adapter_missing_side(tmp_path: Path, clip: ClipDualEncoder, blip: BlipMatcher) -> None:
    im = _images()[:1]
    bi_only = AdapterModel(bi=clip)
    assert bi_only.encode_texts(["a red square"]).shape == (1, 24)
    with pytest.raises(NotImplementedError, match="image-text matching checkpoint"):
        bi_only.score(["a red square"], im)

    cross_only = AdapterModel(cross=blip)
    assert cross_only.score(["a red square"], im).shape == (1,)
    with pytest.raises(MissingCapabilityError, match="dual-encoder checkpoint"):
        cross_only.encode_texts(["a red square"])
    with pytest.raises(MissingCapabilityError, match="dual-encoder checkpoint"):
        cross_only.encode_images(im)

    cross_only.save(tmp_path / "c")
    assert json.loads((tmp_path / "c" / CONFIG_NAME).read_text())["bi"] is None
    restored = AdapterModel.load(tmp_path / "c")
    assert restored.bi is None
    np.testing.assert_array_equal(
        restored.score(["a red square"], im), cross_only.score(["a red square"], im)
    )

    with pytest.raises(ValueError, match="both"):
        AdapterModel()


class _OwnModel:
    """Stands in for our own retrieval model: a bi-encoder that saves an xmr_model.json."""

    def __init__(self, dim: int = 4) -> None:
        self.dim = dim

    def encode_texts(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        out = np.ones((len(texts), self.dim), dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_images(self, images: list[Image.Image], batch_size: int | None = None) -> np.ndarray:
        return self.encode_texts([""] * len(images))

    def save(self, path: str | Path) -> None:
        write_model_config(Path(path), {"type": "own-test", "dim": self.dim})

    @classmethod
    def load(cls, path: str | Path) -> _OwnModel:
        return cls(int(read_model_config(Path(path))["dim"]))


def test_adapter_with_own_bi_encoder(
    tmp_path: Path, blip: BlipMatcher, images: list[Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    from search_backend.model import loading

    model = AdapterModel(bi=_OwnModel(6), cross=blip)
    assert model.encode_texts(["x", "y"]).shape == (2, 6)
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    assert cfg["bi"] == {"kind": "xmr", "dir": "bi", "type": "own-test"}

    real_load_model = loading.load_model

    def load_model(spec: str | Path, settings: Any = None) -> Any:
        if read_model_config(Path(spec))["type"] == "own-test":
            return _OwnModel.load(spec)
        return real_load_model(spec, settings)

    monkeypatch.setattr(loading, "load_model", load_model)
    loaded = AdapterModel.load(tmp_path / "m")
    assert isinstance(loaded.bi, _OwnModel) and loaded.bi.dim == 6
    np.testing.assert_array_equal(loaded.score(TEXTS, images), model.score(TEXTS, images))


def test_adapter_rejects_unsaveable_part_and_wrong_type(tmp_path: Path) -> None:
    class NoSave:
        def encode_texts(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
            return np.zeros((len(texts), 2), dtype=np.float32)

        def encode_images(self, images: list[Image.Image], batch_size: int | None = None) -> np.ndarray:
            return np.zeros((len(images), 2), dtype=np.float32)

    with pytest.raises(TypeError, match="cannot be saved"):
        AdapterModel(bi=NoSave()).save(tmp_path / "x")
    assert not (tmp_path / "x" / CONFIG_NAME).exists()  # a failed save leaves nothing loadable
    with pytest.raises(TypeError, match="score"):
        AdapterModel(cross=NoSave())  # type: ignore[arg-type]

    other = tmp_path / "other"
    other.mkdir()
    (other / CONFIG_NAME).write_text(json.dumps({"type": "joint"}))
    with pytest.raises(ModelLoadError, match="not 'adapter'"):
        AdapterModel.load(other)


def test_cli_adapt_then_eval_uses_the_checkpoints(clip_dir: Path, blip_dir: Path, tmp_path: Path) -> None:
    """A user's local CLIP + BLIP checkpoints become a model folder that `xmr eval` runs end to end."""
    import json

    from click.testing import CliRunner

    from cli.main import xmr

    runner = CliRunner()
    out = runner.invoke(
        xmr, ["adapt", "--bi", str(clip_dir), "--cross", str(blip_dir), "--out", str(tmp_path / "m")]
    )
    assert out.exit_code == 0, out.output
    res = runner.invoke(
        xmr, ["eval", "--model", str(tmp_path / "m"), "--size", "4", "--queries", "2", "--k", "2", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout.strip().splitlines()[-1])["results"]) == {"be", "ce", "rr"}
    missing = runner.invoke(xmr, ["adapt", "--out", str(tmp_path / "x")])
    assert missing.exit_code != 0 and "--bi" in missing.output
