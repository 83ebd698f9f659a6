from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import xmr
from search_backend.model import JointModel


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_help_lists_the_commands(runner: CliRunner) -> None:
    out = runner.invoke(xmr, ["--help"])
    assert out.exit_code == 0
    for cmd in ("data", "demo", "eval", "train"):
        assert cmd in out.output


def test_data_shapes_writes_images_and_manifest(runner: CliRunner, tmp_path: Path) -> None:
    out = runner.invoke(
        xmr, ["data", "shapes", "--out", str(tmp_path), "--split", "val", "--size", "4", "--seed", "1"]
    )
    assert out.exit_code == 0, out.output
    lines = (tmp_path / "val.jsonl").read_text().splitlines()
    assert len(lines) == 20
    first = json.loads(lines[0])
    assert (tmp_path / first["image"]).is_file() and first["caption"]


def test_eval_json_layout(runner: CliRunner, tiny_model: JointModel, tmp_path: Path) -> None:
    tiny_model.save(tmp_path / "m")
    args = ["eval", "--model", str(tmp_path / "m"), "--size", "12", "--queries", "4", "--k", "5", "--json"]
    out = runner.invoke(xmr, args)
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (
        result["n_images"] == 12
        and result["n_captions"] == 60
        and result["n_queries"] == 4
        and result["k"] == 5
    )
    assert set(result["results"]) == {"be", "ce", "rr"}
    for res in result["results"].values():
        assert set(res) == {"t2i", "i2t", "ms_per_query"}
        assert set(res["t2i"]) == {"r1", "r5", "r10"}
        assert 0.0 <= res["t2i"]["r1"] <= res["t2i"]["r5"] <= res["t2i"]["r10"] <= 100.0


def test_eval_table_and_manifest(runner: CliRunner, tiny_model: JointModel, tmp_path: Path) -> None:
    tiny_model.save(tmp_path / "m")
    runner.invoke(xmr, ["data", "shapes", "--out", str(tmp_path / "d"), "--size", "6", "--image-size", "32"])
    args = [
        "eval",
        "--model",
        str(tmp_path / "m"),
        "--manifest",
        str(tmp_path / "d" / "test.jsonl"),
        "--queries",
        "3",
    ]
    out = runner.invoke(xmr, args)
    assert out.exit_code == 0, out.output
    assert "Image retrieval" in out.output and "RR  retrieve+rerank" in out.output


def test_eval_distractors_reports_each_kind_for_both_stages(
    runner: CliRunner, tiny_model: JointModel, tmp_path: Path
) -> None:
    tiny_model.save(tmp_path / "m")
    base = ["eval", "--model", str(tmp_path / "m"), "--size", "8", "--queries", "2", "--methods", "be"]
    out = runner.invoke(xmr, [*base, "--distractors", "40", "--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout.strip().splitlines()[-1])["distractors"]
    assert got["all"]["n"] == sum(v["n"] for k, v in got.items() if k != "all") > 0
    assert all(0.0 <= v[stage] <= 100.0 for v in got.values() for stage in ("be", "ce"))
    table = runner.invoke(xmr, [*base, "--distractors", "40"])
    assert table.exit_code == 0 and "hard-distractor accuracy" in table.output
    assert f"{got['all']['be']:5.1f} / {got['all']['ce']:5.1f}" in table.output
    refused = runner.invoke(xmr, [*base, "--distractors", "40", "--manifest", str(tmp_path / "x.jsonl")])
    assert refused.exit_code != 0 and "not with --manifest" in refused.output


def test_eval_reports_bad_manifest_items(runner: CliRunner, tiny_model: JointModel, tmp_path: Path) -> None:
    tiny_model.save(tmp_path / "m")
    (tmp_path / "broken.jpg").write_text("not an image")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "broken.jpg", "caption": "a red circle"}) + "\n")
    out = runner.invoke(xmr, ["eval", "--model", str(tmp_path / "m"), "--manifest", str(manifest)])
    assert out.exit_code != 0
    assert "broken.jpg" in out.output and "not a recognised image format" in out.output


