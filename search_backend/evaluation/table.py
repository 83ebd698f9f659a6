"""Render evaluation results in the layout of the paper's tables."""

from __future__ import annotations

from typing import Any

from search_backend.evaluation.metrics import RECALL_KS

__all__ = ["METHOD_LABELS", "format_table"]

METHOD_LABELS = {
    "be": "BE  bi-encoder k-NN",
    "ce": "CE  cross-encoder, all",
    "rr": "RR  retrieve+rerank",
}


def format_table(rows: dict[str, dict[str, Any]], *, title: str = "") -> str:
    """``rows``: label -> one ``results[method]`` entry of :func:`evaluate` (or several models')."""
    label_w = max([len(k) for k in rows] + [24])
    head_r = " ".join(f"R@{k:<4}" for k in RECALL_KS)
    lines = []
    if title:
        lines.append(title)
    lines.append(
        f"{'':{label_w}} | {'Image retrieval (t2i)':^20} | {'Sentence retrieval (i2t)':^24} | {'ms/query':>9}"
    )
    lines.append(f"{'Model':{label_w}} | {head_r:^20} | {head_r:^24} | {'':>9}")
    lines.append("-" * len(lines[-1]))
    for label, r in rows.items():
        t2i = " ".join(f"{r['t2i'][f'r{k}']:6.1f}" for k in RECALL_KS)
        i2t = " ".join(f"{r['i2t'][f'r{k}']:6.1f}" for k in RECALL_KS)
        lines.append(f"{label:{label_w}} | {t2i:^20} | {i2t:^24} | {r['ms_per_query']:9.1f}")
    return "\n".join(lines)
