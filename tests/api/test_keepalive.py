"""`trading api` keeps idle connections open longer than clients keep them.

Under load, about 1 request in 3,000 used to fail with a reset on a reused keep-alive
connection. The cause: uvicorn closes an idle connection after 5 s (its default) and httpx
reuses one for up to 5 s (its default keepalive_expiry), so a client could send on a
connection at the instant the server closed it. `trading api` now keeps idle connections for
75 s (``--timeout-keep-alive``), longer than common clients' own expiry.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.api.support import ApiEnv, Server

pytestmark = pytest.mark.e2e


def _get(sock: socket.socket, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:]) if k.lower() == b"content-length")
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection mid-body")
        body += chunk
    return head.split(b"\r\n", 1)[0]


def test_an_idle_connection_is_still_usable_after_the_clients_expiry(server: Server, api_env: ApiEnv) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        assert _get(sock, "/health") == b"HTTP/1.1 200 OK"
        time.sleep(6.0)  # past uvicorn's default keep-alive (5 s) and httpx's expiry (5 s)
        assert _get(sock, "/health") == b"HTTP/1.1 200 OK"
