"""JSON from the API server, decoded and copied without trusting how deep it nests.

The apiserver stores free-form fields (x-kubernetes-preserve-unknown-fields) up to its own
JSON limit of 10,000 levels. Python's json.loads gives up near 1,000 levels (RecursionError)
and copy.deepcopy near 500; either, raised in Kopf's watch stream or in a reconcile pass, would
end the watcher (and the operator, again on every restart, since the initial listing holds the
object) or leave that job without a status. Every body the operator reads is decoded by
`loads`, and every job it keeps is copied by `bounded_copy`: a container nested deeper than
MAX_DEPTH is replaced by the string TOO_DEEP, so what a pass works on has bounded depth, and
the spec check (kubetune_operator.api.spec) then refuses that job naming the field, while
every other job keeps reconciling.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Far deeper than any valid object (the spec allows free-form fields 16 levels), far below
# where Python's own recursion gives up.
MAX_DEPTH = 100
TOO_DEEP = f"<nested deeper than {MAX_DEPTH} levels: not decoded>"

# A JSON string (escapes included) or a bracket: strings are skipped whole, so a bracket
# inside one is never counted.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def loads(data: str | bytes | bytearray) -> Any:
    """json.loads, except that a body too deep for it comes back with containers deeper than
    MAX_DEPTH replaced by TOO_DEEP.

    The fast C decoder is tried first; only a body it cannot decode for its depth is cut down
    in one pass over its text. A body it could decode may still nest a few hundred levels:
    what the operator keeps of a job goes through `bounded_copy` (fetch.job_entry).
    """
    try:
        return json.loads(data)
    except RecursionError:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        return json.loads(cut_deep(raw, MAX_DEPTH))


def cut_deep(text: bytes, limit: int) -> bytes:
    """The JSON text with every container opened below depth `limit` replaced by TOO_DEEP.

    One pass over the brackets, without recursion; the result is valid JSON when the input is.
    """
    marker = json.dumps(TOO_DEEP).encode()
    out: list[bytes] = []
    depth, pos, cut_at = 0, 0, -1
    for m in _TOKENS.finditer(text):
        token = m.group()
        if token[:1] == b'"':
            continue
        if token in (b"{", b"["):
            depth += 1
            if depth == limit + 1:
                out += [text[pos : m.start()], marker]
                cut_at = depth
        else:
            if depth == cut_at:
                pos, cut_at = m.end(), -1
            depth -= 1
    out.append(text[pos:] if cut_at == -1 else b"")
    return b"".join(out)


def bounded_copy(value: Any, limit: int = MAX_DEPTH) -> Any:
    """A deep copy of decoded JSON (dicts, lists, scalars) in which containers below depth
    `limit` are replaced by TOO_DEEP; iterative, so no depth makes it raise."""
    if not isinstance(value, (dict, list)):
        return value
    root: Any = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, Any, int]] = [(value, root, 1)]
    while stack:
        src, dst, depth = stack.pop()
        items = src.items() if isinstance(src, dict) else enumerate(src)
        for key, child in items:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    copy: Any = TOO_DEEP
                else:
                    copy = {} if isinstance(child, dict) else []
                    stack.append((child, copy, depth + 1))
            else:
                copy = child
            if isinstance(dst, dict):
                dst[key] = copy
            else:
                dst.append(copy)
    return root


def depth_of(value: Any) -> int:
    """How many containers deep `value` nests (a scalar: 0); iterative."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


class _KopfJson:
    """Stands in for the json module inside Kopf's API client (it calls json.loads)."""

    loads = staticmethod(loads)
    dumps = staticmethod(json.dumps)


def guard_kopf() -> None:
    """Make Kopf decode what it reads from the API server with `loads`.

    Kopf decodes each watch-stream line with `json.loads` in kopf._cogs.clients.api, and
    listings with aiohttp's `ClientResponse.json()`. Both are pointed at `loads`; if a Kopf or
    aiohttp upgrade moved them, this raises at startup rather than leaving the operator
    unguarded (a test checks both hooks).
    """
    import aiohttp
    from kopf._cogs.clients import api

    if getattr(api, "json", None) is not json and getattr(api, "json", None) is not _KopfJson:
        raise RuntimeError("kopf._cogs.clients.api no longer decodes with the json module")
    defaults = aiohttp.ClientResponse.json.__kwdefaults__
    if not defaults or "loads" not in defaults:
        raise RuntimeError("aiohttp.ClientResponse.json takes no `loads` argument any more")
    api.json = _KopfJson  # type: ignore[assignment]
    defaults["loads"] = loads
