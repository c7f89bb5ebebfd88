"""Raw API responses (`_preload_content=False`): read as JSON, or drained, and their keep-alive
connection handed back to the pool. Shared by the reader (fetch.py) and the writer (apply.py)."""

from __future__ import annotations

from typing import Any

from kubetune_operator import decode


def as_json(response: Any) -> Any:
    """Body of a raw (not preloaded) response as plain JSON data; a job nested too deep for
    Python's decoder comes back cut down (decode.loads), never as a RecursionError."""
    return decode.loads(response.data)


def done(response: Any) -> None:
    """Read a raw response to its end and hand its connection back to the pool.

    An unread response cannot give its keep-alive connection back: the next call then opens
    a new TCP + TLS connection, which costs both sides far more than the request itself.
    """
    response.read()
    response.release_conn()
