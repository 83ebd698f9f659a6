"""Evaluation: Recall@K, per-query latency, the paper-style results table, R@1 by rerank depth, plots."""

from __future__ import annotations

from search_backend.evaluation.corpus import manifest_corpus, model_image_size, shapes_corpus
from search_backend.evaluation.depth import rerank_depth_curve
from search_backend.evaluation.distractors import distractor_accuracy
from search_backend.evaluation.evaluate import METHODS, EvalCorpus, evaluate
from search_backend.evaluation.metrics import RECALL_KS, recall_at
from search_backend.evaluation.plots import plot_rerank_depth, plot_stage_latency, plot_store_comparison
from search_backend.evaluation.table import METHOD_LABELS, format_table

__all__ = [
    "METHODS",
    "METHOD_LABELS",
    "RECALL_KS",
    "EvalCorpus",
    "distractor_accuracy",
    "evaluate",
    "format_table",
    "manifest_corpus",
    "model_image_size",
    "plot_rerank_depth",
    "plot_stage_latency",
    "plot_store_comparison",
    "recall_at",
    "rerank_depth_curve",
    "shapes_corpus",
]
