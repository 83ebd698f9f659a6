"""Evaluation: Recall@K, per-query latency, and the paper-style results table."""

from __future__ import annotations

from search_backend.evaluation.corpus import manifest_corpus, shapes_corpus
from search_backend.evaluation.distractors import distractor_accuracy
from search_backend.evaluation.evaluate import METHODS, EvalCorpus, evaluate
from search_backend.evaluation.metrics import RECALL_KS, recall_at
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
    "recall_at",
    "shapes_corpus",
]
