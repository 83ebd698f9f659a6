"""Multilingual shapes captions: every language's grammar, and the manifests they go into."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from search_backend.data.grammars import LANGS, caption_function, parse_langs
from search_backend.data.grammars import cs as cs_grammar
from search_backend.data.grammars import de as de_grammar
from search_backend.data.grammars import fr as fr_grammar
from search_backend.data.shapes import Scene, ShapeObject, generate_scenes, make_shapes, write_shapes

FOREIGN = ("de", "fr", "cs")
GRAMMARS = {"de": de_grammar, "fr": fr_grammar, "cs": cs_grammar}
COGNATES = {"de": set(), "fr": {"triangle", "cyan", "a", "on"}, "cs": {"a"}}
"""Words a caption may share with the English ones: spelled the same in both languages ("il y a",
"on voit" are French; "a" is Czech for "and")."""

# Independent of the grammar modules: which words name which relation, per language.
SIDE = {
    "de": {"links": "left of", "rechts": "right of", "über": "above", "oberhalb": "above",
           "unter": "below", "unterhalb": "below"},
    "fr": {"gauche": "left of", "droite": "right of", "au-dessus": "above", "au-dessous": "below",
           "dessous": "below", "sous": "below"},
    "cs": {"vlevo": "left of", "nalevo": "left of", "vpravo": "right of", "napravo": "right of",
           "nad": "above", "pod": "below"},
}  # fmt: skip
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# Every form of each shape's noun(s), per language (for locating an object in a caption).
SHAPE_FORMS = {
    "de": {"circle": {"Kreis", "Kreises"}, "square": {"Quadrat", "Quadrats"},
           "triangle": {"Dreieck", "Dreiecks"}, "diamond": {"Raute", "Rhombus"}},
    "fr": {"circle": {"cercle", "rond"}, "square": {"carré"}, "triangle": {"triangle"},
           "diamond": {"losange"}},
    "cs": {"circle": {"kruh", "kruhu", "kruhem", "kolečko", "kolečka", "kolečkem"},
           "square": {"čtverec", "čtverce", "čtvercem"},
           "triangle": {"trojúhelník", "trojúhelníku", "trojúhelníkem"},
           "diamond": {"kosočtverec", "kosočtverce", "kosočtvercem"}},
}  # fmt: skip
COLOUR_STEMS = {
    "de": {"red": ("rot",), "green": ("grün",), "blue": ("blau",), "yellow": ("gelb",),
           "purple": ("violett",), "cyan": ("türkisfarben",)},
    "fr": {"red": ("rouge",), "green": ("vert",), "blue": ("bleu",), "yellow": ("jaune",),
           "purple": ("violet",), "cyan": ("cyan", "turquoise")},
    "cs": {"red": ("červen",), "green": ("zelen",), "blue": ("modr",), "yellow": ("žlut",),
           "purple": ("fialov",), "cyan": ("azurov", "tyrkysov")},
}  # fmt: skip


def _words(caption: str) -> list[str]:
    return [w for w in re.split(r"[\s,']+", caption) if w]


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [s for split in ("train", "test") for s, _ in generate_scenes(split, 150, 7)]


@pytest.fixture(scope="module")
def captions(scenes: list[Scene]) -> dict[str, list[list[str]]]:
    out = {}
    for lang in LANGS:
        rng = np.random.default_rng(3)
        fn = caption_function(lang)
        out[lang] = [fn(s, 5, rng) for s in scenes]
    return out


@pytest.mark.parametrize("lang", FOREIGN)
def test_five_distinct_clean_captions_per_scene(lang: str, captions: dict[str, list[list[str]]]) -> None:
    for caps in captions[lang]:
        assert len(caps) == 5 and len(set(caps)) == 5, caps
        for c in caps:
            assert c == c.strip() and "  " not in c and c, c
    everything = [c for caps in captions[lang] for c in caps]
    assert len(set(everything)) > 0.9 * len(everything)  # scenes are told apart by their captions


@pytest.mark.parametrize("lang", FOREIGN)
def test_no_untranslated_words(lang: str, captions: dict[str, list[list[str]]]) -> None:
    english = {w for caps in captions["en"] for c in caps for w in _words(c)}
    vocab = GRAMMARS[lang].vocabulary()
    used = {w for caps in captions[lang] for c in caps for w in _words(c)}
    assert used <= vocab, sorted(used - vocab)
    assert used & english <= COGNATES[lang], sorted(used & english)


@pytest.mark.parametrize("lang", FOREIGN)
def test_relation_words_point_the_right_way(lang: str, scenes: list[Scene]) -> None:
    """In two-object scenes with different shapes, "A <rel> B" or "B <inverse rel> A", never flipped."""
    rng = np.random.default_rng(0)
    fn = caption_function(lang)
    checked = 0
    for scene in scenes:
        if len(scene.objects) != 2 or scene.objects[0].shape == scene.objects[1].shape:
            continue
        i, rel, j = scene.relations[0]
        a, b = scene.objects[i], scene.objects[j]
        for caption in fn(scene, 5, rng):
            words = _words(caption)
            pos_a = [k for k, w in enumerate(words) if w in SHAPE_FORMS[lang][a.shape]]
            pos_b = [k for k, w in enumerate(words) if w in SHAPE_FORMS[lang][b.shape]]
            sides = [(k, SIDE[lang][w]) for k, w in enumerate(words) if w in SIDE[lang]]
            assert len(pos_a) == 1 and len(pos_b) == 1 and len(sides) == 1, caption
            (k, said) = sides[0]
            if said == rel:
                assert pos_a[0] < k < pos_b[0], caption
            else:
                assert said == INVERSE[rel] and pos_b[0] < k < pos_a[0], caption
            checked += 1
    assert checked > 200


@pytest.mark.parametrize("lang", FOREIGN)
def test_colours_bind_to_their_nouns(
    lang: str, scenes: list[Scene], captions: dict[str, list[list[str]]]
) -> None:
    """The colour word next to each noun (before it in de / cs, after it in fr) is that object's."""
    for scene, caps in zip(scenes, captions[lang], strict=True):
        for caption in caps:
            words = _words(caption)
            for k, w in enumerate(words):
                shape = next((s for s, forms in SHAPE_FORMS[lang].items() if w in forms), None)
                if shape is None:
                    continue
                colour_word = words[k + 1] if lang == "fr" else words[k - 1]
                colours = {c for c, stems in COLOUR_STEMS[lang].items() if colour_word.startswith(stems)}
                assert len(colours) == 1, (caption, w)
                assert any(o.shape == shape and o.colour in colours for o in scene.objects), caption


