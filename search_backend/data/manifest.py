"""Manifest readers: which images (and captions) make up a collection or a data set.

Three formats are understood (see :func:`read_manifest` for the dispatch):

* **JSONL** — one JSON object per line, ``{"image": "<path>", "caption": "<text>"}``; relative
  image paths are taken from the manifest's folder (or ``image_root``); several lines may name
  the same image.  ``line`` is the 1-based line number.
* **Karpathy JSON** — ``dataset_coco.json`` / ``dataset_flickr30k.json``: one record per
  sentence (its ``"raw"`` text), image path ``image_root / filepath / filename``.  ``line`` is
  the 1-based position of the image entry in the ``"images"`` list.
* **Image folder** — every image file under a directory, sorted, without captions.  ``line``
  is the 1-based position in that sorted list.

Readers validate while reading.  Problems with the manifest as a whole, or (with
``strict=True``) a malformed entry, raise :class:`ManifestError` naming the file and line.
Problems with single items (an empty caption, a missing or corrupt image, or a malformed
entry with ``strict=False``) are collected in :attr:`ManifestResult.problems`; the good
records are kept, so one bad item never costs the others.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from search_backend.data.images import MAX_IMAGE_PIXELS, ImageError, check_image_file, load_image
from search_backend.data.text import text_problem

__all__ = [
    "IMAGE_EXTENSIONS",
    "ItemProblem",
    "ManifestError",
    "ManifestRecord",
    "ManifestResult",
    "group_by_image",
    "iter_manifest",
    "read_image_folder",
    "read_jsonl",
    "read_karpathy",
    "read_manifest",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""File suffixes (lower case) that :func:`read_image_folder` treats as images."""

_BOM = b"\xef\xbb\xbf"
_LANG_CODE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")


@dataclass(frozen=True)
class ManifestRecord:
    """One (image, caption) pair, or one image when ``caption`` is ``None``."""

    image: Path | None
    """Resolved absolute path of the image file."""
    caption: str | None
    """Caption text with surrounding whitespace removed; ``None`` for image-folder manifests."""
    image_id: str
    """Stable id of the image: the relative (POSIX) path for JSONL, Karpathy and folders."""
    line: int
    """1-based line (JSONL) or entry number (Karpathy, folder) in the source."""
    group: str | None = None
    """A JSONL line's optional ``"group"`` (a string or an integer): images that belong together,
    e.g. a scene and its hard distractors. Training batches keep a group's images together."""
    lang: str | None = None
    """A JSONL line's optional ``"lang"``: the caption's language code (``"de"``, ``"pt-BR"``, ...);
    indexing stores it in the caption vector's metadata (``--filter lang=de``)."""


@dataclass(frozen=True)
class ItemProblem:
    """Why one item of a manifest was left out."""

    item: str
    """The image id when known, else the manifest path or entry (``images[3]``)."""
    line: int
    """As :attr:`ManifestRecord.line`; 0 when the problem is not tied to one entry."""
    reason: str

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.item}{where}: {self.reason}"


