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
