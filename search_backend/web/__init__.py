"""The search page: static HTML/CSS/JS served by ``xmr serve`` at ``/`` (no build step, no CDN),
and the thumbnails it shows.

``STATIC_DIR`` holds ``index.html``, ``app.js`` and ``style.css``; the routes that serve them
(and the JSON the page reads) are in :mod:`search_backend.rerank.web`.
"""

from __future__ import annotations

from pathlib import Path

from search_backend.web.thumbnails import ThumbnailNotFoundError, check_item_id, thumbnail_file

__all__ = ["INDEX_HTML", "STATIC_DIR", "ThumbnailNotFoundError", "check_item_id", "thumbnail_file"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX_HTML = STATIC_DIR / "index.html"
