"""``xmr``: the admin command line. Thin: it parses, calls search_backend, prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from cli import admin
from cli.backbone import backbone
from cli.errors import handle_errors

__all__ = ["xmr"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xmodal-search")
def xmr() -> None:
    """xmodal-search: cross-modal search that retrieves fast and reranks smart."""


# ---------------------------------------------------------------------------------------------
# data


@xmr.group()
def data() -> None:
    """Datasets: generate the synthetic shapes data."""


@data.command("shapes")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--size", type=click.IntRange(min=1), default=1000, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--image-size", type=click.IntRange(min=8), default=64, show_default=True, help="Pixels per side."
)
@click.option(
    "--lang",
    default="en",
    show_default=True,
    help="Caption language: en, de, fr, cs, or all (every language, a 'lang' field per line).",
)
@handle_errors
def data_shapes(out: Path, split: str, size: int, seed: int, image_size: int, lang: str) -> None:
    """Write SIZE rendered scenes (PNG) and a JSONL manifest with 5 captions per image (per language).

    en writes SPLIT.jsonl, another language SPLIT.LANG.jsonl, all SPLIT.all.jsonl; the scenes,
    splits and images are the same for every language.
    """
    from search_backend.data.grammars import check_lang
    from search_backend.data.shapes import write_shapes

    if lang != "all":
        check_lang(lang)
    manifest = write_shapes(out, split, size, seed, image_size=image_size, lang=lang)
    click.echo(f"wrote {size} images and {manifest}")


# ---------------------------------------------------------------------------------------------
# train


@xmr.command()
@click.option("--setup", type=click.Choice(["be", "ce", "sep", "joint"]), default="joint", show_default=True)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path),
    default=None,
    help="Train on this captioned JSONL / Karpathy manifest (default: the shapes train split).",
)
@click.option(
    "--image-root", type=click.Path(path_type=Path), default=None, help="Folder image paths start from."
)
@click.option("--split", default=None, help="Karpathy JSON: the training split (train+restval for several).")
@click.option(
    "--val-manifest",
    type=click.Path(path_type=Path),
    default=None,
    help="Validation manifest (no shared images).",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Without --val-manifest: share of the training groups held out for validation [0.05].",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model folder (default: the cached default model, for --setup joint on shapes).",
)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimiser steps (default: recipe).")
@click.option(
    "--epochs",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Passes over the data instead of --steps.",
)
@click.option("--batch-size", type=click.IntRange(min=2), default=None)
@click.option(
    "--workers", type=click.IntRange(min=0), default=None, help="DataLoader processes decoding images [0]."
)
@click.option(
    "--eval-every",
    type=click.IntRange(min=0),
    default=None,
    help="Validate every N steps (0: at the end only).",
)
@click.option(
    "--patience", type=click.IntRange(min=0), default=None, help="Stop after P validations without a gain."
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where to train [auto]."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bi-loss", type=click.Choice(["infonce", "vsepp"]), default=None)
@click.option("--backbone", default="", help="Local HF checkpoint folder (default: bundled MiniLM-L6).")
@click.option(
    "--init",
    type=click.Path(path_type=Path),
    default=None,
    help="Fine-tune this local Hugging Face checkpoint instead: CLIP-style for be and sep, "
    "BLIP image-text retrieval (ITM head) for ce and joint.",
)
@click.option(
    "--cross-init",
    type=click.Path(path_type=Path),
    default=None,
    help="--setup sep with --init: the BLIP-style checkpoint of the cross-encoder.",
)
@click.option(
    "--miner",
    type=click.Path(path_type=Path),
    default=None,
    help="--setup ce with --init: a model folder whose bi-encoder mines the negatives (default: "
    "the checkpoint's own ITC head).",
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe setting (repeatable): a TrainConfig field such as hard_rate=0.5, "
    "or model.FIELD for the model, such as model.patch_size=16.",
)
@click.option("--no-resume", is_flag=True, help="Ignore an existing checkpoint in --out.")
@handle_errors
def train(
    setup: str,
    manifest: Path | None,
    image_root: Path | None,
    split: str | None,
    val_manifest: Path | None,
    val_fraction: float | None,
    out: Path | None,
    steps: int | None,
    epochs: float | None,
    batch_size: int | None,
    workers: int | None,
    eval_every: int | None,
    patience: int | None,
    device: str | None,
    seed: int,
    bi_loss: str | None,
    backbone: str,
    init: Path | None,
    cross_init: Path | None,
    miner: Path | None,
    assignments: tuple[str, ...],
    no_resume: bool,
) -> None:
    """Train a model on the shapes train split or on your own captioned images (--manifest).

    Resumes from a checkpoint in --out. With validation data, the saved model is the best
    validation's; OUT/metrics.jsonl, OUT/curves.png and OUT/skipped.jsonl record the run.
    --init fine-tunes a pretrained CLIP / SigLIP / BLIP checkpoint into the model folder --out.
    """
    from search_backend.config import get_settings
    from search_backend.training.recipes import default_recipe, with_overrides
    from search_backend.training.trainer import train as run_train

    if steps is not None and epochs is not None:
        raise click.UsageError("give --steps or --epochs, not both")
    if val_manifest is not None and val_fraction is not None:
        raise click.UsageError("give --val-manifest or --val-fraction, not both")
    if manifest is None and any(x is not None for x in (image_root, split, val_manifest, val_fraction)):
        raise click.UsageError("--image-root, --split, --val-manifest and --val-fraction need --manifest")
    options: dict[str, object | None] = {
        "steps": steps,
        "epochs": epochs,
        "batch_size": batch_size,
        "bi_loss": bi_loss,
        "backbone": backbone,
        "manifest": manifest,
        "image_root": image_root,
        "split": split,
        "val_manifest": val_manifest,
        "val_fraction": val_fraction,
        "workers": workers,
        "eval_every": eval_every,
        "patience": patience,
        "device": device,
        "init": init,
        "cross_init": cross_init,
        "miner": miner,
    }
    given = [f"{key}={value}" for key, value in options.items() if value is not None and value != ""]
    data = "manifest" if manifest is not None else "shapes"
    cfg = with_overrides(default_recipe(setup, seed=seed, data=data), given + list(assignments))
    if out is None:
        if setup != "joint" or manifest is not None or init is not None:
            raise click.UsageError(
                "--out is required unless --setup joint on shapes (the cached default model)"
            )
        out = get_settings().default_model_dir
    run_train(cfg, out, resume=not no_resume)
    click.echo(f"saved {setup} model to {out}")


# ---------------------------------------------------------------------------------------------
# eval


@xmr.command("eval")
@click.option(
    "--model", "model_spec", default="default", show_default=True, help="Model folder or 'default'."
)
@click.option("--dataset", type=click.Choice(["shapes"]), default="shapes", show_default=True)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path),
    default=None,
    help="Evaluate on a JSONL / Karpathy manifest instead of --dataset.",
)
@click.option(
    "--image-root", type=click.Path(path_type=Path), default=None, help="Image root for Karpathy JSON."
)
@click.option(
    "--split", default=None, help="shapes: train|val|test (default test); Karpathy JSON: that split only."
)
@click.option("--size", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--k", type=click.IntRange(min=1), default=20, show_default=True, help="Candidates reranked by rr."
)
@click.option(
    "--queries",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Caption queries and image queries drawn (each).",
)
@click.option("--methods", default="be,ce,rr", show_default=True, help="Comma-separated subset of be,ce,rr.")
@click.option(
    "--lang",
    default=None,
    help="Captions in this language: shapes en|de|fr|cs|all or a list (default en); "
    "a manifest: the lines with that 'lang'.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the R@1-vs-rerank-depth figure (k = 1..--depth-max, ms/query) to this PNG, "
    "its data beside it (.json).",
)
@click.option(
    "--depth-max", type=click.IntRange(min=1), default=100, show_default=True, help="--plot: deepest k."
)
@click.option(
    "--distractors",
    "distractor_scenes",
    type=click.IntRange(min=2),
    default=None,
    help="shapes: also the hard-distractor accuracy (caption vs its twin's image, BE and CE, by kind) "
    "over this many scenes of the split (400 in the README).",
)
@handle_errors
def eval_cmd(
    model_spec: str,
    dataset: str,
    manifest: Path | None,
    image_root: Path | None,
    split: str | None,
    size: int,
    seed: int,
    k: int,
    queries: int,
    methods: str,
    lang: str | None,
    as_json: bool,
    plot: Path | None,
    depth_max: int,
    distractor_scenes: int | None,
) -> None:
    """Recall@1/5/10 and ms per query of be, ce (over the whole corpus) and rr (retrieve then rerank)."""
    from search_backend.evaluation import (
        evaluate,
        format_table,
        manifest_corpus,
        model_image_size,
        shapes_corpus,
    )
    from search_backend.evaluation.table import METHOD_LABELS
    from search_backend.model import load_model
    from search_backend.runtime import configure_torch

    configure_torch()
    if manifest is None and lang is not None:
        from search_backend.data.grammars import parse_langs

        parse_langs(lang)  # before the model loads
    if distractor_scenes is not None and manifest is not None:
        raise click.UsageError("--distractors reads the shapes scenes behind each image: not with --manifest")
    model = load_model(model_spec)
    image_size = model_image_size(model)
    if manifest is not None:
        corpus = manifest_corpus(manifest, image_root=image_root, split=split, lang=lang)
    else:
        corpus = shapes_corpus(split or "test", size, seed, image_size=image_size, lang=lang or "en")
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    result = evaluate(model, corpus, k=k, queries=queries, seed=seed, methods=chosen, progress=not as_json)
    if lang is not None:
        result["lang"] = lang
    if distractor_scenes is not None:
        from search_backend.evaluation import distractor_accuracy

        result["distractors"] = distractor_accuracy(
            model, split or "test", distractor_scenes, seed, image_size=image_size
        )
    if plot is not None:
        from search_backend.evaluation import plot_rerank_depth, rerank_depth_curve

        curve = rerank_depth_curve(
            model, corpus, max_depth=depth_max, queries=queries, seed=seed, progress=not as_json
        )
        curve["model"] = str(model_spec)
        plot.with_suffix(".json").parent.mkdir(parents=True, exist_ok=True)
        plot.with_suffix(".json").write_text(json.dumps(curve, indent=1))
        plot_rerank_depth(curve, plot)
        result["rerank_depth"] = curve
        click.echo(f"wrote {plot} and {plot.with_suffix('.json')}", err=True)
    if as_json:
        click.echo(json.dumps(result))
        return
    rows = {METHOD_LABELS[m]: r for m, r in result["results"].items()}
    click.echo(
        format_table(
            rows,
            title=(
                f"{result['n_images']} images, {result['n_captions']} captions"
                f"{' (' + lang + ')' if lang else ''}, "
                f"{result['n_queries']} queries each way, rerank top-{result['k']}"
            ),
        )
    )
    click.echo("\nR@1 95% intervals (bootstrap over queries):")
    for method, dirs in result["r1_ci95"].items():
        shown = ", ".join(f"{d} [{lo:.1f}, {hi:.1f}]" for d, (lo, hi) in dirs.items())
        click.echo(f"  {method}: {shown}")
    for pair, dirs in result["r1_paired"].items():
        shown = ", ".join(
            f"{d} {v['diff']:+.1f} [{v['ci95'][0]:+.1f}, {v['ci95'][1]:+.1f}]" for d, v in dirs.items()
        )
        click.echo(f"  {pair} (paired): {shown}")
    if "distractors" in result:
        click.echo("\nhard-distractor accuracy, BE / CE % (50 is chance):")
        for kind, acc in result["distractors"].items():
            click.echo(f"  {kind:<8} {acc['be']:5.1f} / {acc['ce']:5.1f}  ({acc['n']} captions)")


# ---------------------------------------------------------------------------------------------
# database


@xmr.group()
def db() -> None:
    """The job database (SQLite under XMR_HOME, or XMR_DATABASE_URL)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@handle_errors
