"""The derived default: the relation recipe's phases from a source model, and its installation."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import xmr
from search_backend.model import JointModel, load_model
from search_backend.training.derive import (
    DERIVED_INFO,
    RELATION_RECIPE,
    check_derived,
    derive,
    derive_checked,
    derive_heads,
    derived_info,
    install_default,
    recipe_commands,
)
from search_backend.training.trainer import TrainConfig, train_single

# Tiny runs of the real recipe: every phase setting kept, only its length and data cut down.
QUICK = ("steps=2", "pool_size=60", "batch_size=6")


@pytest.fixture(scope="module")
def source(
    tiny_backbone: Path, tiny_model_config: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny trained joint model with late fusion and no cross-attention block (like the shipped one)."""
    out = tmp_path_factory.mktemp("source") / "model"
    cfg = TrainConfig(
        steps=1,
        batch_size=6,
        pool_size=60,
        backbone=str(tiny_backbone),
        model={**tiny_model_config, "cross_layers": 1, "cross_readout": "residual"},
    )
    train_single(cfg, out, progress=False)
    return out


def _weights(path: Path) -> dict[str, np.ndarray]:
    model = JointModel.load(path)
    return {k: v.detach().numpy().copy() for k, v in model.net.state_dict().items()}


def test_each_phase_grows_its_module_and_the_head_trains_alone(source: Path, tmp_path: Path) -> None:
    final = derive(tmp_path / "work", source=source, extra=QUICK, progress=False)
    assert final == tmp_path / "work" / "model"
    start, base, model = _weights(source), _weights(tmp_path / "work" / "base"), _weights(final)
    grown = set(base) - set(start)
    assert grown and all(k.startswith("cross_blocks.") for k in grown)
    assert any(not np.array_equal(start[k], base[k]) for k in start)  # phase 1 trains the whole model
    head = set(model) - set(base)
    assert head and all(k.startswith("relation.") for k in head)
    assert all(np.array_equal(base[k], model[k]) for k in base)  # phases 2 and 3: the head alone
    mirror = _weights(tmp_path / "work" / "mirror")
    assert set(mirror) == set(model) and any(not np.array_equal(mirror[k], model[k]) for k in head)
    assert np.abs(model["relation.score.weight"]).max() > 0