@dataclass
class ManifestResult:
    """The good records of a manifest and the problems with the items that were left out."""

    records: list[ManifestRecord] = field(default_factory=list)
    problems: list[ItemProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no item had a problem."""
        return not self.problems


class ManifestError(ValueError):
    """The manifest as a whole cannot be read, or (in strict mode) an entry is malformed.

    ``str()`` reads ``"<path>:<line>: <reason>"`` (``"<path>: <reason>"`` without a line).
    """

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        # Everything goes into ``args`` so the exception survives pickling.
        super().__init__(str(path), reason, line)
        self.path = str(path)
        self.reason = reason
        self.line = line

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.reason}"
        return f"{self.path}:{self.line}: {self.reason}"


class _EntryError(Exception):
    """A malformed entry; becomes a ManifestError (strict) or an ItemProblem."""

    def __init__(self, reason: str, item: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.item = item


def group_by_image(records: Iterable[ManifestRecord]) -> dict[str, list[ManifestRecord]]:
    """Records grouped by ``image_id``, images in first-seen order, records in input order."""
    groups: dict[str, list[ManifestRecord]] = {}
    for record in records:
        groups.setdefault(record.image_id, []).append(record)
    return groups


# --- JSONL ------------------------------------------------------------------------------------


def read_jsonl(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    strict: bool = True,
    check_images: bool = True,
    validate_images: bool = False,
    require_caption: bool = True,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> ManifestResult:
    """Read a JSONL manifest of ``{"image": path, "caption": text}`` lines.

    Blank lines are skipped; other keys are ignored.  Relative image paths are resolved against
    ``image_root`` (default: the manifest's folder).  With ``require_caption=False`` the
    caption may be missing or ``null`` (image-only collections).

    Malformed lines (invalid JSON, not an object, missing or ill-typed fields) raise
    :class:`ManifestError` naming ``path:line``, or with ``strict=False`` become problems.
    Empty captions, missing image files (``check_images``) and, with ``validate_images``,
    images that fail to decode (each distinct image is decoded once) become problems.
    """
    return _collect(
        _jsonl_items(path, image_root, strict, check_images, validate_images, require_caption, max_pixels)
    )


def _collect(items: Iterable[ManifestRecord | ItemProblem]) -> ManifestResult:
    result = ManifestResult()
    for item in items:
        (result.records if isinstance(item, ManifestRecord) else result.problems).append(item)  # type: ignore[arg-type]
    return result


def _jsonl_items(
    path: str | Path,
    image_root: str | Path | None,
    strict: bool,
    check_images: bool,
    validate_images: bool,
    require_caption: bool,
    max_pixels: int,
) -> Iterator[ManifestRecord | ItemProblem]:
    manifest = Path(path)
    base = _resolve(Path(image_root) if image_root is not None else manifest.parent)
    checker = _ImageChecker(check_images, validate_images, max_pixels)
    for lineno, raw in _iter_lines(manifest):
        if not raw.strip():
            continue
        try:
            image_id, caption, group, lang = _parse_jsonl_line(raw, require_caption)
        except _EntryError as e:
            if strict:
                raise ManifestError(manifest, e.reason, line=lineno) from None
            yield ItemProblem(e.item or str(manifest), lineno, e.reason)
            continue
        if caption is not None:
            caption, reason = _clean_caption(caption)
            if reason is not None:
                yield ItemProblem(image_id, lineno, reason)
                continue
        image = _resolve(base / image_id)
        reason = checker.problem(image)
        if reason is not None:
            yield ItemProblem(image_id, lineno, reason)
            continue
        yield ManifestRecord(image, caption, image_id, lineno, group, lang)


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        fh = path.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        raise ManifestError(path, "file not found") from None
    except IsADirectoryError:
        raise ManifestError(path, "is a directory, not a JSONL file") from None
    except PermissionError:
        raise ManifestError(path, "permission denied") from None
    except OSError as e:
        raise ManifestError(path, f"cannot read file: {e.strerror or e}") from None
    with fh:
        # Binary iteration splits on b"\n" only, so U+2028 etc. inside JSON strings are safe.
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            yield lineno, raw.rstrip(b"\r\n")


def _parse_jsonl_line(raw: bytes, require_caption: bool) -> tuple[str, str | None, str | None, str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _EntryError(f"not valid UTF-8 text (byte {e.start + 1})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _EntryError(f"invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise _EntryError("invalid JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise _EntryError(f"expected a JSON object, got {_json_type(obj)}")
    image_id = _image_field(obj, "image")
    group = obj.get("group")
    if group is not None and (isinstance(group, bool) or not isinstance(group, (str, int))):
        raise _EntryError(f"'group' must be a string or an integer, got {_json_type(group)}", item=image_id)
    group_id = None if group is None else str(group)
    lang = obj.get("lang")
    if lang is not None and (not isinstance(lang, str) or not _LANG_CODE.fullmatch(lang)):
        shown = repr(lang) if isinstance(lang, str) else _json_type(lang)
        raise _EntryError(
            f'\'lang\' must be a language code such as "de" or "pt-BR", got {shown}', item=image_id
        )
    if "caption" not in obj or obj["caption"] is None:
        if require_caption:
            reason = "missing 'caption' field" if "caption" not in obj else "'caption' must be a string"
            raise _EntryError(reason, item=image_id)
        return image_id, None, group_id, lang
    caption = obj["caption"]
    if not isinstance(caption, str):
        raise _EntryError(f"'caption' must be a string, got {_json_type(caption)}", item=image_id)
    return image_id, caption.strip(), group_id, lang


def _image_field(obj: dict[str, Any], key: str) -> str:
    """A non-empty path string from ``obj[key]``, normalised to POSIX form (the image id)."""
    if key not in obj:
        raise _EntryError(f"missing '{key}' field")
    value = obj[key]
    if not isinstance(value, str):
        raise _EntryError(f"'{key}' must be a string, got {_json_type(value)}")
    if not value.strip():
        raise _EntryError(f"'{key}' must not be empty")
    if "\x00" in value:
        raise _EntryError(f"'{key}' contains a NUL character")
    return PurePath(value).as_posix()


# --- Karpathy JSON ----------------------------------------------------------------------------


def read_karpathy(
    path: str | Path,
    image_root: str | Path | None = None,
    *,
    split: str | Iterable[str] | None = None,
    strict: bool = True,
    check_images: bool = True,
    validate_images: bool = False,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> ManifestResult:
    """Read a Karpathy-split JSON file (``dataset_coco.json``, ``dataset_flickr30k.json``).

    One record per sentence (its ``"raw"`` text, else its joined ``"tokens"``); the image is
    ``image_root / filepath / filename`` (``filepath`` is optional; ``image_root`` defaults to
    the JSON file's folder) and its id is ``filepath/filename``.  ``split`` keeps only images
    of that split (or of any of several, e.g. ``("train", "restval")``); a split that no image
    has raises :class:`ManifestError` listing the available ones.

    Malformed entries raise :class:`ManifestError` (or with ``strict=False`` become problems);
    images without sentences, empty captions, missing image files (``check_images``) and
    undecodable images (``validate_images``) become problems.
    """
    manifest = Path(path)
    data = _load_json(manifest)
    root = Path(image_root) if image_root is not None else manifest.parent
    return _read_karpathy_data(
        data,
        manifest,
        root,
        split=split,
        strict=strict,
        check_images=check_images,
        validate_images=validate_images,
        max_pixels=max_pixels,
    )


def _load_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise ManifestError(path, "file not found") from None
    except IsADirectoryError:
        raise ManifestError(path, "is a directory, not a JSON file") from None
    except PermissionError:
        raise ManifestError(path, "permission denied") from None
    except OSError as e:
        raise ManifestError(path, f"cannot read file: {e.strerror or e}") from None
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(path, f"not valid UTF-8 text (byte {e.start + 1})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(path, f"invalid JSON ({e.msg} at column {e.colno})", line=e.lineno) from None
    except RecursionError:
        raise ManifestError(path, "invalid JSON (nested too deeply)") from None


def _is_karpathy(data: Any) -> bool:
    return isinstance(data, dict) and "images" in data


def _read_karpathy_data(
    data: Any,
    manifest: Path,
    image_root: Path,
    **options: Any,
) -> ManifestResult:
    return _collect(_karpathy_iter(data, manifest, image_root, **options))


def _karpathy_iter(
    data: Any,
    manifest: Path,
    image_root: Path,
    *,
    split: str | Iterable[str] | None,
    strict: bool,
    check_images: bool,
    validate_images: bool,
    max_pixels: int,
) -> Iterator[ManifestRecord | ItemProblem]:
    if not _is_karpathy(data) or not isinstance(data["images"], list):
        raise ManifestError(
            manifest, "not a Karpathy-style manifest: expected a JSON object with an 'images' list"
        )
    entries: list[Any] = data["images"]
    checker_args = (check_images, validate_images, max_pixels)
    wanted = _wanted_splits(split)
    if wanted is not None:
        present = {_split_of(e) for e in entries} - {None}
        if not wanted & present:
            available = ", ".join(sorted(s for s in present if s is not None)) or "none"
            raise ManifestError(manifest, f"no images in split {_show_split(split)} (available: {available})")

    return _karpathy_items(entries, manifest, image_root, wanted, strict, checker_args)


def _karpathy_items(
    entries: list[Any],
    manifest: Path,
    image_root: Path,
    wanted: set[str | None] | None,
    strict: bool,
    checker_args: tuple[bool, bool, int],
) -> Iterator[ManifestRecord | ItemProblem]:
    base = _resolve(image_root)
    checker = _ImageChecker(*checker_args)
    for index, entry in enumerate(entries, start=1):
        if wanted is not None and isinstance(entry, dict) and _split_of(entry) not in wanted:
            continue
        where = f"images[{index - 1}]"
        try:
            image_id, captions = _parse_karpathy_entry(entry)
        except _EntryError as e:
            if strict:
                item = f" ({e.item})" if e.item else ""
                raise ManifestError(manifest, f"{where}{item}: {e.reason}") from None
            yield ItemProblem(e.item or where, index, e.reason)
            continue
        if not captions:
            yield ItemProblem(image_id, index, "no captions")
            continue
        image = _resolve(base / image_id)
        reason = checker.problem(image)
        if reason is not None:
            yield ItemProblem(image_id, index, reason)
            continue
        for raw_caption in captions:
            caption, reason = _clean_caption(raw_caption)
            if reason is None:
                yield ManifestRecord(image, caption, image_id, index)
            else:
                yield ItemProblem(image_id, index, reason)


def _split_of(entry: Any) -> str | None:
    value = entry.get("split") if isinstance(entry, dict) else None
    return value if isinstance(value, str) else None


def _wanted_splits(split: str | Iterable[str] | None) -> set[str | None] | None:
    if split is None:
        return None
    if isinstance(split, str):
        return {split}
    return set(split)


def _show_split(split: str | Iterable[str] | None) -> str:
    if isinstance(split, str) or split is None:
        return repr(split)
    return "/".join(repr(s) for s in split)


def _parse_karpathy_entry(entry: Any) -> tuple[str, list[str]]:
    if not isinstance(entry, dict):
        raise _EntryError(f"expected a JSON object, got {_json_type(entry)}")
    filename = _image_field(entry, "filename")
    filepath = entry.get("filepath")
    if filepath is not None and not isinstance(filepath, str):
        raise _EntryError(f"'filepath' must be a string, got {_json_type(filepath)}", item=filename)
    image_id = (PurePosixPath(filepath) / filename).as_posix() if filepath else filename
    if "sentences" not in entry:
        raise _EntryError("missing 'sentences' field", item=image_id)
    sentences = entry["sentences"]
    if not isinstance(sentences, list):
        raise _EntryError(f"'sentences' must be a list, got {_json_type(sentences)}", item=image_id)
    captions = [_sentence_text(s, j, image_id) for j, s in enumerate(sentences)]
    return image_id, captions


def _sentence_text(sentence: Any, j: int, image_id: str) -> str:
    if not isinstance(sentence, dict):
        raise _EntryError(
            f"sentences[{j}]: expected a JSON object, got {_json_type(sentence)}", item=image_id
        )
    raw = sentence.get("raw")
    if raw is None:
        tokens = sentence.get("tokens")
        if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
            return " ".join(tokens).strip()
        raise _EntryError(f"sentences[{j}]: missing 'raw' field", item=image_id)
    if not isinstance(raw, str):
        raise _EntryError(f"sentences[{j}]: 'raw' must be a string, got {_json_type(raw)}", item=image_id)
    return raw.strip()


# --- image folder -----------------------------------------------------------------------------


def read_image_folder(
    root: str | Path,
    *,
    recursive: bool = True,
    check_images: bool = True,
    validate_images: bool = False,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> ManifestResult:
    """Every image file (by extension, see :data:`IMAGE_EXTENSIONS`) under ``root``, sorted.

    Captions are ``None``; the image id is the POSIX path relative to ``root``.  Hidden files
    and folders (names starting with ``"."``) are skipped, and symbolic links to folders are
    not followed.  Empty files or broken links (``check_images``), undecodable images
    (``validate_images``) and unreadable sub-folders become problems.  An empty folder gives an
    empty result.
    """
    folder = Path(root)
    try:
        st = folder.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ManifestError(folder, "directory not found") from None
    except OSError as e:
        raise ManifestError(folder, f"cannot read directory: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ManifestError(folder, "not a directory")

    base = _resolve(folder)
    result = ManifestResult()
    relative: list[str] = []
    if recursive:

        def on_error(e: OSError) -> None:
            result.problems.append(
                ItemProblem(str(e.filename), 0, f"cannot list directory: {e.strerror or e}")
            )

        for dirpath, dirnames, filenames in os.walk(base, onerror=on_error):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = PurePosixPath(Path(dirpath).relative_to(base).as_posix())
            relative.extend((rel_dir / f).as_posix() for f in filenames if _is_image_name(f))
    else:
        try:
            children = list(os.scandir(base))
        except OSError as e:
            raise ManifestError(folder, f"cannot read directory: {e.strerror or e}") from None
        relative.extend(c.name for c in children if _is_image_name(c.name) and not _is_dir(c))

    checker = _ImageChecker(check_images, validate_images, max_pixels)
    for index, image_id in enumerate(sorted(relative), start=1):
        image = base / image_id
        reason = checker.problem(image)
        if reason is not None:
            result.problems.append(ItemProblem(image_id, index, reason))
            continue
        result.records.append(ManifestRecord(image, None, image_id, index))
    return result


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


# --- dispatch ---------------------------------------------------------------------------------


def read_manifest(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    split: str | Iterable[str] | None = None,
    strict: bool = True,
    check_images: bool = True,
    validate_images: bool = False,
    recursive: bool = True,
    require_caption: bool = True,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> ManifestResult:
    """Read any supported manifest, chosen by what ``path`` is.

    * a directory: :func:`read_image_folder` (``image_root`` and ``strict`` do not apply);
    * ``*.jsonl``: :func:`read_jsonl` (``image_root`` overrides the manifest's folder;
      ``require_caption`` applies only here);
    * ``*.json`` whose top level has an ``"images"`` key: :func:`read_karpathy`
      (``image_root`` defaults to the JSON file's folder).

    ``split`` only applies to Karpathy JSON; passing it for another format raises
    :class:`ManifestError` rather than silently returning every item.  Anything else raises
    :class:`ManifestError` saying which formats are understood.  :func:`iter_manifest` yields
    the same items one at a time (a large manifest's records never need to be held at once).
    """
    return _collect(
        iter_manifest(
            path,
            image_root=image_root,
            split=split,
            strict=strict,
            check_images=check_images,
            validate_images=validate_images,
            recursive=recursive,
            require_caption=require_caption,
            max_pixels=max_pixels,
        )
    )


def iter_manifest(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    split: str | Iterable[str] | None = None,
    strict: bool = True,
    check_images: bool = True,
    validate_images: bool = False,
    recursive: bool = True,
    require_caption: bool = True,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Iterator[ManifestRecord | ItemProblem]:
    """Read any supported manifest, chosen by what ``path`` is, one item at a time.

    * a directory: :func:`read_image_folder` (``image_root`` and ``strict`` do not apply);
    * ``*.jsonl``: :func:`read_jsonl` (``image_root`` overrides the manifest's folder;
      ``require_caption`` applies only here);
    * ``*.json`` whose top level has an ``"images"`` key: :func:`read_karpathy`
      (``image_root`` defaults to the JSON file's folder).

    ``split`` only applies to Karpathy JSON; passing it for another format raises
    :class:`ManifestError` rather than silently returning every item.  Anything else raises
    :class:`ManifestError` saying which formats are understood.
    """
    manifest = Path(path)
    try:
        st = manifest.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ManifestError(manifest, "file not found") from None
    except OSError as e:
        raise ManifestError(manifest, f"cannot read: {e.strerror or e}") from None

    is_dir = stat.S_ISDIR(st.st_mode)
    suffix = manifest.suffix.lower()
    if split is not None and (is_dir or suffix == ".jsonl"):
        kind = "an image folder" if is_dir else "a JSONL manifest"
        raise ManifestError(
            manifest, f"split {_show_split(split)} given, but only Karpathy JSON has splits, not {kind}"
        )

    if is_dir:
        folder = read_image_folder(
            manifest,
            recursive=recursive,
            check_images=check_images,
            validate_images=validate_images,
            max_pixels=max_pixels,
        )
        return iter([*folder.records, *folder.problems])
    if suffix == ".jsonl":
        return _jsonl_items(
            manifest, image_root, strict, check_images, validate_images, require_caption, max_pixels
        )
    if suffix == ".json":
        data = _load_json(manifest)
        if not _is_karpathy(data):
            raise ManifestError(
                manifest,
                "unrecognised JSON manifest: expected a Karpathy-style object with an 'images' list "
                "(for one image/caption pair per line use a .jsonl file)",
            )
        return _karpathy_iter(
            data,
            manifest,
            Path(image_root) if image_root is not None else manifest.parent,
            split=split,
            strict=strict,
            check_images=check_images,
            validate_images=validate_images,
            max_pixels=max_pixels,
        )
    shown = f"'{manifest.suffix}'" if manifest.suffix else "without a suffix"
    raise ManifestError(
        manifest,
        f"unsupported manifest format (file {shown}): expected a .jsonl file, "
        "a Karpathy-style .json file or a folder of images",
    )


# --- shared helpers ---------------------------------------------------------------------------


def _clean_caption(caption: str) -> tuple[str | None, str | None]:
    """(normalised caption, None) or (None, reason): see :mod:`search_backend.data.text`."""
    clean, reason = text_problem(caption)
    if reason is None:
        return clean, None
    return None, "empty caption" if reason.startswith("empty") else f"caption: {reason}"


class _ImageChecker:
    """Checks each distinct image path once and remembers the verdict."""

    def __init__(self, check: bool, validate: bool, max_pixels: int) -> None:
        self._check = check
        self._validate = validate
        self._max_pixels = max_pixels
        self._seen: dict[Path, str | None] = {}

    def problem(self, image: Path) -> str | None:
        if not (self._check or self._validate):
            return None
        if image not in self._seen:
            self._seen[image] = self._verdict(image)
        return self._seen[image]

    def _verdict(self, image: Path) -> str | None:
        try:
            if self._validate:
                load_image(image, max_pixels=self._max_pixels).close()
            else:
                check_image_file(image)
        except ImageError as e:
            return e.reason
        return None


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # e.g. a symlink loop
        return Path(os.path.abspath(path))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
