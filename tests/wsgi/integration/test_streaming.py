"""PEP 3333: a server must not delay a block the app has produced while the app works on the next one.
corgi hands each chunk to the io thread as soon as the fiber produces it, so the client has the first
block while the app still holds the second, whether the app waits on its fiber or blocks the lane."""

import json
import socket
import time
from urllib.parse import quote

import pytest

from support import python_app


@pytest.mark.parametrize("mode", ["fiber", "blocking"])
def test_first_block_arrives_while_the_app_holds_the_next(corgi, tmp_path, mode):
    srv = corgi(*python_app("--wsgi", "plain_apps:held_stream"))
    release = tmp_path / "release"
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        target = f"/?{mode}&{quote(str(release))}"
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + 5
        while b"first block" not in data:
            assert time.monotonic() < deadline, f"the first block was held back: {data!r}"
            chunk = sock.recv(4096)  # times out (fails) if the server sits on the block
            assert chunk, f"connection closed early: {data!r}"
            data += chunk
        assert b"released" not in data and b"timed out" not in data
        assert b"transfer-encoding: chunked" in data.lower()
        release.touch()
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    assert b"released\n" in data
    assert data.endswith(b"0\r\n\r\n")


def wait_closed(srv, name):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, _, body = srv.get("/closed")
        assert status == 200
        if name in json.loads(body):
            return True
        time.sleep(0.05)
    return False


def test_client_leaving_a_stream_closes_the_iterable_and_the_server_goes_on(corgi):
    srv = corgi(*python_app("--wsgi", "plain_apps:endless_stream"))
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        sock.sendall(b"GET /?left HTTP/1.1\r\nHost: t\r\n\r\n")
        received = 0
        while received < 256 * 1024:  # well past the 64 KiB the fiber may run ahead of the socket
            chunk = sock.recv(65536)
            assert chunk
            received += len(chunk)
    finally:
        sock.close()
    assert wait_closed(srv, "left")
    status, _, body = srv.get("/closed")
    assert status == 200 and srv.proc.poll() is None


def test_head_of_an_endless_stream_answers_and_closes_the_iterable(corgi):
    srv = corgi(*python_app("--wsgi", "plain_apps:endless_stream"))
    status, headers, body = srv.request("HEAD", "/?head")
    assert status == 200 and body == b""
    assert headers["content-type"] == "application/octet-stream"
    assert wait_closed(srv, "head")