def test_heads_share_the_first_phase_and_train_in_parallel_under_their_own_seeds(
    source: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    finals = derive_heads(work, source=source, extra=QUICK, heads=2, threads=2, progress=False)
    assert finals == [work / "model", work / "head1" / "model"]
    assert not (work / "head1" / "base").exists()  # the first phase is trained once
    a, b = _weights(finals[0]), _weights(finals[1])
    assert all(np.array_equal(a[k], b[k]) for k in a if not k.startswith("relation."))
    assert any(not np.array_equal(a[k], b[k]) for k in a if k.startswith("relation."))
    head1 = recipe_commands(source.resolve(), work, extra=QUICK, head=1)
    assert head1[0] == recipe_commands(source.resolve(), work, extra=QUICK)[0]
    assert f"--out {work / 'head1' / 'mirror'}" in head1[1] and f"init_from={work / 'base'}" in head1[1]
    assert head1[1].endswith("--set seed=1") and f"init_from={work / 'head1' / 'mirror'}" in head1[2]
    assert derived_info(work, source, extra=QUICK, head=1)["commands"] == head1
    with pytest.raises(ValueError, match="heads"):
        derive_heads(work, source=source, extra=QUICK, heads=0)


def test_a_finished_phase_is_kept_and_another_recipe_is_refused(source: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    derive(work, source=source, extra=QUICK, progress=False)
    stamp = (work / "base" / "model.safetensors").stat().st_mtime_ns
    derive(work, source=source, extra=QUICK, progress=False)
    assert (work / "base" / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="another recipe"):
        derive(work, source=source, extra=(*QUICK, "lr_new=1e-2"), progress=False)
    with pytest.raises(ValueError, match="no such model folder"):
        derive(tmp_path / "other", source=tmp_path / "missing", progress=False)


def test_an_interrupted_phase_resumes_to_the_same_weights(source: Path, tmp_path: Path) -> None:
    whole = derive(tmp_path / "a", source=source, extra=QUICK, progress=False)
    # phase 2 stopped after its first step: its checkpoint is all that is left of it
    derive(tmp_path / "b", source=source, extra=QUICK, recipe=RELATION_RECIPE[:1], progress=False)
    from search_backend.training.recipes import default_recipe, with_overrides

    phase = RELATION_RECIPE[1]
    settings = [f"init_from={tmp_path / 'b' / 'base'}", *phase.settings, *QUICK]
    cfg = with_overrides(default_recipe(phase.setup, seed=0), settings)
    train_single(cfg, tmp_path / "b" / phase.name, stop_after=1, progress=False)
    assert (tmp_path / "b" / phase.name / "checkpoint").exists()
    (tmp_path / "b" / "RECIPE.json").unlink()  # the one-phase run recorded a one-phase recipe
    resumed = derive(tmp_path / "b", source=source, extra=QUICK, progress=False)
    a, b = _weights(whole), _weights(resumed)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_install_puts_a_whole_model_in_place_and_records_how(source: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    final = derive(work, source=source, extra=QUICK, progress=False)
    target = tmp_path / "home" / "models" / "default"
    info = derived_info(work, source, extra=QUICK)
    install_default(final, target, info=info)
    assert not (target / "checkpoint").exists()
    assert not list(target.parent.glob(".default.*"))
    record = json.loads((target / DERIVED_INFO).read_text())
    assert record["commands"] == recipe_commands(source.resolve(), work, extra=QUICK)
    assert all(f"--set {s}" in record["commands"][1] for s in RELATION_RECIPE[1].settings)
    assert f"init_from={source.resolve()}" in record["commands"][0]
    assert f"init_from={work / 'base'}" in record["commands"][1]
    import hashlib

    assert record["weights_sha256"] == hashlib.sha256((target / "model.safetensors").read_bytes()).hexdigest()
    assert record["training_seconds"] > 0
    loaded = load_model(target)
    assert isinstance(loaded, JointModel) and loaded.config.relation_head == 64
    with pytest.raises(FileExistsError, match="already holds a model"):
        install_default(final, target, info=info)
    (target / "marker").write_text("old")
    install_default(final, target, info=info, force=True)
    assert not (target / "marker").exists() and (target / DERIVED_INFO).is_file()


def test_the_val_check_measures_the_derived_model_on_val(source: Path, tmp_path: Path) -> None:
    final = derive(tmp_path / "work", source=source, extra=QUICK, progress=False)
    check = check_derived(final, size=40, queries=20)
    assert check["split"] == "val" and check["size"] == 40 and check["queries"] == 20
    r1 = check["r1"]
    assert all(0.0 <= r1[m][d] <= 100.0 for m in ("be", "rr") for d in ("t2i", "i2t"))
    assert check["gain"]["t2i"] == pytest.approx(r1["rr"]["t2i"] - r1["be"]["t2i"], abs=0.05)


def test_a_derivation_below_the_line_is_derived_again_under_the_next_seed(
    source: Path, tmp_path: Path
) -> None:
    gains = iter([1.0, 9.0])
    seen: list[Path] = []

    def check(model_dir: Path) -> dict[str, object]:  # the measured gain is scripted here
        seen.append(model_dir)
        return {"gain": {"t2i": next(gains), "i2t": 0.0}}

    work = tmp_path / "work"
    said: list[str] = []
    kept, tried = derive_checked(
        work,
        source=source,
        extra=(*QUICK, "seed=3"),
        attempts=2,
        check=check,
        progress=False,
        say=said.append,
    )
    assert [a.work for a in tried] == [work, work / "retry1"]
    assert seen == [work / "model", work / "retry1" / "model"]
    assert kept is tried[1] and kept.extra[-1] == "seed=4"  # the seed the settings gave, plus 1
    assert "seed=4" in json.loads((work / "retry1" / "RECIPE.json").read_text())["commands"][0]
    assert "below the line" in said[0] and "kept" in said[1]
    a, b = _weights(tried[0].model), _weights(kept.model)
    assert any(not np.array_equal(a[k], b[k]) for k in a)  # another seed, another model

    worse = iter([2.0, -1.0])
    best, both = derive_checked(
        tmp_path / "w2",
        source=source,
        extra=QUICK,
        attempts=2,
        check=lambda _m: {"gain": {"t2i": next(worse)}},
        progress=False,
        say=said.append,
    )
    assert best is both[0] and "keeping the best" in said[-1] and "--attempts" in said[-1]
    with pytest.raises(ValueError, match="attempts"):
        derive_checked(tmp_path / "w3", source=source, attempts=0, check=check)


def test_cli_derives_installs_and_then_keeps_the_default(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XMR_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    quick = [arg for s in QUICK for arg in ("--set", s)]
    printed = runner.invoke(xmr, ["model", "derive", "--from", str(source), "--print", *quick])
    assert printed.exit_code == 0, printed.output
    lines = printed.output.strip().splitlines()
    assert len(lines) == 2 * len(RELATION_RECIPE) - 1 and lines[0].startswith("xmr train --setup joint")
    assert str(tmp_path / "home" / "derive" / "relation" / "base") in lines[0]
    assert all("head1" in line for line in lines[len(RELATION_RECIPE) :])  # head 1's own phases
    assert not (tmp_path / "home" / "models").exists()
    out = runner.invoke(xmr, ["model", "derive", "--from", str(source), "--attempts", "1", *quick])
    assert out.exit_code == 0, out.output
    target = tmp_path / "home" / "models" / "default"
    assert (target / DERIVED_INFO).is_file() and "installed as the default" in out.output
    record = json.loads((target / DERIVED_INFO).read_text())
    checked = record["val_checks"]  # two heads (the default), each checked; the best kept
    assert [c["head"] for c in checked] == [0, 1] and out.output.count("val check of") == 2
    assert all(c["split"] == "val" and set(c["gain"]) == {"t2i", "i2t"} for c in checked)
    score = [c["gain"]["t2i"] + c["gain"]["i2t"] for c in checked]
    assert record["head"] == int(score[1] > score[0])
    work = tmp_path / "home" / "derive" / "relation"
    assert "removed the phases" in out.output and not work.exists()  # the default is a whole copy
    kept = runner.invoke(
        xmr, ["model", "derive", "--from", str(source), "--force", "--keep-work", "--no-check", *quick]
    )
    assert kept.exit_code == 0, kept.output
    assert all((work / phase.name / "model.safetensors").is_file() for phase in RELATION_RECIPE)
    again = runner.invoke(xmr, ["model", "derive", "--from", str(source), "--if-missing", *quick])
    assert again.exit_code == 0 and f"default model: {target}" in again.output
    refused = runner.invoke(xmr, ["model", "derive", "--from", str(source), *quick])
    assert refused.exit_code != 0 and "already holds a model" in refused.output
    monkeypatch.setenv("XMR_SHIPPED_MODEL", "false")
    skipped = runner.invoke(xmr, ["model", "derive", "--if-missing"])
    assert skipped.exit_code == 0 and "no shipped model" in skipped.output


def test_removing_the_phases_keeps_anything_else_in_the_folder(tmp_path: Path) -> None:
    from search_backend.training.derive import remove_phases

    work, retry = tmp_path / "w", tmp_path / "w" / "retry1"
    for folder in (work, retry):
        for phase in RELATION_RECIPE:
            (folder / phase.name).mkdir(parents=True)
            (folder / phase.name / "model.safetensors").write_bytes(b"x" * 10)
        (folder / "RECIPE.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    assert remove_phases([tmp_path / "empty"]) == 0 and not (tmp_path / "empty").exists()
    (work / "notes.txt").write_text("the user's")
    freed = remove_phases([work, retry])
    assert freed == 2 * (10 * len(RELATION_RECIPE) + 2)
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_derives_the_default_first_unless_told_not_to() -> None:
    root = Path(__file__).resolve().parents[2]

    def planned(*args: str) -> list[str]:
        # -n: print the commands only; -o install: take the virtualenv as made
        done = subprocess.run(
            ["make", "-s", "-n", "-o", "install", "-C", str(root), "demo", *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return [line.split("/")[-1] for line in done.stdout.splitlines() if "xmr" in line]

    assert planned() == ["xmr model derive --if-missing", "xmr demo"]
    assert planned("DERIVE=0") == ["xmr demo"]