def test_german_agreement(captions: dict[str, list[list[str]]]) -> None:
    adj = r"(?:[a-zäöüß]+ )?[a-zäöüß]+"  # size? colour (lower case; nouns are capitalised)
    masc, neut, fem = r"(?:Kreis|Rhombus)", r"(?:Quadrat|Dreieck)", r"Raute"
    rules = [  # (pattern, what the adjectives before the noun must end in)
        (rf"\b(?:ein|eines) ({adj}) (?:{masc}|{neut})s?\b", ("er", "es", "en")),
        (rf"\beine ({adj}) {fem}\b", ("e",)),
        (rf"\b(?:einem|einer|dem|vom|des) ({adj}) [A-Z]\w+\b", ("en",)),
        (rf"\b(?:die|das) ({adj}) [A-Z]\w+\b", ("e",)),  # nominative (accusative is never definite)
        (rf"\bder ({adj}) {masc}\b", ("e",)),  # masculine nominative
        (rf"\bder ({adj}) {fem}\b", ("en",)),  # feminine dative / genitive
    ]
    seen = 0
    for caps in captions["de"]:
        for c in caps:
            assert not re.search(r"\bvon dem\b", c), c  # contracted to "vom"
            assert not re.search(rf"\bein \w+e {masc}\b|\beine \w+ {masc}\b", c), c
            assert not re.search(rf"\bein (?:\w+ )?\w+er {neut}\b", c), c  # neuter takes -es
            assert not re.search(rf"\bes gibt ein(?:e)? (?:\w+ )?\w+er {masc}\b", c), c  # accusative
            for m in re.finditer(rf"\bes gibt einen ({adj}) {masc}\b", c):
                assert all(w.endswith("en") for w in m.group(1).split()), c
            for m in re.finditer(rf"\b(?:oberhalb|unterhalb) (?:eines|des) {adj} ({masc}|{neut})s?\w*", c):
                assert m.group(0).endswith(("Kreises", "Quadrats", "Dreiecks", "Rhombus")), c
            for pattern, endings in rules:
                for m in re.finditer(pattern, c):
                    assert all(w.endswith(endings) for w in m.group(1).split()), (c, m.group(0))
                    seen += 1
    assert seen > 1000


