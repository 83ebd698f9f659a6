"""Collections: a named set of vectors in the store, made by one model, tracked in SQL."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from search_backend.jobs.db import session_scope
from search_backend.jobs.models import Collection, Job
from search_backend.stores.base import StoreError, UnknownCollectionError, check_collection_name

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from search_backend.config import Settings
    from search_backend.stores.base import VectorStore

__all__ = [
    "CollectionSummary",
    "create_collection",
    "drop_collection",
    "get_collection",
    "list_collections",
]


@dataclass(frozen=True)
class CollectionSummary:
    """What ``xmr collections list --json`` prints for one collection."""

    name: str
    dim: int
    model: str
    images: int
    """Image vectors in the store."""
    captions: int
    """Caption vectors in the store."""
    jobs: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def get_collection(session: Session, name: str) -> Collection:
    """The collection row named ``name``; :class:`UnknownCollectionError` if there is none."""
    from sqlalchemy import select

    check_collection_name(name)
    row = session.scalars(select(Collection).where(Collection.name == name)).one_or_none()
    if row is None:
        raise UnknownCollectionError(name)
    return row


def create_collection(
    engine: Engine, store: VectorStore, settings: Settings, name: str, model: str | None = None
) -> CollectionSummary:
    """Create ``name`` for the vectors of ``model`` (default: ``settings.model``).

    The model is loaded once to learn its vector dimension; its resolved folder is recorded so
    that indexing and search always use the model that made the vectors.
    """
    from sqlalchemy import select

    from search_backend.model.loading import cached_model, resolve_model_path

    check_collection_name(name)
    with session_scope(engine) as s:
        if s.scalars(select(Collection).where(Collection.name == name)).one_or_none() is not None:
            raise StoreError(f"collection {name!r} already exists")
    folder = resolve_model_path(model or settings.model, settings).resolve()
    dim = int(cached_model(folder).encode_texts(["dimension probe"]).shape[1])
    store.create_collection(name, dim, exist_ok=True)
    with session_scope(engine) as s:
        s.add(Collection(name=name, dim=dim, model=str(folder)))
    return CollectionSummary(name=name, dim=dim, model=str(folder), images=0, captions=0, jobs=0)


def list_collections(engine: Engine, store: VectorStore) -> list[CollectionSummary]:
    from sqlalchemy import func, select

    out = []
    with session_scope(engine) as s:
        rows = s.execute(
            select(Collection, func.count(Job.id))
            .outerjoin(Job, Job.collection_id == Collection.id)
            .group_by(Collection.id)
            .order_by(Collection.name)
        ).all()
        for col, n_jobs in rows:
            images = captions = 0
            if store.has_collection(col.name):
                images = store.count(col.name, {"kind": "image"})
                captions = store.count(col.name, {"kind": "caption"})
            out.append(CollectionSummary(col.name, col.dim, col.model, images, captions, int(n_jobs)))
    return out


def drop_collection(engine: Engine, store: VectorStore, name: str) -> None:
    """Delete the collection's vectors, jobs and items."""
    with session_scope(engine) as s:
        s.delete(get_collection(s, name))
    if store.has_collection(name):
        store.drop_collection(name)