def test_missing_model_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    out = runner.invoke(xmr, ["eval", "--model", str(tmp_path / "none"), "--size", "3"])
    assert out.exit_code != 0
    assert "does not exist" in out.output


def test_default_model_missing_tells_what_to_run(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XMR_HOME", str(tmp_path))
    monkeypatch.setenv("XMR_SHIPPED_MODEL", "false")  # an installation without the shipped model
    out = runner.invoke(xmr, ["eval", "--model", "default", "--size", "3"])
    assert out.exit_code != 0
    assert "xmr demo" in out.output


def test_eval_karpathy_split(runner: CliRunner, tiny_model: JointModel, tmp_path: Path) -> None:
    from search_backend.data.shapes import make_shapes

    tiny_model.save(tmp_path / "m")
    entries = []
    for n, item in enumerate(make_shapes("test", 4, 0, image_size=32)):
        item.image.save(tmp_path / f"{n}.png")
        entries.append(
            {
                "filename": f"{n}.png",
                "imgid": n,
                "split": "train" if n == 0 else "test",
                "sentences": [{"raw": c} for c in item.captions],
            }
        )
    (tmp_path / "dataset_shapes.json").write_text(json.dumps({"images": entries}))
    args = [
        "eval",
        "--model",
        str(tmp_path / "m"),
        "--manifest",
        str(tmp_path / "dataset_shapes.json"),
        "--split",
        "test",
        "--queries",
        "2",
        "--json",
    ]
    out = runner.invoke(xmr, args)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.strip().splitlines()[-1])["n_images"] == 3


def test_train_set_rejects_an_unknown_setting_before_training(runner: CliRunner, tmp_path: Path) -> None:
    out = runner.invoke(xmr, ["train", "--out", str(tmp_path / "m"), "--set", "hard_rat=0.5"])
    assert out.exit_code == 1
    assert "unknown training setting 'hard_rat'" in out.output
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--steps", "3", "--epochs", "1"], "--steps or --epochs"),
        (["--image-root", "/tmp"], "need --manifest"),
        (["--manifest", "m.jsonl"], "--out is required"),
        (
            ["--manifest", "m.jsonl", "--out", "o", "--val-manifest", "v.jsonl", "--val-fraction", "0.1"],
            "not both",
        ),
        (["--out", "o", "--set", "model.image_encoder=vit"], "unknown image_encoder 'vit'"),
        (["--out", "o", "--set", "select=rr.t2i.r3"], "select 'rr.t2i.r3'"),
    ],
)
def test_train_refuses_conflicting_or_bad_options(
    runner: CliRunner, tmp_path: Path, args: list[str], message: str
) -> None:
    out = runner.invoke(xmr, ["train", *args])
    assert out.exit_code != 0
    assert message in out.output


def test_train_epochs_become_steps_over_the_manifest(
    runner: CliRunner, tmp_path: Path, tiny_backbone: Path
) -> None:
    runner.invoke(
        xmr,
        [
            "data",
            "shapes",
            "--out",
            str(tmp_path / "d"),
            "--split",
            "train",
            "--size",
            "20",
            "--image-size",
            "32",
        ],
    )
    args = [
        "train",
        "--manifest",
        str(tmp_path / "d" / "train.jsonl"),
        "--out",
        str(tmp_path / "m"),
        "--epochs",
        "1.5",
        "--batch-size",
        "8",
        "--val-fraction",
        "0.2",
        "--backbone",
        str(tiny_backbone),
        "--set",
        "model.image_size=32",
        "--set",
        "model.embed_dim=16",
        "--set",
        "val_queries=4",
    ]
    out = runner.invoke(xmr, args)
    assert out.exit_code == 0, out.output
    summary = json.loads((tmp_path / "m" / "training.json").read_text())
    from search_backend.training.data import ManifestData, split_validation

    data, _ = ManifestData.read(tmp_path / "d" / "train.jsonl", image_size=32)
    train_items = len(split_validation(data, 0.2, seed=0)[0])
    assert summary["steps"] == -(-int(1.5 * train_items * 10) // 80)  # ceil(1.5 * items / 8)
    assert json.loads((tmp_path / "m" / "train_config.json").read_text())["steps"] == summary["steps"]
