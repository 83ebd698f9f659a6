"""What a training run writes beside its model: ``metrics.jsonl``, ``skipped.jsonl``, ``curves.png``.

``metrics.jsonl``, one JSON object per line:

* ``{"kind": "train", "step", "loss", "bi"?, "ce"?, "cls"?, "ground"?, "lr", "seconds",
  "skipped"}`` every ``log_every`` steps (losses of that step; ``lr`` of the backbone's group;
  ``seconds`` since the run began, resumed runs continue the clock; ``skipped`` images so far);
* ``{"kind": "eval", "step", "seconds", "metric", "value", "best", "results": {"be": {"t2i":
  {"r1", "r5", "r10"}, "i2t": {...}, "ms_per_query"}, "rr": {...}}}`` after each validation.

``skipped.jsonl``, one line per image that was left out, the first time it was met:
``{"item", "image", "reason", "stage", "line"?}`` with ``stage`` ``"manifest"`` (found by the
reader: missing file, empty caption, malformed line; ``line`` is its line in the manifest) or
``"load"`` (failed to decode when a batch or the validation set needed it).

``curves.png``: losses and validation recall against the step (matplotlib, no display needed).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search_backend.training.config import TrainConfig
    from search_backend.training.validation import Selection

__all__ = [
    "CURVES_FILE",
    "METRICS_FILE",
    "SKIPPED_FILE",
    "SUMMARY_FILE",
    "TRAIN_CONFIG_FILE",
    "MetricsLog",
    "SkipLog",
    "finish_run",
    "plot_curves",
    "trained_with",
    "write_train_config",
]

METRICS_FILE = "metrics.jsonl"
SKIPPED_FILE = "skipped.jsonl"
CURVES_FILE = "curves.png"
SUMMARY_FILE = "training.json"
TRAIN_CONFIG_FILE = "train_config.json"


class MetricsLog:
    """Appends lines to ``OUT/metrics.jsonl``; a resumed run drops lines past its checkpoint's step."""

    def __init__(self, out: Path, resume_step: int, enabled: bool = True) -> None:
        self.path = out / METRICS_FILE
        self.enabled = enabled
        if not enabled:
            return
        kept: list[str] = []
        if resume_step and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    if int(json.loads(line).get("step", 0)) <= resume_step:
                        kept.append(line)
                except (ValueError, AttributeError):
                    continue
        self.path.write_text("".join(k + "\n" for k in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")


def read_metrics(out: Path) -> list[dict[str, Any]]:
    path = out / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class SkipLog:
    """Distinct skipped images, kept in ``OUT/skipped.jsonl`` (reloaded when a run resumes)."""

    def __init__(self, out: Path, resume: bool, enabled: bool = True) -> None:
        self.path = out / SKIPPED_FILE
        self.enabled = enabled
        self.seen: set[str] = set()
        self.reasons: Counter[str] = Counter()
        if not enabled:
            return
        if resume and self.path.is_file():
            for line in self.path.read_text().splitlines():
                rec = json.loads(line)
                self.seen.add(str(rec["image"]))
                self.reasons[str(rec["reason"])] += 1
        else:
            self.path.write_text("")

    def __len__(self) -> int:
        return len(self.seen)

    def add(self, item: str, image: str, reason: str, stage: str, line: int | None = None) -> None:
        if not self.enabled or image in self.seen:
            return
        self.seen.add(image)
        self.reasons[reason] += 1
        rec: dict[str, Any] = {"item": item, "image": image, "reason": reason, "stage": stage}
        if line:
            rec["line"] = line
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")

    def summary(self) -> str:
        if not self.seen:
            return "no image was skipped"
        top = ", ".join(f"{n} {reason}" for reason, n in self.reasons.most_common(3))
        more = "" if len(self.reasons) <= 3 else f", {len(self.reasons) - 3} other reason(s)"
        return f"skipped {len(self.seen)} image(s) ({top}{more}); see {self.path}"


def plot_curves(out: Path) -> Path | None:
    """``OUT/curves.png`` from ``OUT/metrics.jsonl``: losses (left) and validation recall (right)."""
    records = read_metrics(out)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "bi", "ce", "cls", "ground"):
        points = [(r["step"], r[key]) for r in train if key in r]
        if points:
            left.plot(*zip(*points, strict=True), label=key, linewidth=1)
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.set_title("training losses")
    if left.lines:
        left.legend()
    for method in ("be", "rr"):
        for direction in ("t2i", "i2t"):
            points = [
                (r["step"], r["results"][method][direction]["r1"])
                for r in evals
                if method in r.get("results", {})
            ]
            if points:
                right.plot(*zip(*points, strict=True), marker="o", label=f"{method} {direction} R@1")
    best = [r for r in evals if r.get("best")]
    if best:
        right.axvline(best[-1]["step"], color="grey", linestyle=":", label="best")
    right.set_xlabel("step")
    right.set_ylabel("recall (%)")
    right.set_title("validation")
    if right.lines:
        right.legend()
    fig.tight_layout()
    path = out / CURVES_FILE
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def finish_run(
    out: Path,
    cfg: TrainConfig,
    *,
    steps_run: int,
    seconds: float,
    skipped: int,
    selection: Selection | None,
    leftovers: tuple[Path, ...],
) -> None:
    """The records of a finished run beside its saved model: ``train_config.json``,
    ``training.json`` (steps, seconds, images skipped, the selected step and its metric;
    ``selection`` None: not validated, the last step), ``curves.png``; then the run's leftover
    folders (checkpoint, best weights) go."""
    import shutil

    write_train_config(out, cfg)
    summary = {
        "steps": steps_run,
        "seconds": round(seconds, 1),
        "skipped": skipped,
        "selected_step": steps_run if selection is None else selection.best_step,
        "metric": None if selection is None else cfg.selection(),
        "value": None if selection is None else selection.best,
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    plot_curves(out)
    for leftover in leftovers:
        if leftover.exists():
            shutil.rmtree(leftover)


def write_train_config(path: Path, cfg: TrainConfig) -> None:
    """Every setting of the run, as ``path/train_config.json`` (what resuming checks against)."""
    from search_backend.training.config import config_json

    (path / TRAIN_CONFIG_FILE).write_text(json.dumps(config_json(cfg), sort_keys=True))


def trained_with(path: str | Path) -> dict[str, Any] | None:
    """The training config a model folder (or checkpoint) was trained with; None if not recorded."""
    file = Path(path) / TRAIN_CONFIG_FILE
    if not file.is_file():
        return None
    saved: dict[str, Any] = json.loads(file.read_text())
    return saved
