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
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}
    for _ in range(5):
        writer.apply(pod)
        writer.patch_status("ns", "job", "1", {"phase": "Running"})
    assert len(Handler.peers) == 1, f"{len(Handler.peers)} connections for 10 calls"


def test_creating_a_pod_that_exists_is_not_an_error(server: str) -> None:
    Handler.create_status = 409
    writer = Writer(client.ApiClient(client.Configuration(host=server)))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}
    writer.create_pod(pod)
    writer.create_pod(pod)
    assert Handler.posts == 2
    Handler.create_status = 500
    with pytest.raises(client.ApiException):
        writer.create_pod(pod)
