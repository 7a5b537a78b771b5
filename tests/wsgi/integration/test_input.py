"""wsgi.input over a real socket: chunked bodies, a large body streamed in pieces, readline and
iteration."""

import hashlib
import json
import os
import socket
import time

import pytest

from support import python_app, read_until_close, sanitized_build


@pytest.fixture(scope="module")
def srv(module_corgi):
    return module_corgi(
        *python_app("--mount", "/hash=plain_apps:hash_input", "--mount", "/lines=plain_apps:input_lines")
    )


def post_raw(srv, path, head_lines, pieces, pause=0.0):
    """Sends a request whose body goes out in `pieces` (with `pause` seconds between them); returns
    (status, body) of a Connection: close reply."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + "".join(
            line + "\r\n" for line in head_lines
        )
        s.sendall(head.encode() + b"\r\n")
        for piece in pieces:
            s.sendall(piece)
            if pause:
                time.sleep(pause)
        reply = read_until_close(s, 30)
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return status, body


def dechunk(data):
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += data[:size]
        data = data[size + 2 :]


def chunked(*parts):
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]


def test_chunked_request_body(srv):
    parts = [b"alpha\nbe", b"ta\n", b"gamma\n" * 1000, b"tail"]
    status, body = post_raw(srv, "/hash/", ["Transfer-Encoding: chunked"], chunked(*parts), pause=0.05)
    assert status == 200
    data = json.loads(body)
    whole = b"".join(parts)
    assert data["sha256"] == hashlib.sha256(whole).hexdigest() and data["total"] == len(whole)
    assert data["content_length"] in (None, "")  # unknown for a chunked body
    assert data["terminated"] is True


def test_large_body_streams_in_pieces(srv):
    size = 20 * 1024 * 1024
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    for _ in range(20):
        digest.update(block)
    rss_before = peak_rss_kib(srv.proc.pid)
    status, body = post_raw(srv, "/hash/?piece=65536", [f"Content-Length: {size}"], [block] * 20)
    assert status == 200
    data = json.loads(body)
    assert data["sha256"] == digest.hexdigest() and data["total"] == size
    assert data["content_length"] == str(size)
    assert data["biggest"] <= 65536 and data["reads"] >= size // 65536
    grown = peak_rss_kib(srv.proc.pid) - rss_before
    # ASan's allocator keeps freed memory in quarantine, so the bound only means something without it.
    if not sanitized_build():
        assert grown < 12 * 1024, f"the server's peak RSS grew by {grown} KiB for a 20 MiB body: it was buffered"


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


BODY = b"first line\nabcdef\nthird\nfourth\nfifth\nlast without newline"


@pytest.mark.parametrize("encoding", ["content-length", "chunked"])
def test_readline_iteration_and_read(srv, encoding):
    if encoding == "chunked":
        status, body = post_raw(
            srv, "/lines/", ["Transfer-Encoding: chunked"], chunked(*[BODY[i : i + 7] for i in range(0, len(BODY), 7)])
        )
    else:
        status, body = post_raw(srv, "/lines/", [f"Content-Length: {len(BODY)}"], [BODY[:10], BODY[10:]], pause=0.05)
    assert status == 200
    data = json.loads(body)
    assert data["first"] == "first line\n"
    assert data["limited"] == "abc" and data["rest_of_line"] == "def\n"
    assert data["iterated"] == ["third\n", "fourth\n"]
    assert data["remainder"] == "fifth\nlast without newline"
    assert data["after"] == ""
    assert data["terminated"] is True
