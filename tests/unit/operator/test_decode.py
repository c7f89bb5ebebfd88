"""Decoding what the API server sends: no depth of nesting makes it raise, and Kopf decodes
through the same guard."""

from __future__ import annotations

import json

import pytest

from kubetune_operator import decode

pytestmark = pytest.mark.unit


def nested(depth: int, leaf: object = 1) -> object:
    """{"a": {"a": ... leaf}} with `depth` objects."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def deep_text(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("depth", [5000, 9999])
def test_a_body_too_deep_for_json_loads_is_cut_not_raised(depth: int) -> None:
    with pytest.raises(RecursionError):
        json.loads(deep_text(depth))
    body = decode.loads(b'{"kind": "FineTuneJob", "spec": ' + deep_text(depth) + b', "x": "[{"}')
    assert body["kind"] == "FineTuneJob" and body["x"] == "[{"
    assert decode.depth_of(body) == decode.MAX_DEPTH
    node = body
    for _ in range(decode.MAX_DEPTH):
        node = node["spec"] if "spec" in node else node["a"]
    assert node == decode.TOO_DEEP


def test_brackets_inside_strings_are_not_nesting() -> None:
    text = json.dumps({"s": "{[" * 500, "t": 'a\\"{', "deep": nested(3)}).encode()
    assert decode.cut_deep(text, 100) == text
    assert json.loads(decode.cut_deep(text, 2)) == {
        "s": "{[" * 500,
        "t": 'a\\"{',
        "deep": {"a": decode.TOO_DEEP},
    }


def test_shallow_bodies_decode_unchanged() -> None:
    body = {"metadata": {"name": "x"}, "spec": {"l": [1, [2, {"b": None}]], "f": 1.5}}
    assert decode.loads(json.dumps(body)) == body
    assert decode.bounded_copy(body) == body and decode.bounded_copy(body) is not body


def test_bounded_copy_cuts_what_deepcopy_cannot_copy() -> None:
    body = {"spec": nested(3000)}
    cut = decode.bounded_copy(body)
    assert decode.depth_of(cut) == decode.MAX_DEPTH
    assert decode.depth_of(body) == 3001


def test_kopf_decodes_watch_lines_and_listings_through_the_guard() -> None:
    import aiohttp
    from kopf._cogs.clients import api

    decode.guard_kopf()
    decode.guard_kopf()  # twice is harmless (handlers import it once per process)
    assert api.json.loads(deep_text(5000))["a"]["a"]  # the watch stream's decoder
    loads = aiohttp.ClientResponse.json.__kwdefaults__["loads"]  # listings' decoder
    assert decode.depth_of(loads(deep_text(5000))) == decode.MAX_DEPTH


def test_the_apiservers_answer_to_a_write_is_decoded_through_the_guard() -> None:
    """The status patch of a deep job answers with the whole object: reading that answer must
    not raise either, or the job's InvalidSpec status is written but its event never is."""
    from kubetune_operator.responses import as_json

    class RawResponse:
        data = b'{"kind": "FineTuneJob", "spec": ' + deep_text(9000) + b"}"

    body = as_json(RawResponse())
    assert body["kind"] == "FineTuneJob"
    assert decode.depth_of(body) == decode.MAX_DEPTH
