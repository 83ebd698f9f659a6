"""Benchmark figures (matplotlib, PNG, no display needed), each drawn from a benchmark's JSON.

* :func:`plot_rerank_depth`: the paper's figure: R@1 against rerank depth k with ms/query on a
  second axis (``xmr eval --plot``; data from :func:`~search_backend.evaluation.depth.rerank_depth_curve`).
* :func:`plot_stage_latency`: latency distribution of each search stage (``benchmarks/indexing.py``).
* :func:`plot_store_comparison`: OpenSearch beside FAISS, k-NN latency and recall and ``/search``
  latency (``benchmarks/opensearch.py``).

Training curves are drawn by :func:`search_backend.training.records.plot_curves` (``OUT/curves.png``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_rerank_depth", "plot_stage_latency", "plot_store_comparison"]

_DPI = 100
STAGE_COLOURS = {"encode": "#4aa3df", "knn": "#8e6cd1", "rerank": "#e8553b", "total": "#555555"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=_DPI)
    _pyplot().close(fig)
    return out


def plot_rerank_depth(curve: Mapping[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """R@1 (t2i, i2t) against rerank depth k (log axis), measured ms/query on the right axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    depths = list(curve["depths"])
    ax.plot(depths, curve["t2i_r1"], color="#1f4e79", linewidth=1.8, label="text → image R@1")
    ax.plot(depths, curve["i2t_r1"], color="#e8553b", linewidth=1.8, label="image → text R@1")
    for key, colour in (("t2i_r1", "#1f4e79"), ("i2t_r1", "#e8553b")):
        ax.axhline(curve[key][0], color=colour, linestyle=":", linewidth=1)  # depth 1 = bi-encoder alone
    ax.set_xscale("log")
    ticks = [d for d in (1, 2, 5, 10, 20, 50, 100, 200, 500) if d <= depths[-1]]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlim(1, max(2, depths[-1]))
    ax.set_xlabel("rerank depth k (bi-encoder candidates scored by the cross-encoder)")
    ax.set_ylabel("Recall@1 (%)")
    # at least a 20-point window: with few queries one query moves R@1 by several points, and an
    # axis fitted to the data would draw that as a cliff
    values = [float(v) for v in (*curve["t2i_r1"], *curve["i2t_r1"])]
    low, high = min(values), max(values)
    window = min(100.0, max(20.0, high - low + 4.0))
    bottom = min(max(0.0, (low + high - window) / 2), 100.0 - window)
    ax.set_ylim(bottom, bottom + window)
    ax.grid(True, which="major", alpha=0.3)
    timing = curve.get("timing") or {}
    handles, labels = ax.get_legend_handles_labels()
    if timing.get("depths"):
        right = ax.twinx()
        (line,) = right.plot(
            timing["depths"],
            timing["ms_per_query"],
            color="#555555",
            linestyle="--",
            marker="o",
            markersize=4,
        )
        right.set_ylabel("ms per query (measured)")
        right.set_ylim(bottom=0)
        handles.append(line)
        labels.append(f"ms/query ({timing.get('queries_each_way', '?')} queries each way)")
    ax.legend(
        handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False
    )
    ax.set_title(
        title
        or f"Retrieve then rerank: {curve['n_images']} images, {curve['n_captions']} captions, "
        f"{curve['n_queries']} queries each way (dotted: bi-encoder alone)",
        fontsize=9,
    )
    return _save(fig, path)


def plot_stage_latency(
    samples: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, *, title: str = ""
) -> Path:
    """One panel per search mode (e.g. ``t2i reranked``): a box per stage (``encode``, ``knn``, ...)."""
    plt = _pyplot()
    modes = [m for m, stages in samples.items() if any(len(v) for v in stages.values())]
    if not modes:
        raise ValueError("no latency samples to plot")
    fig, axes = plt.subplots(1, len(modes), figsize=(3.2 * len(modes) + 0.6, 3.8), squeeze=False, sharey=True)
    for ax, mode in zip(axes[0], modes, strict=True):
        stages = [(s, list(v)) for s, v in samples[mode].items() if len(v)]
        box = ax.boxplot(
            [v for _, v in stages], tick_labels=[s for s, _ in stages], patch_artist=True, showfliers=True
        )
        for patch, (stage, _) in zip(box["boxes"], stages, strict=True):
            patch.set_facecolor(STAGE_COLOURS.get(stage, "#bbbbbb"))
            patch.set_alpha(0.7)
        ax.set_yscale("log")
        ax.set_title(f"{mode} (n={len(stages[0][1])})", fontsize=9)
        ax.grid(True, axis="y", which="both", alpha=0.25)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    axes[0][0].set_ylabel("ms (log scale)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_store_comparison(results: Mapping[str, Any], path: str | Path) -> Path:
    """``benchmarks/opensearch.py`` results: k-NN p50/p95 and recall@10 (left), ``/search`` (right)."""
    plt = _pyplot()
    stores = [("faiss", "FAISS (embedded)", "#4aa3df"), ("opensearch", "OpenSearch", "#e8553b")]
    panels = [p for p in ("store", "service") if p in results]
    if not panels:
        raise ValueError("results hold neither a 'store' nor a 'service' part")
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, part in zip(axes[0], panels, strict=True):
        r = results[part]
        groups = (
            ["unfiltered", "filter_kind_image"]
            if part == "store"
            else [g for g in ("t2i_knn", "t2i_rerank", "i2t_knn", "i2t_rerank") if g in r.get("faiss", {})]
        )
        width = 0.38
        for n, (key, label, colour) in enumerate(stores):
            if key not in r:
                continue
            xs = [g + (n - 0.5) * width for g in range(len(groups))]
            p50 = [r[key][g]["p50_ms"] for g in groups]
            p95 = [r[key][g]["p95_ms"] for g in groups]
            ax.bar(xs, p50, width, color=colour, alpha=0.85, label=f"{label} p50")
            ax.scatter(xs, p95, color="black", marker="_", s=200, zorder=3)
            for x, g, top in zip(xs, groups, p95, strict=True):
                recall = r[key][g].get("recall_at_10")
                if recall is not None:
                    ax.annotate(
                        f"R@10 {recall:.3f}",
                        (x, top),
                        textcoords="offset points",
                        xytext=(0, 4),
                        ha="center",
                        fontsize=7,
                    )
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([g.replace("_", " ") for g in groups], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("ms (bar: p50, tick: p95)")
        if part == "store":
            ax.set_title(f"k-NN k=10, {r.get('vectors', '?')} × {r.get('dim', '?')}-d vectors", fontsize=9)
        else:
            ax.set_title(
                f"POST /search, {r.get('items', '?')} items, top-{r.get('k_retrieve', '?')}", fontsize=9
            )
        ax.grid(True, axis="y", which="both", alpha=0.25)
        ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)
