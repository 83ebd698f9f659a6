"""Training on a user's manifest: bad items, validation and model selection, resume, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from search_backend.data.shapes import write_shapes
from search_backend.model import JointModel
from search_backend.training import ManifestData, TrainConfig, train, train_single
from search_backend.training.validation import Validator

ROOT = Path(__file__).resolve().parents[2]
XMR = str(Path(sys.executable).with_name("xmr"))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A 40-image shapes manifest with a non-image, a truncated PNG, a deleted file and a line
    naming a file that never existed; returns it and {image: expected reason start}."""
    root = tmp_path_factory.mktemp("manifest")
    path = write_shapes(root, "train", 40, 0, image_size=32)
    lines = path.read_text().splitlines()
    images = sorted({json.loads(line)["image"] for line in lines})
    (root / images[0]).write_bytes(b"this is not an image")
    data = (root / images[1]).read_bytes()
    (root / images[1]).write_bytes(data[: len(data) // 2])
    (root / images[2]).unlink()
    lines.append(json.dumps({"image": "images/never.png", "caption": "a red circle"}))
    path.write_text("\n".join(lines) + "\n")
    bad = {
        images[0]: "not a recognised image format",
        images[1]: "corrupt or truncated image",
        images[2]: "file not found",
        "images/never.png": "file not found",
    }
    return path, bad


def _cfg(tiny_backbone: Path, tiny_model_config: dict[str, int], manifest: Path, **kw: object) -> TrainConfig:
    base = TrainConfig(
        setup="joint",
        steps=4,
        batch_size=8,
        backbone=str(tiny_backbone),
        model=dict(tiny_model_config),
        manifest=str(manifest),
        val_fraction=0.2,
        val_queries=5,
        augment=False,
        log_every=1,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _weights(model: JointModel) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.net.state_dict().items()}


def _skipped(out: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    return {Path(r["image"]).name: r["reason"] for r in rows}


def test_a_manifest_with_bad_images_trains_and_reports_exactly_those(
    manifest: tuple[Path, dict[str, str]],
    tiny_backbone: Path,
    tiny_model_config: dict[str, int],
    tmp_path: Path,
) -> None:
    path, bad = manifest
    # a batch as large as the data holds every training image: each bad one is met at step 1
    cfg = _cfg(tiny_backbone, tiny_model_config, path, steps=6, batch_size=40)
    model = train(cfg, tmp_path / "m", progress=False)
    assert isinstance(model, JointModel) and model.config.trained == ["bi", "cross"]
    got = _skipped(tmp_path / "m")
    assert set(got) == {Path(k).name for k in bad}
    for image, reason in bad.items():
        assert got[Path(image).name].startswith(reason)
    summary = json.loads((tmp_path / "m" / "training.json").read_text())
    assert summary["steps"] == 6 and summary["skipped"] == len(bad)
    metrics = [json.loads(line) for line in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    evals = [m for m in metrics if m["kind"] == "eval"]
    assert len(evals) == 1 and set(evals[0]["results"]) == {"be", "rr"}
    assert (tmp_path / "m" / "curves.png").stat().st_size > 1000
    assert not (tmp_path / "m" / "checkpoint").exists()


def test_validation_keeps_the_best_step_and_stops_early(
    manifest: tuple[Path, dict[str, str]],
    tiny_backbone: Path,
    tiny_model_config: dict[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, _ = manifest
    scripted = iter([1.0, 3.0, 2.0, 2.5, 0.0])
    monkeypatch.setattr(Validator, "value", lambda self, results: next(scripted))
    cfg = _cfg(tiny_backbone, tiny_model_config, path, steps=10, eval_every=2, patience=2)
    model = train_single(cfg, tmp_path / "m", progress=False)
    summary = json.loads((tmp_path / "m" / "training.json").read_text())
    # evaluations at steps 2, 4, 6, 8: the best (3.0) is step 4; two without a gain stop at 8
    assert summary["steps"] == 8 and summary["selected_step"] == 4 and summary["value"] == 3.0
    evals = [
        json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines() if '"eval"' in x
    ]
    assert [(e["step"], e["best"]) for e in evals] == [(2, True), (4, True), (6, False), (8, False)]
    # the saved model holds the weights of step 4, not those of the last step
    at4 = train_single(replace(cfg, patience=0, eval_every=0), tmp_path / "to4", progress=False, stop_after=4)
    saved = _weights(JointModel.load(tmp_path / "m"))
    assert all(np.array_equal(saved[k], v) for k, v in _weights(at4).items())
    assert all(np.array_equal(saved[k], v) for k, v in _weights(model).items())


def test_batches_hold_each_image_once_and_workers_load_the_same_batches(
    manifest: tuple[Path, dict[str, str]],
) -> None:
    from search_backend.training.loader import StepBatches, batches

    path, bad = manifest
    data, problems = ManifestData.read(path, image_size=32)
    assert {Path(p.item).name for p in problems} == {Path(k).name for k in bad if "found" in bad[k]}
    assert all(len(data.captions[i]) == 5 for i in range(len(data)))  # one item per image
    steps = StepBatches(data, seed=3, batch_size=16)
    here = list(batches(steps, 0, 4, workers=0))
    there = list(batches(steps, 0, 4, workers=2))
    for a, b in zip(here, there, strict=True):
        assert len(set(a.idx.tolist())) == len(a.idx) == 16
        assert np.array_equal(a.idx, b.idx) and a.captions == b.captions
        assert np.array_equal(a.rows, b.rows) and np.array_equal(a.pixels, b.pixels)
        assert a.skipped == b.skipped


def test_a_manifest_with_no_usable_item_is_an_error_before_training(tmp_path: Path) -> None:
    from search_backend.data.manifest import ManifestError

    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "gone.png", "caption": "a cat"}) + "\n")
    with pytest.raises(ManifestError, match="no usable item"):
        ManifestData.read(tmp_path / "m.jsonl", image_size=32)


def test_a_validation_set_sharing_images_is_an_error_before_training(
    manifest: tuple[Path, dict[str, str]],
    tiny_backbone: Path,
    tiny_model_config: dict[str, int],
    tmp_path: Path,
) -> None:
    path, _ = manifest
    val = path.with_name("val_shared.jsonl")  # beside it, so that its relative paths name the same files
    val.write_text("".join(line + "\n" for line in path.read_text().splitlines()[40:60]))
    out = subprocess.run(
        [XMR, "train", "--manifest", str(path), "--val-manifest", str(val), "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 1
    assert "shares" in out.stderr and "image(s) with the training set" in out.stderr
    assert not (tmp_path / "m" / "checkpoint").exists()


def _cli_args(path: Path, backbone: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "train",
        "--manifest",
        str(path),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--batch-size",
        "8",
        "--backbone",
        str(backbone),
        "--val-fraction",
        "0.2",
        "--device",
        "cpu",
        "--set",
        "model.image_size=32",
        "--set",
        "model.embed_dim=16",
        "--set",
        "val_queries=5",
        "--set",
        "log_every=1",
        *extra,
    ]


def test_a_run_killed_mid_training_resumes_to_the_same_weights(
    manifest: tuple[Path, dict[str, str]], tiny_backbone: Path, tmp_path: Path
) -> None:
    path, _ = manifest
    env = {**os.environ, "XMR_THREADS": "1"}
    extra = ("--workers", "1", "--set", "checkpoint_every=3")
    full = subprocess.run(
        [XMR, *_cli_args(path, tiny_backbone, tmp_path / "full", 30, *extra)], env=env, capture_output=True
    )
    assert full.returncode == 0, full.stderr.decode()[-2000:]
    proc = subprocess.Popen(
        [XMR, *_cli_args(path, tiny_backbone, tmp_path / "cut", 30, *extra)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    state = tmp_path / "cut" / "checkpoint" / "train_state.pt"
    deadline = time.monotonic() + 240
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its loader worker
    proc.wait()
    assert state.is_file(), "the run ended before its first checkpoint"
    assert not (tmp_path / "cut" / "model.safetensors").exists()  # it really died mid-run
    again = subprocess.run(
        [XMR, *_cli_args(path, tiny_backbone, tmp_path / "cut", 30, *extra)], env=env, capture_output=True
    )
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    a, b = _weights(JointModel.load(tmp_path / "full")), _weights(JointModel.load(tmp_path / "cut"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    lines = lambda p: [x for x in (p / "metrics.jsonl").read_text().splitlines() if '"train"' in x]  # noqa: E731
    assert [json.loads(x)["step"] for x in lines(tmp_path / "cut")] == list(range(1, 31))


def test_two_gloo_processes_train_like_one_with_the_same_global_batch(
    manifest: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """torchrun, 2 CPU processes on loopback, each its half of every batch, against 1 process.

    The backbone has no dropout (otherwise each process draws its own masks) and no augmentation
    is drawn (crops are per row, so they would match too, but the test should not depend on it).
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from search_backend.model.backbone import default_backbone_dir

    backbone = tmp_path / "bert"
    tokenizer = AutoTokenizer.from_pretrained(default_backbone_dir(), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    path, _ = manifest
    env = {**os.environ, "XMR_THREADS": "1", "OMP_NUM_THREADS": "1"}
    # float32: under bfloat16 autocast (precision=auto on a CPU with native bf16) the two
    # summation orders round apart by more than the tolerance (1.01e-4 measured on the weights)
    args = ("--set", "augment=false", "--set", "precision=fp32")
    one = subprocess.run(
        [XMR, *_cli_args(path, backbone, tmp_path / "one", 5, *args)],
        env=env,
        capture_output=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr.decode()[-2000:]
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29651",
    ]
    two = subprocess.run(
        [*launcher, XMR, *_cli_args(path, backbone, tmp_path / "two", 5, *args)],
        env=env,
        capture_output=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr.decode()[-3000:]

    def losses(out: Path) -> list[tuple[float, float]]:
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        return [(r["bi"], r["ce"]) for r in rows if r["kind"] == "train"]

    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 5
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=0, atol=1e-4)
    wa, wb = _weights(JointModel.load(tmp_path / "one")), _weights(JointModel.load(tmp_path / "two"))
    assert max(float(np.abs(wa[k] - wb[k]).max()) for k in wa) < 1e-4
    assert not (tmp_path / "two" / "checkpoint").exists()