def test_german_exact_captions() -> None:
    scene = Scene(
        (ShapeObject("circle", "red", "small"), ShapeObject("square", "blue", "large")), ((0, "above", 1),)
    )
    expected = set()
    for above, below in (("über einem", "unter einem"), ("oberhalb eines", "unterhalb eines")):
        a = "ein kleiner roter Kreis"
        b_dat = "großen blauen Quadrat" if "einem" in above else "großen blauen Quadrats"
        a_dat = "kleinen roten Kreis" if "einem" in below else "kleinen roten Kreises"
        expected |= {
            f"{a} {above} {b_dat}",
            f"ein großes blaues Quadrat {below} {a_dat}",
            f"es gibt einen kleinen roten Kreis {above} {b_dat}",
            f"{a} befindet sich {above} {b_dat}",
        }
    expected |= {
        "das große blaue Quadrat ist unter dem kleinen roten Kreis",
        "das große blaue Quadrat ist unterhalb des kleinen roten Kreises",
        "kleiner roter Kreis über großem blauem Quadrat",
        "kleiner roter Kreis oberhalb von großem blauem Quadrat",
    }
    got = {c for seed in range(40) for c in de_grammar.scene_captions(scene, 5, np.random.default_rng(seed))}
    assert got == expected, sorted(got ^ expected)


def test_french_word_order_and_agreement(captions: dict[str, list[list[str]]]) -> None:
    for caps in captions["fr"]:
        for c in caps:
            # size before the noun, colour after it; masculine nouns only, so no feminine forms
            assert re.search(
                r"\b(?:un|le|du|d'un) (?:petit|grand|gros) (?:cercle|rond|carré|triangle|losange) \w+", c
            )
            assert not re.search(
                r"\b(?:petite|grande|grosse|verte|bleue|violette|placée|une|la [a-z]+ (?:cercle))\b", c
            ), c
            assert not re.search(r"\bde (?:le|un)\b", c), c  # du, d'un
            assert not re.search(r"\bà (?:la )?(?:gauche|droite) (?:un|le)\b", c), c


def test_french_exact_captions() -> None:
    scene = Scene(
        (ShapeObject("square", "red", "small"), ShapeObject("triangle", "green", "small")),
        ((0, "left of", 1),),
    )
    expected = set()
    for left, right in (("à gauche", "à droite"), ("à la gauche", "à la droite")):
        expected |= {
            f"un petit carré rouge {left} d'un petit triangle vert",
            f"un petit triangle vert {right} d'un petit carré rouge",
            f"il y a un petit carré rouge {left} d'un petit triangle vert",
            f"un petit carré rouge est placé {left} d'un petit triangle vert",
            f"le petit triangle vert est {right} du petit carré rouge",
            f"on voit un petit carré rouge {left} d'un petit triangle vert",
        }
    got = {c for seed in range(40) for c in fr_grammar.scene_captions(scene, 5, np.random.default_rng(seed))}
    assert got == expected, sorted(got ^ expected)


def test_czech_cases_and_agreement(captions: dict[str, list[list[str]]]) -> None:
    masc_nom = r"(?:kruh|čtverec|trojúhelník|kosočtverec)"
    stems = ("mal", "velk", *(x for v in COLOUR_STEMS["cs"].values() for x in v))
    for caps in captions["cs"]:
        for c in caps:
            assert ", a " not in c, c  # no comma before the conjunction
            for m in re.finditer(r"\bod ((?:\w+ )?\w+) (\w+)", c):  # genitive after "od"
                assert all(w.endswith("ého") for w in m.group(1).split()), c
                assert m.group(2) in {"kruhu", "kolečka", "čtverce", "trojúhelníku", "kosočtverce"}, c
            for m in re.finditer(r"\b(?:nad|pod) ((?:\w+ )?\w+) (\w+)", c):  # instrumental
                assert all(w.endswith("ým") for w in m.group(1).split()), c
                assert m.group(2).endswith("em"), c
            words = _words(c)
            for k, w in enumerate(words):  # nominative: the size / colour words before the noun agree
                if w in {"kruh", "čtverec", "trojúhelník", "kosočtverec", "kolečko"}:
                    adjectives = [x for x in words[max(0, k - 2) : k] if x.startswith(stems)]
                    assert adjectives and words[k - 1] in adjectives, c
                    assert all(x.endswith("é" if w == "kolečko" else "ý") for x in adjectives), c
            assert not re.search(rf"{masc_nom} je umístěno|kolečko je umístěn\b", c), c


