"""A TCP forwarder run as its own process: `python -m harness.tcpproxy LISTEN_HOST
LISTEN_PORT TARGET_HOST TARGET_PORT`.

The test node has no kube-proxy, so the harness puts this on the `kubernetes` Service address
(on the bridge) in front of the apiserver on loopback: pods talk to the API in-cluster, as on
any cluster, and TLS still ends at the apiserver (its certificate names that address).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction until EOF, then half-close the other side."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))
        for w in (client_w, server_w):
            with contextlib.suppress(OSError):
                w.close()

    server = await asyncio.start_server(handle, *listen, reuse_address=True)
    print(f"forwarding {listen[0]}:{listen[1]} -> {target[0]}:{target[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    listen_host, listen_port, target_host, target_port = argv
    asyncio.run(_serve((listen_host, int(listen_port)), (target_host, int(target_port))))


if __name__ == "__main__":
    main(sys.argv[1:])
