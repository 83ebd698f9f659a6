"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis): no 5xx, answers as the schema says.

Bounded: a few dozen generated requests per operation (``XMR_FUZZ_EXAMPLES``, default 40), no
deadline per example, in-process (ASGI) against an indexed collection and a tiny model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from search_backend.config import Settings
from search_backend.data.manifest import read_manifest
from search_backend.jobs.collections import create_collection
from search_backend.jobs.db import ready_engine
from search_backend.jobs.embedded import run_job_inline
from search_backend.jobs.submit import submit_job
from search_backend.rerank.service import create_app
from search_backend.stores.factory import open_store
from tests._indexing import write_mixed_manifest

EXAMPLES = int(os.environ.get("XMR_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Any:
    tmp = tmp_path_factory.mktemp("fuzz")
    config = Settings(
        home=tmp / "home",
        model=str(tiny_model_dir),
        threads=1,
        image_roots=str(tmp / "data" / "images"),
        max_request_bytes=2_000_000,
        request_timeout=20.0,
    )
    engine, store = ready_engine(config), open_store(config)
    create_collection(engine, store, config, "c")
    manifest = write_mixed_manifest(tmp / "data", n_good=3)
    job = submit_job(engine, "c", read_manifest(manifest, check_images=False), "m", batch_size=16)
    run_job_inline(config, engine, store, job.job_id, job.batches)
    return create_app(config)


def test_api_answers_as_its_schema_says(fuzz_app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/search", "/rerank", "/health", "/metrics"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
        )
        def run(case: Any) -> None:
            case.call_and_validate(checks=checks)

        run()
