"""The multilingual results table (the paper's monolingual / zero-shot layout): mean recall per language."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from search_backend.evaluation.metrics import RECALL_KS

__all__ = [
    "CentredTexts",
    "language_means",
    "mean_recall",
    "multilingual_table",
    "multilingual_targets",
    "translation_retrieval",
]


def mean_recall(method_result: Mapping[str, Any]) -> float:
    """mR: the mean of t2i and i2t R@1/5/10 (percent) of one ``evaluate()["results"][method]``."""
    values = [float(method_result[d][f"r{k}"]) for d in ("t2i", "i2t") for k in RECALL_KS]
    return sum(values) / len(values)


def multilingual_table(
    rows: Mapping[str, Mapping[str, Mapping[str, float]]], langs: Sequence[str], *, title: str = ""
) -> str:
    """``rows``: set-up label -> method (``be`` / ``rr``) -> language -> mR. One line per set-up and
    method, one column per language, plus the mean over the languages."""
    label_w = max([len(r) + 5 for r in rows] + [28])
    lines = [title] if title else []
    head = " ".join(f"{lang:>7}" for lang in langs)
    lines.append(f"{'set-up':{label_w}} | {head} | {'mean':>7}")
    lines.append("-" * len(lines[-1]))
    for label, methods in rows.items():
        for method, by_lang in methods.items():
            cells = [by_lang.get(lang) for lang in langs]
            shown = " ".join(f"{c:7.1f}" if c is not None else f"{'-':>7}" for c in cells)
            have = [c for c in cells if c is not None]
            mean = f"{sum(have) / len(have):7.1f}" if have else f"{'-':>7}"
            lines.append(f"{label + ' ' + method.upper():{label_w}} | {shown} | {mean}")
    return "\n".join(lines)


def multilingual_targets(
    rows: Mapping[str, Mapping[str, Mapping[str, float]]],
    *,
    all_langs: str,
    zero_shot: str,
    pivot: str = "en",
) -> list[tuple[str, bool | None, str]]:
    """The issue's targets, as measured (never asserted): (target, met or None if not measurable, detail).

    - all-language training: every language's mR within 5 points of ``pivot``'s, above or below
      (per method);
    - ``pivot``-only training (zero-shot): every other language's mR at least 70% of ``pivot``'s;
    - reranking beats the bi-encoder in every language (per set-up).
    """
    out: list[tuple[str, bool | None, str]] = []
    for label, name, test in (
        (all_langs, "within 5 points of en", lambda x, en: abs(x - en) <= 5.0),
        (zero_shot, ">= 70% of en", lambda x, en: x >= 0.7 * en),
    ):
        for method, by_lang in rows.get(label, {}).items():
            if pivot not in by_lang:
                out.append((f"{label} {method}: {name}", None, f"no {pivot} column"))
                continue
            en = by_lang[pivot]
            others = {lang: v for lang, v in by_lang.items() if lang != pivot}
            ok = all(test(v, en) for v in others.values()) if others else None
            detail = ", ".join(f"{lang} {v:.1f}" for lang, v in others.items()) + f" vs {pivot} {en:.1f}"
            out.append((f"{label} {method.upper()}: {name}", ok, detail))
    for label, methods in rows.items():
        be, rr = methods.get("be", {}), methods.get("rr", {})
        common = [lang for lang in be if lang in rr]
        ok = all(rr[lang] > be[lang] for lang in common) if common else None
        detail = ", ".join(f"{lang} {rr[lang] - be[lang]:+.1f}" for lang in common)
        out.append((f"{label}: RR > BE in every language", ok, detail))
    return out


def _unit_rows(a: Any) -> Any:
    """``a``'s rows scaled to unit L2 norm (an all-zero row stays zero)."""
    import numpy as np

    return a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)


def translation_retrieval(
    vectors: Mapping[str, Any], pivot: str = "en", means: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """How aligned a text encoder is across languages: for each language, the share (%) of its
    captions whose nearest ``pivot``-language caption (cosine) is the one of the same scene.

    ``vectors[lang]`` is an (n, d) array whose row i encodes scene i's caption in ``lang``; every
    language has the same n scenes in the same order. 100 for ``pivot`` itself; 100 / n by chance.
    Zero-shot transfer can only carry what this alignment keeps apart. ``means[lang]`` (d,), when
    given, is subtracted from that language's vectors first: per-language mean centring, which
    removes the offset that tells languages apart (a mean over any text of the language will do,
    no translation needed).
    """
    import numpy as np

    if means is not None:
        vectors = {
            lang: np.asarray(v, dtype=np.float64) - np.asarray(means[lang]) for lang, v in vectors.items()
        }

    def unit(a: Any) -> Any:
        return _unit_rows(np.asarray(a, dtype=np.float64))

    base = unit(vectors[pivot])
    out: dict[str, float] = {}
    for lang, vecs in vectors.items():
        v = unit(vecs)
        if v.shape != base.shape:
            raise ValueError(f"{lang}: {v.shape[0]} captions of width {v.shape[1]}, {pivot} has {base.shape}")
        out[lang] = round(100.0 * float(((v @ base.T).argmax(1) == np.arange(len(v))).mean()), 1)
    return out


def language_means(model: Any, langs: Sequence[str], size: int, seed: int) -> dict[str, Any]:
    """Each language's mean text vector under ``model``: one caption per scene of ``size`` shapes
    **train** scenes, in that language alone (monolingual text, no pairing across languages used)."""
    import numpy as np

    from search_backend.data.shapes import make_shapes

    items = list(make_shapes("train", size, seed, image_size=16, langs=tuple(langs), captions_per_image=1))
    return {
        lang: np.asarray(model.encode_texts([it.captions_in(lang)[0] for it in items])).mean(0)
        for lang in langs
    }


class CentredTexts:
    """``model`` with every text vector moved by ``shift`` and renormalised; the rest unchanged.

    With ``shift = means[pivot] - means[lang]`` (:func:`language_means`) it is per-language mean
    centring at query and index time: a text in ``lang`` is moved to where ``pivot`` text sits on
    average, a zero-shot lever that needs no translation (the bi-encoder's ranking changes; the
    cross-encoder reads the same texts as before).
    """

    def __init__(self, model: Any, shift: Any) -> None:
        import numpy as np

        self._model = model
        self._shift = np.asarray(shift, dtype=np.float32)

    def encode_texts(self, texts: list[str], batch_size: int | None = None) -> Any:
        import numpy as np

        v = np.asarray(self._model.encode_texts(texts, batch_size=batch_size), dtype=np.float32)
        return _unit_rows(v + self._shift)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)
