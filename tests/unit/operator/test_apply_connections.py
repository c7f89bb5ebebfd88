"""Writes hand their connection back: many calls, one keep-alive connection (no new TLS each)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from kubetune_operator.apply import Writer

pytestmark = pytest.mark.unit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the API server speaks
    peers: set[tuple[str, int]] = set()
    create_status = 201
    posts = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Handler.posts += 1
        body = b'{"kind": "Status", "code": %d}' % Handler.create_status
        self.send_response(Handler.create_status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Handler.peers.add(self.client_address)
        body = b'{"kind": "Pod", "metadata": {}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        """The existing object, controlled by the job uid "u1" (ownership check)."""
        Handler.peers.add(self.client_address)
        body = b'{"metadata": {"ownerReferences": [{"uid": "u1", "controller": true}]}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.peers, Handler.posts, Handler.create_status = set(), 0, 201
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_sequential_writes_reuse_one_connection(server: str) -> None:
    writer = Writer(client.ApiClient(client.Configuration(host=server)))
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "s", "namespace": "ns"},
    }
    for _ in range(5):
        writer.apply(sa)
        writer.patch_status("ns", "job", "1", {"phase": "Running"})
    assert len(Handler.peers) == 1, f"{len(Handler.peers)} connections for 10 calls"


def test_creating_a_pod_that_exists_is_not_an_error(server: str) -> None:
    Handler.create_status = 409
    writer = Writer(client.ApiClient(client.Configuration(host=server)))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}
    assert writer.create(pod) is False
    assert writer.create(pod) is False
    assert Handler.posts == 2
    Handler.create_status = 500
    with pytest.raises(client.ApiException):
        writer.create(pod)


def test_a_supporting_child_is_created_and_applied_only_when_it_exists(server: str) -> None:
    """First attempt: one cheap create. Later attempts (the object exists): create, then
    apply, so the object matches what this operator renders now."""
    writer = Writer(client.ApiClient(client.Configuration(host=server)))
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "s",
            "namespace": "ns",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "J", "name": "j", "uid": "u1", "controller": True}
            ],
        },
    }
    writer.ensure(sa)
    assert (Handler.posts, len(Handler.peers)) == (1, 0), "created, not applied"
    Handler.create_status = 409
    writer.ensure(sa)
    assert (Handler.posts, len(Handler.peers)) == (2, 1), "exists: applied after the create"
