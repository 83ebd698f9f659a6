from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search_backend.data.state_store import STATE_MAX_BYTES, StateStore
from search_backend.model.states import ImageStates

KEY = "ab" * 16
CK = "0123456789abcdef" * 2 + "01234567"


def _states(dim: int = 4) -> ImageStates:
    rng = np.random.default_rng(0)
    vector = rng.normal(size=dim).astype(np.float32) if dim else None
    return ImageStates(rng.normal(size=(5, 8)).astype(np.float16), vector)


def test_states_round_trip_exactly(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    st = _states()
    path = store.write(KEY, CK, st)
    assert path == tmp_path / KEY / CK[:2] / f"{CK}.npy"
    got = store.read(KEY, CK, (5, 8), 4)
    assert got is not None and got.vector is not None and st.vector is not None
    assert np.array_equal(got.tokens, st.tokens) and np.array_equal(got.vector, st.vector)
    store.write(KEY, CK, _states(0))  # content-addressed: an existing file stays
    assert store.read(KEY, CK, (5, 8), 4) is not None
    other = StateStore(tmp_path / "no-vector")
    other.write(KEY, CK, _states(0))
    got = other.read(KEY, CK, (5, 8), 0)
    assert got is not None and got.vector is None


def test_anything_but_the_expected_states_reads_as_missing(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.read(KEY, CK, (5, 8), 4) is None  # never written
    store.write(KEY, CK, _states())
    assert store.read(KEY, CK, (6, 8), 4) is None  # another model's shape
    assert store.read(KEY, CK, (5, 8), 0) is None
    assert store.read("cd" * 16, CK, (5, 8), 4) is None  # another model's key
    path = store.path(KEY, CK)
    path.write_bytes(path.read_bytes()[:-10])  # cut short
    assert store.read(KEY, CK, (5, 8), 4) is None
    with path.open("wb") as fh:  # a pickled object array is never loaded
        np.save(fh, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert store.read(KEY, CK, (5, 8), 4) is None
    with path.open("wb") as fh:
        np.save(fh, np.full((5, 8), np.nan, dtype=np.float16))
        np.save(fh, np.zeros(4, dtype=np.float32))
    assert store.read(KEY, CK, (5, 8), 4) is None  # not finite
    path.write_bytes(b"\0" * (STATE_MAX_BYTES + 1))
    assert store.read(KEY, CK, (5, 8), 4) is None  # oversized: not read at all


def test_keys_and_checksums_cannot_leave_the_folder(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for key, ck in [("../" + KEY, CK), (KEY, "../" + CK), (KEY, "x" * 40), ("", CK)]:
        with pytest.raises(ValueError):
            store.path(key, ck)
        assert store.read(key, ck, (5, 8), 4) is None