def db_upgrade(revision: str) -> None:
    """Apply the Alembic migrations (the only way the schema changes)."""
    from search_backend.jobs.db import upgrade

    click.echo(f"database at revision {upgrade(revision=revision)}")


# ---------------------------------------------------------------------------------------------
# adapters


@xmr.command()
@click.option(
    "--bi",
    "bi_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Local CLIP-style dual-encoder checkpoint (the bi-encoder).",
)
@click.option(
    "--cross",
    "cross_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Local BLIP-style image-text-matching checkpoint (the cross-encoder).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@handle_errors
def adapt(bi_path: Path | None, cross_path: Path | None, out: Path) -> None:
    """Wrap local Hugging Face checkpoints as an xmodal model folder usable as --model OUT."""
    from search_backend.model.adapters import AdapterModel

    if bi_path is None and cross_path is None:
        raise click.UsageError("give --bi, --cross or both")
    AdapterModel.from_checkpoints(
        str(bi_path) if bi_path else None, str(cross_path) if cross_path else None
    ).save(out)
    click.echo(f"saved adapter model to {out}")


@xmr.group("model")
def model_group() -> None:
    """Model folders: ship one as the package's default."""


@model_group.command("ship")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--command", "command", required=True, help="The exact command that trained it (recorded).")
@handle_errors
def model_ship(model_dir: Path, command: str) -> None:
    """Store MODEL_DIR (a joint model) as the default model shipped with the package (fp16)."""
    from search_backend.model.shipped import ship

    folder = ship(model_dir, command=command)
    size = (folder / "model.safetensors").stat().st_size / 1e6
    click.echo(f"shipped {model_dir} as {folder} ({size:.1f} MB of fp16 weights)")


@model_group.command("derive")
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of the phases (default: $XMR_HOME/derive/relation); an interrupted run resumes there.",
)
@click.option(
    "--from",
    "source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Model folder to start from (default: the shipped model).",
)
@click.option("--if-missing", is_flag=True, help="Do nothing when a default model already exists.")
@click.option("--force", is_flag=True, help="Replace an existing default model.")
@click.option("--no-install", is_flag=True, help="Train the phases only; leave WORK/model where it is.")
@click.option("--print", "print_only", is_flag=True, help="Print the equivalent xmr train commands and stop.")
@click.option(
    "--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Add a setting to every phase."
)
@click.option(
    "--attempts",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Derivations at most: one whose reranker fails the val check is derived again under the next seed.",
)
@click.option(
    "--heads",
    type=click.IntRange(min=1),
    default=None,
    help="Relation heads trained from the one first phase, in parallel on a core each; the val check "
    "keeps the best (default 2; 1 with --no-check).",
)
@click.option("--no-check", is_flag=True, help="Skip the val check (one head, installed as it is).")
@click.option(
    "--keep-work",
    is_flag=True,
    help="Keep the phases in WORK after installing (by default removed: about 500 MB of fp32 weights).",
)
@handle_errors
def model_derive(
    work: Path | None,
    source: Path | None,
    if_missing: bool,
    force: bool,
    no_install: bool,
    print_only: bool,
    assignments: tuple[str, ...],
    attempts: int,
    heads: int | None,
    no_check: bool,
    keep_work: bool,
) -> None:
    """Derive the default model: the relation phase (README, Benchmark) from the shipped model.

    About 17 minutes on two bf16 cores (the first make demo runs it); XMR_THREADS=1 on a float32-only
    CPU reproduced the earlier two-phase recipe's r9 weights byte for byte.
    The result goes to $XMR_HOME/models/default (what --model default names) unless --no-install;
    then the phases in WORK are removed (--keep-work keeps them).
    Each derivation trains --heads relation heads from its first phase (their outcome swings from
    run to run), checks each on the shapes val split (about a minute) and keeps the best: with
    --attempts N, one whose reranker beats its bi-encoder by less than 5 R@1 (t2i) is derived again
    under the next seed, up to N derivations, and the best is installed.
    """
    from search_backend.config import get_settings
    from search_backend.runtime import configure_torch
    from search_backend.training.derive import (
        HEADS,
        SHARED_PHASES,
        Attempt,
        derive,
        derive_checked,
        derived_info,
        install_default,
        recipe_commands,
        remove_phases,
        source_model,
    )

    settings = get_settings()
    target = settings.default_model_dir
    if if_missing and force:
        raise click.UsageError("give --if-missing or --force, not both")
    if no_check and (heads or 1) > 1:
        raise click.UsageError("--no-check trains one head: the val check is what chooses between heads")
    if source is None and not settings.shipped_model:
        if if_missing:
            click.echo("XMR_SHIPPED_MODEL=false: no shipped model to derive from (the demo trains one)")
            return
        raise click.UsageError("XMR_SHIPPED_MODEL=false: give --from MODEL_DIR to derive from")
    start = source_model(source)
    work = work or settings.home / "derive" / "relation"
    extra = list(assignments)
    n_heads = 1 if no_check else heads or HEADS
    if print_only:  # head 0's phases, then each other head's own (it shares the first)
        lines = recipe_commands(start, work, extra=extra)
        for head in range(1, n_heads):
            lines += recipe_commands(start, work, extra=extra, head=head)[SHARED_PHASES:]
        click.echo("\n".join(lines))
        return
    if not no_install and target.exists() and not force:
        if if_missing:
            click.echo(f"default model: {target}")
            return
        raise click.UsageError(f"{target} already holds a model: --force replaces it, --if-missing keeps it")
    configure_torch(settings)
    click.echo(
        f"deriving the default model from {start} in {work} ({n_heads} relation head"
        f"{'s' if n_heads > 1 else ''}; once; an interrupted run resumes)"
    )
    tried: list[Attempt] = []
    if no_check:
        kept = Attempt(work, extra, derive(work, source=start, extra=extra))
    else:
        kept, tried = derive_checked(
            work, source=start, extra=extra, attempts=attempts, heads=n_heads, say=click.echo
        )
    model_dir = kept.model
    if no_install:
        click.echo(f"derived model: {model_dir}")
        return
    info = derived_info(kept.work, start, extra=kept.extra, head=kept.head)
    if tried:
        info["val_checks"] = [{"work": str(a.work), "head": a.head, **a.check} for a in tried]
    install_default(model_dir, target, info=info, force=force)
    click.echo(f"derived model: {model_dir}, installed as the default: {target}")
    if not keep_work:
        freed = remove_phases([work, *(a.work for a in tried)])
        click.echo(f"removed the phases in {work} ({freed / 1e6:.0f} MB; --keep-work keeps them)")


# ---------------------------------------------------------------------------------------------
# demo


@xmr.command()
@click.option("--images", type=click.IntRange(min=2), default=200, show_default=True, help="Collection size.")
@click.option("--k", type=click.IntRange(min=1), default=5, show_default=True, help="Hits shown per query.")
@click.option("--k-retrieve", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@handle_errors
def demo(images: int, k: int, k_retrieve: int, seed: int) -> None:
    """Train (or reuse) the default joint model, then search a small shapes collection in memory."""
    from search_backend.demo import run_demo

    run_demo(n_images=images, k=k, k_retrieve=k_retrieve, seed=seed, echo=click.echo)


# ---------------------------------------------------------------------------------------------
# indexing and search (cli/admin.py)

xmr.add_command(admin.collections)
xmr.add_command(admin.index)
xmr.add_command(admin.jobs)
xmr.add_command(admin.search_cmd)
xmr.add_command(admin.worker)
xmr.add_command(admin.serve)
xmr.add_command(backbone)


def main(argv: list[str] | None = None) -> Any:  # pragma: no cover - console entry
    return xmr.main(args=argv, prog_name="xmr")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