def test_czech_exact_captions() -> None:
    scene = Scene(
        (ShapeObject("square", "red", "small"), ShapeObject("triangle", "green", "large")), ((0, "above", 1),)
    )
    expected = {
        "malý červený čtverec nad velkým zeleným trojúhelníkem",
        "velký zelený trojúhelník pod malým červeným čtvercem",
        "na obrázku je malý červený čtverec nad velkým zeleným trojúhelníkem",
        "malý červený čtverec je umístěn nad velkým zeleným trojúhelníkem",
        "velký zelený trojúhelník je pod malým červeným čtvercem",
        "malý červený čtverec se nachází nad velkým zeleným trojúhelníkem",
    }
    got = {c for seed in range(10) for c in cs_grammar.scene_captions(scene, 5, np.random.default_rng(seed))}
    assert got == expected, sorted(got ^ expected)


def test_one_object_mentioned_twice_keeps_its_words(
    captions: dict[str, list[list[str]]], scenes: list[Scene]
) -> None:
    """Three-object captions name the reference object again: with the same noun and colour word."""
    checked = 0
    for lang in FOREIGN:
        for scene, caps in zip(scenes, captions[lang], strict=True):
            if len(scene.objects) != 3 or len({o.shape for o in scene.objects}) != 3:
                continue
            ref = scene.objects[scene.relations[1][2]]
            for c in caps:
                words = _words(c)
                nouns = [w for w in words if w in SHAPE_FORMS[lang][ref.shape]]
                assert len(nouns) == 2, c
                if lang == "de":  # the lemma stays the same (Raute / Rhombus are not mixed)
                    lemma = {"Kreises": "Kreis", "Quadrats": "Quadrat", "Dreiecks": "Dreieck"}
                    assert len({lemma.get(n, n) for n in nouns}) == 1, c
                if lang == "cs":
                    assert len({n[:4] for n in nouns}) == 1, c
                if lang == "fr":
                    assert len(set(nouns)) == 1, c
                checked += 1
    assert checked > 50


def test_languages_share_scenes_images_and_splits() -> None:
    en = list(make_shapes("val", 12, 5))
    every = list(make_shapes("val", 12, 5, langs="all"))
    de_only = list(make_shapes("val", 12, 5, langs=("de",)))
    for a, b, c in zip(en, every, de_only, strict=True):
        assert a.scene == b.scene == c.scene and a.group == b.group
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert b.captions_in("en") == a.captions and a.captions_in("en") == a.captions
        assert b.captions_in("de") == c.captions == c.captions_in("de")  # independent of the others
        assert b.langs == tuple(lang for lang in LANGS for _ in range(5))


def test_english_manifest_is_unchanged(tmp_path: Path) -> None:
    """Byte-identical to the manifest written before languages existed (sha256 taken then)."""
    manifest = write_shapes(tmp_path, "test", 60, 3)
    assert manifest.name == "test.jsonl"
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert digest == "e4d5f24917aa0344c7323c90f7a4c74d303fd68c1703a5875186041942921790"


def test_manifests_per_language_and_all(tmp_path: Path) -> None:
    de = write_shapes(tmp_path, "test", 4, 0, lang="de")
    every = write_shapes(tmp_path, "test", 4, 0, lang="all")
    assert (de.name, every.name) == ("test.de.jsonl", "test.all.jsonl")
    de_lines = [json.loads(x) for x in de.read_text(encoding="utf-8").splitlines()]
    all_lines = [json.loads(x) for x in every.read_text(encoding="utf-8").splitlines()]
    assert {x["lang"] for x in de_lines} == {"de"}
    assert [x["lang"] for x in all_lines].count("fr") == 20 and len(all_lines) == 80
    assert [x for x in all_lines if x["lang"] == "de"] == de_lines
    assert "ü" in de.read_text(encoding="utf-8") or "ß" in de.read_text(encoding="utf-8")


def test_cli_lang_option(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cli.main import xmr

    ok = CliRunner().invoke(xmr, ["data", "shapes", "--out", str(tmp_path), "--size", "2", "--lang", "cs"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "test.cs.jsonl").is_file()
    bad = CliRunner().invoke(xmr, ["data", "shapes", "--out", str(tmp_path), "--size", "2", "--lang", "xx"])
    assert bad.exit_code == 1 and "unknown language 'xx'" in bad.output


def test_parse_langs() -> None:
    assert parse_langs("en,de") == ("en", "de")
    assert parse_langs("all") == LANGS
    assert parse_langs(["fr", "fr", "cs"]) == ("fr", "cs")
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        parse_langs("en,xx")
    with pytest.raises(ValueError, match="no language"):
        parse_langs(" , ")
