"""A test's own service-mode environment: settings as env vars, `xmr worker` processes, helpers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from search_backend.config import get_settings
from search_backend.jobs.db import make_engine
from search_backend.jobs.queries import JobSummary, get_job
from search_backend.stores.factory import open_store

__all__ = ["REPO", "XMR", "Cluster", "started_cluster"]

REPO = Path(__file__).resolve().parents[1]
XMR = str(Path(sys.executable).parent / "xmr")


class Cluster:
    """The environment of one test: settings as env vars, worker processes, helpers."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.settings = get_settings(env)
        self.workers: list[subprocess.Popen[bytes]] = []

    def xmr(self, *args: str) -> str:
        done = subprocess.run(
            [XMR, *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def start_worker(self) -> subprocess.Popen[bytes]:
        with (self.logs / f"worker{len(self.workers)}.log").open("ab") as log:
            proc = subprocess.Popen(
                [XMR, "worker", "--pool", "solo", "--loglevel", "INFO"],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def submit(self, manifest: Path) -> int:
        out = self.xmr("index", str(manifest), "--collection", "c", "--json")
        return int(json.loads(out.splitlines()[-1])["id"])

    def job(self, job_id: int) -> JobSummary:
        engine = make_engine(self.settings)
        try:
            return get_job(engine, job_id)
        finally:
            engine.dispose()

    def wait(self, job_id: int, until: Callable[[JobSummary], bool], timeout: float = 120) -> JobSummary:
        deadline = time.monotonic() + timeout
        while True:
            try:
                job = self.job(job_id)
                if until(job):
                    return job
            except Exception as exc:  # the database may be down on purpose
                if "OperationalError" not in type(exc).__name__:
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not get there in {timeout} s: {self.job(job_id)}")
            time.sleep(0.05)

    def stored(self) -> int:
        return open_store(self.settings).count("c")

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=20)


def started_cluster(
    tmp_path: Path, model_dir: Path, redis_url: str, database_url: str, **extra: str
) -> Iterator[Cluster]:
    """A migrated job database with collection ``c``; worker processes are stopped afterwards."""
    from search_backend.jobs.db import upgrade

    env = {
        **os.environ,
        "XMR_HOME": str(tmp_path / "home"),
        "XMR_MODEL": str(model_dir),
        "XMR_BROKER_URL": redis_url,
        "XMR_DATABASE_URL": database_url,
        "XMR_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        **extra,
    }
    c = Cluster(env, tmp_path)
    upgrade(c.settings)
    c.xmr("collections", "create", "c")
    try:
        yield c
    finally:
        c.close()
