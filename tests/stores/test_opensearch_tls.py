"""The OpenSearch store over TLS with basic auth, for real: Debian's nginx terminates TLS (a private
CA) and checks the password in front of the local node (``bash scripts/tls_proxy.sh start``).

The URL, CA, user and password come from ``eval "$(bash scripts/tls_proxy.sh env)"`` (defaults:
those of the script). Skipped when the proxy does not answer, or failed with XMR_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from search_backend.config import get_settings
from search_backend.stores import StoreError
from search_backend.stores.opensearch_store import OpenSearchStore

REPO = Path(__file__).resolve().parents[2]
URL = os.environ.get("XMR_TEST_TLS_URL", "https://127.0.0.1:19443")
CA = os.environ.get("XMR_TEST_TLS_CA", str(REPO / ".work" / "services" / "tls-proxy" / "ca.crt"))
USER = os.environ.get("XMR_TEST_TLS_USER", "xmr")
PASSWORD = os.environ.get("XMR_TEST_TLS_PASSWORD", "xmr-proxy-secret")


@pytest.fixture()
def tls_env() -> Iterator[dict[str, str]]:
    import httpx

    try:
        r = httpx.get(URL, auth=(USER, PASSWORD), verify=ssl.create_default_context(cafile=CA), timeout=10)
        r.raise_for_status()
    except Exception as error:
        message = f"no TLS proxy at {URL} ({type(error).__name__}: {error}); bash scripts/tls_proxy.sh start"
        if os.environ.get("XMR_REQUIRE_SERVICES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    prefix = f"xmrtls-{uuid.uuid4().hex[:8]}-"
    env = {
        "XMR_OPENSEARCH_URL": URL,
        "XMR_OPENSEARCH_USER": USER,
        "XMR_OPENSEARCH_PASSWORD": PASSWORD,
        "XMR_OPENSEARCH_CA_CERTS": CA,
        "XMR_OPENSEARCH_INDEX_PREFIX": prefix,
        "XMR_STORE": "opensearch",
    }
    yield env
    httpx.delete(
        f"{URL}/{prefix}*", auth=(USER, PASSWORD), verify=ssl.create_default_context(cafile=CA), timeout=30
    )


def test_store_over_tls_with_basic_auth(tls_env: dict[str, str]) -> None:
    store = OpenSearchStore.from_settings(get_settings(tls_env))
    store.create_collection("secure", 4)
    vecs = np.eye(4, dtype=np.float32)
    store.upsert("secure", ["a", "b", "c", "d"], vecs, [{"kind": "image", "source": f"/{i}"} for i in "abcd"])
    assert store.count("secure") == 4
    assert store.knn("secure", vecs[2], 2)[0].id == "c"
    assert store.get("secure", ["b", "x"]) == [{"kind": "image", "source": "/b"}, None]
    store.drop_collection("secure")


def test_wrong_password_and_untrusted_certificate_are_clear_errors(tls_env: dict[str, str]) -> None:
    wrong = OpenSearchStore.from_settings(get_settings({**tls_env, "XMR_OPENSEARCH_PASSWORD": "nope"}))
    with pytest.raises(StoreError, match="401"):
        wrong.has_collection("secure")
    untrusted = {k: v for k, v in tls_env.items() if k != "XMR_OPENSEARCH_CA_CERTS"}
    with pytest.raises(StoreError, match="TLS with OpenSearch"):
        OpenSearchStore.from_settings(get_settings(untrusted)).has_collection("secure")
