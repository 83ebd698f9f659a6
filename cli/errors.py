"""Turn expected failures into one clear line on stderr and a non-zero exit code."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["handle_errors"]

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Expected errors (bad input, missing model, ...): ``Error: <message>`` on stderr, exit status 1."""
    from search_backend.data.images import ImageError
    from search_backend.data.manifest import ManifestError
    from search_backend.jobs.db import SchemaError
    from search_backend.model.base import ModelLoadError

    expected = (
        ImageError,
        ManifestError,
        ModelLoadError,
        SchemaError,
        FileNotFoundError,
        LookupError,
        ValueError,
    )

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except expected as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            if type(exc).__name__ == "OperationalError":  # sqlalchemy / sqlite3: no database
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise click.ClickException(f"database unavailable: {first}") from exc
            raise

    return wrapper  # type: ignore[return-value]
