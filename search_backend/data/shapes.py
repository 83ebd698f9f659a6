"""``shapes``: a synthetic compositional image-caption dataset.

Each scene holds 2-3 objects (shape, colour, size) placed so that a spatial relation between them
is unambiguous. Every image gets several paraphrased captions that name all objects and relations.
About half of the scenes come with a *hard distractor* in the same split: the same objects with two
colours, shapes or sizes swapped, or the relation flipped. A bag-of-features model sees the same
colours, shapes and sizes in both and cannot tell them apart; a model that binds attributes to
objects and reads relations (cross-attention) can.

Splits are assigned by a hash of the scene's *bag* of attributes (which a distractor shares), so
a test scene's combination of attributes never occurs in the training split, and distractor pairs
never straddle two splits. Everything is deterministic under ``seed``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from search_backend.config import check_choice

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "COLOURS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SIZE_WORDS",
    "SPLITS",
    "Scene",
    "ShapeObject",
    "ShapesItem",
    "attribute_swaps",
    "attribute_twin",
    "contrast_caption",
    "generate_scenes",
    "make_shapes",
    "mirror_axis",
    "render_scene",
    "scene_captions",
    "write_shapes",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 185, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (165, 60, 205),
    "cyan": (40, 205, 215),
}
SIZES: dict[str, float] = {"small": 0.17, "large": 0.30}
"""Object diameter as a fraction of the canvas side."""
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_AXIS = {"left of": "h", "right of": "h", "above": "v", "below": "v"}
SPLITS: dict[str, tuple[int, int]] = {"train": (0, 80), "val": (80, 90), "test": (90, 100)}
"""Split -> range of the bag hash (mod 100) it owns."""

_REL_WORDS = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
"""Size -> the words captions use for it."""
_BACKGROUND = (38, 38, 42)


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str
    cx: float = 0.0
    """Centre, as a fraction of the canvas side (0 = left / top)."""
    cy: float = 0.0

    @property
    def attrs(self) -> tuple[str, str, str]:
        return (self.size, self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    relations: tuple[tuple[int, str, int], ...]
    """(i, relation, j): object i is <relation> object j."""

    def key(self) -> tuple[tuple[tuple[str, str, str], str, tuple[str, str, str]], ...]:
        """Canonical description: two scenes with the same key have the same captions."""
        facts = []
        for i, rel, j in self.relations:
            a, b = self.objects[i].attrs, self.objects[j].attrs
            if rel in ("right of", "below"):
                a, b, rel = b, a, _INVERSE[rel]
            facts.append((a, rel, b))
        return tuple(sorted(facts))

    def bag(self) -> str:
        """Order-free bag of attributes; shared by a scene and its distractors."""
        shapes = sorted(o.shape for o in self.objects)
        colours = sorted(o.colour for o in self.objects)
        sizes = sorted(o.size for o in self.objects)
        axes = sorted(_AXIS[r] for _, r, _ in self.relations)
        return "|".join([",".join(shapes), ",".join(colours), ",".join(sizes), ",".join(axes)])

    def split(self) -> str:
        bucket = int(hashlib.sha1(self.bag().encode()).hexdigest(), 16) % 100
        for name, (lo, hi) in SPLITS.items():
            if lo <= bucket < hi:
                return name
        raise AssertionError(bucket)  # pragma: no cover - SPLITS covers 0..99

    def to_json(self) -> dict[str, object]:
        return {
            "objects": [
                {
                    "shape": o.shape,
                    "colour": o.colour,
                    "size": o.size,
                    "cx": round(o.cx, 4),
                    "cy": round(o.cy, 4),
                }
                for o in self.objects
            ],
            "relations": [list(r) for r in self.relations],
        }


@dataclass(frozen=True)
class ShapesItem:
    """One rendered scene with its captions. ``group`` links a scene to its distractor(s)."""

    image: Image.Image
    captions: list[str]
    scene: Scene
    group: int
    langs: tuple[str, ...] = ()
    """The language of each caption (parallel to ``captions``; empty: all English)."""

    @property
    def caption_langs(self) -> tuple[str, ...]:
        """The language of each caption: ``langs``, or all English when it is empty."""
        return self.langs or ("en",) * len(self.captions)

    def captions_in(self, lang: str) -> list[str]:
        """This scene's captions in ``lang`` (translations of the other languages' captions)."""
        return [c for c, t in zip(self.captions, self.caption_langs, strict=True) if t == lang]


# ----------------------------------------------------------------------------------------------
# scene sampling


def _random_object(rng: np.random.Generator) -> ShapeObject:
    return ShapeObject(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=list(COLOURS)[rng.integers(len(COLOURS))],
        size=list(SIZES)[rng.integers(len(SIZES))],
    )


def _sample_attrs(rng: np.random.Generator) -> Scene:
    n = 2 if rng.random() < 0.65 else 3
    objs = [_random_object(rng) for _ in range(n)]
    while len({o.attrs for o in objs}) < n:  # every object distinct, so captions are unambiguous
        objs = [_random_object(rng) for _ in range(n)]
    rel1 = RELATIONS[rng.integers(4)]
    relations: list[tuple[int, str, int]] = [(0, rel1, 1)]
    if n == 3:
        # the third object relates to object 1 along the other axis
        other = ("above", "below") if _AXIS[rel1] == "h" else ("left of", "right of")
        relations.append((2, other[rng.integers(2)], 1))
    return Scene(tuple(objs), tuple(relations))


def _radius(obj: ShapeObject) -> float:
    return SIZES[obj.size] / 2


def _place(scene: Scene, rng: np.random.Generator, tries: int = 200) -> Scene | None:
    """Give every object a centre so that each stated relation holds clearly and nothing overlaps."""
    for _ in range(tries):
        pos: dict[int, tuple[float, float]] = {}
        b = scene.objects[1]
        rb = _radius(b)
        pos[1] = (rng.uniform(rb + 0.03, 1 - rb - 0.03), rng.uniform(rb + 0.03, 1 - rb - 0.03))
        ok = True
        for i, rel, j in scene.relations:
            ri, rj = _radius(scene.objects[i]), _radius(scene.objects[j])
            xj, yj = pos[j]
            gap = rng.uniform(0.04, 0.22)
            along = ri + rj + gap
            across = rng.uniform(-0.08, 0.08)
            if rel == "left of":
                xi, yi = xj - along, yj + across
            elif rel == "right of":
                xi, yi = xj + along, yj + across
            elif rel == "above":
                xi, yi = xj + across, yj - along
            else:
                xi, yi = xj + across, yj + along
            if not (ri + 0.02 <= xi <= 1 - ri - 0.02 and ri + 0.02 <= yi <= 1 - ri - 0.02):
                ok = False
                break
            pos[i] = (xi, yi)
        if not ok:
            continue
        # no two objects may overlap
        idx = list(pos)
        for a in range(len(idx)):
            for c in range(a + 1, len(idx)):
                (xa, ya), (xc, yc) = pos[idx[a]], pos[idx[c]]
                ra, rc = _radius(scene.objects[idx[a]]), _radius(scene.objects[idx[c]])
                if (xa - xc) ** 2 + (ya - yc) ** 2 < (ra + rc + 0.02) ** 2:
                    ok = False
        if ok:
            objs = tuple(replace(o, cx=pos[k][0], cy=pos[k][1]) for k, o in enumerate(scene.objects))
            return replace(scene, objects=objs)
    return None


def _distractor(scene: Scene, rng: np.random.Generator) -> Scene | None:
    """Same bag of attributes, different meaning: swap two colours/shapes/sizes or flip a relation."""
    kinds = ["colour", "shape", "size", "relation"]
    rng.shuffle(kinds)
    n = len(scene.objects)
    for kind in kinds:
        if kind == "relation":
            k = int(rng.integers(len(scene.relations)))
            rels = list(scene.relations)
            i, rel, j = rels[k]
            rels[k] = (i, _INVERSE[rel], j)
            cand = Scene(scene.objects, tuple(rels))
        else:
            a, c = (int(x) for x in rng.choice(n, size=2, replace=False))
            swapped = _swapped(scene, kind, a, c)
            if swapped is None:
                continue
            cand = swapped
        if cand.key() != scene.key():
            return cand
    return None


def _swapped(scene: Scene, kind: str, a: int, c: int) -> Scene | None:
    """``scene`` with objects ``a`` and ``c`` trading their ``kind`` (colour, shape or size), in place;
    ``None`` when they share it or the swap would leave two objects alike."""
    objs = list(scene.objects)
    va, vc = getattr(objs[a], kind), getattr(objs[c], kind)
    if va == vc:
        return None
    objs[a], objs[c] = replace(objs[a], **{kind: vc}), replace(objs[c], **{kind: va})
    if len({o.attrs for o in objs}) < len(objs):
        return None
    return Scene(tuple(objs), scene.relations)


def attribute_swaps(scene: Scene) -> list[tuple[str, int, int, Scene]]:
    """Every ``(kind, a, c, twin)``: objects ``a < c`` of ``scene`` trade their ``kind`` (colour,
    shape or size) and give ``twin``, a different scene with the same layout and bag of attributes
    (the swaps behind the split's colour / shape / size distractors), kind by kind."""
    n = len(scene.objects)
    return [
        (kind, a, c, twin)
        for kind in ("colour", "shape", "size")
        for a in range(n)
        for c in range(a + 1, n)
        if (twin := _swapped(scene, kind, a, c)) is not None and twin.key() != scene.key()
    ]


def attribute_twin(scene: Scene, rng: np.random.Generator) -> Scene | None:
    """One of :func:`attribute_swaps`' twins, drawn with ``rng``; ``None`` if no swap changes the
    scene. Rendered, it is a hard image negative for ``scene``'s captions that differs from the
    truth in binding alone."""
    options = attribute_swaps(scene)
    return options[int(rng.integers(len(options)))][3] if options else None


def generate_scenes(
    split: str, size: int, seed: int, *, distractor_rate: float = 0.5
) -> list[tuple[Scene, int]]:
    """``size`` placed scenes of ``split`` with distinct keys, as (scene, group id) pairs."""
    check_choice("split", split, SPLITS)
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    rng = np.random.default_rng([seed, list(SPLITS).index(split)])
    seen: set[object] = set()
    out: list[tuple[Scene, int]] = []
    group = 0
    attempts = 0
    while len(out) < size:
        attempts += 1
        if attempts > 200 * size + 10_000:
            raise RuntimeError(f"could not draw {size} distinct {split} scenes (got {len(out)})")
        base = _sample_attrs(rng)
        if base.split() != split or base.key() in seen:
            continue
        placed = _place(base, rng)
        if placed is None:
            continue
        seen.add(placed.key())
        out.append((placed, group))
        if len(out) < size and rng.random() < distractor_rate:
            d = _distractor(placed, rng)
            if d is not None and d.key() not in seen:
                d_placed = _place(d, rng)
                if d_placed is not None:
                    seen.add(d_placed.key())
                    out.append((d_placed, group))
        group += 1
    return out


# ----------------------------------------------------------------------------------------------
# captions


def _phrase(obj: ShapeObject, rng: np.random.Generator) -> str:
    words = SIZE_WORDS[obj.size]
    return f"{words[rng.integers(len(words))]} {obj.colour} {obj.shape}"


def _rel(rel: str, rng: np.random.Generator) -> str:
    words = _REL_WORDS[rel]
    return words[rng.integers(len(words))]


def _two_object_caption(
    a: ShapeObject, rel: str, b: ShapeObject, template: int, rng: np.random.Generator
) -> str:
    pa, pb = _phrase(a, rng), _phrase(b, rng)
    if template == 0:
        return f"a {pa} {_rel(rel, rng)} a {pb}"
    if template == 1:
        return f"a {pb} {_rel(_INVERSE[rel], rng)} a {pa}"
    if template == 2:
        return f"there is a {pa} {_rel(rel, rng)} a {pb}"
    if template == 3:
        return f"a {pa} is placed {_rel(rel, rng)} a {pb}"
    if template == 4:
        return f"the {pb} is {_rel(_INVERSE[rel], rng)} the {pa}"
    return f"{pa} {_rel(rel, rng)} {pb}"


def scene_captions(scene: Scene, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct paraphrases that each state every object and relation of ``scene``."""
    captions: list[str] = []
    templates = list(rng.permutation(6))
    tries = 0
    while len(captions) < n and tries < 50:
        t = int(templates[tries % len(templates)])
        tries += 1
        i, rel, j = scene.relations[0]
        first = _two_object_caption(scene.objects[i], rel, scene.objects[j], t, rng)
        if len(scene.relations) > 1:
            k, rel2, m = scene.relations[1]
            c, ref = scene.objects[k], scene.objects[m]
            short = [(o.colour, o.shape) for o in scene.objects].count((ref.colour, ref.shape)) == 1
            ref_name = f"{ref.colour} {ref.shape}" if short else _phrase(ref, rng)
            if rng.random() < 0.5:
                second = f"a {_phrase(c, rng)} is {_rel(rel2, rng)} the {ref_name}"
            else:
                second = f"the {ref_name} is {_rel(_INVERSE[rel2], rng)} a {_phrase(c, rng)}"
            caption = f"{first}, and {second}"
        else:
            caption = first
        if caption not in captions:
            captions.append(caption)
    return captions


def mirror_axis(scene: Scene) -> str | None:
    """The axis (``"h"``: left-right, ``"v"``: up-down) along which the mirrored image of ``scene``
    falsifies its first relation and nothing else gives the mirroring away; ``None`` if none.

    Every shape is left-right symmetric, so a left-right mirror is always clean; triangles point
    up, so an up-down mirror is only clean without a triangle. A mirrored image is a hard negative
    for the scene's own captions that differs from the truth in layout alone.
    """
    axis = _AXIS[scene.relations[0][1]]
    if axis == "v" and any(o.shape == "triangle" for o in scene.objects):
        return None
    return axis


def contrast_caption(scene: Scene, rng: np.random.Generator, lang: str = "en") -> str | None:
    """A caption of a *different* scene built from the same words: a hard text negative.

    Either the two objects of a relation trade places (``A left of B`` -> ``B left of A``) or two
    objects trade colours. Word order / binding is the only difference, so a model must read
    structure to tell it from a true caption (NegCLIP-style). ``None`` if every swap gives back an
    equivalent scene. ``lang``: the language of the caption (its grammar writes it).
    """
    from dataclasses import replace

    from search_backend.data.grammars import caption_function

    options: list[Scene] = []
    for i, _rel, j in scene.relations:
        objs = list(scene.objects)
        a, b = objs[i], objs[j]
        objs[i] = replace(a, shape=b.shape, colour=b.colour, size=b.size)
        objs[j] = replace(b, shape=a.shape, colour=a.colour, size=a.size)
        options.append(replace(scene, objects=tuple(objs)))
        objs = list(scene.objects)
        objs[i], objs[j] = replace(a, colour=b.colour), replace(b, colour=a.colour)
        options.append(replace(scene, objects=tuple(objs)))
    options = [o for o in options if o.key() != scene.key()]
    if not options:
        return None
    chosen = options[int(rng.integers(len(options)))]
    return caption_function(lang)(chosen, 1, rng)[0]


# ----------------------------------------------------------------------------------------------
# rendering


def render_scene(scene: Scene, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Draw ``scene`` on a noisy dark canvas (4x supersampled, then downscaled for smooth edges)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    ss = 4
    side = image_size * ss
    canvas = PILImage.new("RGB", (side, side), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        cx, cy, r = obj.cx * side, obj.cy * side, _radius(obj) * side
        colour = tuple(int(np.clip(c + rng.integers(-18, 19), 0, 255)) for c in COLOURS[obj.colour])
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif obj.shape == "square":
            h = r * 0.85
            draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=colour)
        elif obj.shape == "triangle":
            draw.polygon(
                [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)], fill=colour
            )
        else:  # diamond
            draw.polygon([(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)], fill=colour)
    small = canvas.resize((image_size, image_size), PILImage.Resampling.BOX)
    arr = np.asarray(small, dtype=np.int16)
    noise = rng.integers(-8, 9, size=arr.shape, dtype=np.int16)
    return PILImage.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8), "RGB")


def make_shapes(
    split: str,
    size: int,
    seed: int,
    *,
    image_size: int = 64,
    captions_per_image: int = 5,
    distractor_rate: float = 0.5,
    langs: str | Sequence[str] = ("en",),
) -> Iterator[ShapesItem]:
    """Yield ``size`` rendered scenes of ``split`` with their captions, deterministically.

    ``langs`` (e.g. ``("en", "de")``, ``"fr"`` or ``"all"``): the languages whose captions each item
    carries, ``captions_per_image`` per language, in that order (``item.langs`` tags each one). The
    scenes, images and English captions do not depend on ``langs``; each other language draws its
    paraphrases from a random stream of its own, so a scene's captions in one language are the same
    whichever other languages are asked for.
    """
    from search_backend.data.grammars import caption_function, lang_seed, parse_langs

    chosen = parse_langs(langs)
    scenes = generate_scenes(split, size, seed, distractor_rate=distractor_rate)
    split_no = list(SPLITS).index(split)
    rng = np.random.default_rng([seed, split_no, 1])
    others = {
        lang: (caption_function(lang), np.random.default_rng([seed, split_no, 2, lang_seed(lang)]))
        for lang in chosen
        if lang != "en"
    }
    for scene, group in scenes:
        english = scene_captions(scene, captions_per_image, rng)  # always drawn: the images depend on it
        image = render_scene(scene, image_size, rng)
        captions: list[str] = []
        tags: list[str] = []
        for lang in chosen:
            if lang == "en":
                these = english
            else:
                fn, lang_rng = others[lang]
                these = fn(scene, captions_per_image, lang_rng)
            captions += these
            tags += [lang] * len(these)
        yield ShapesItem(image, captions, scene, group, tuple(tags))


def write_shapes(
    out: str | Path,
    split: str,
    size: int,
    seed: int,
    *,
    image_size: int = 64,
    captions_per_image: int = 5,
    lang: str = "en",
) -> Path:
    """Write PNG images and a manifest (one line per caption) under ``out``; return the manifest.

    ``lang``: ``en`` writes ``<split>.jsonl`` (as before languages existed); another language
    ``<split>.<lang>.jsonl``, and ``all`` ``<split>.all.jsonl`` with every language's captions; those
    lines carry a ``"lang"`` field. The images are the same for every language (one folder serves all).
    """
    from search_backend.data.grammars import LANGS, check_lang

    langs = LANGS if lang == "all" else (check_lang(lang),)
    out = Path(out)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    manifest = out / (f"{split}.jsonl" if lang == "en" else f"{split}.{lang}.jsonl")
    tmp = manifest.with_suffix(".jsonl.tmp")
    items = make_shapes(
        split, size, seed, image_size=image_size, captions_per_image=captions_per_image, langs=langs
    )
    with tmp.open("w") as fh:
        for n, item in enumerate(items):
            rel = f"images/{split}_{seed}_{n:06d}.png"
            item.image.save(out / rel)
            for caption, tag in zip(item.captions, item.langs, strict=True):
                line: dict[str, object] = {"image": rel, "caption": caption}
                if lang != "en":
                    line["lang"] = tag
                line["group"] = item.group
                line["scene"] = item.scene.to_json()
                fh.write(json.dumps(line, ensure_ascii=lang == "en") + "\n")
    tmp.replace(manifest)
    return manifest
