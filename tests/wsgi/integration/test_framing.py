"""Response framing a WSGI app cannot break. An app whose body is longer than the Content-Length it
declares gets exactly the declared bytes sent, the rest dropped (a generator is closed), one error
logged naming the app and the route, and the connection closed after the response, so a pipelined
request never reads the excess as its response. A body shorter than declared is sent and the
connection closed at once: the client sees the truncation, never a hang."""

import socket
import time

import pytest

from support import python_app, read_until_close

KINDS = ["/list", "/generator", "/write", "/file", "/bytesio"]


@pytest.fixture(scope="module")
def srv(module_corgi):
    return module_corgi(*python_app("--wsgi", "framing_apps"))


def split(data):
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("latin-1").lower(), body


@pytest.mark.parametrize("path", KINDS)
def test_longer_body_is_cut_to_the_declared_length(srv, path):
    request = f"GET {path}?long HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    # Pipelined: were the excess sent, the second request would read it as its response.
    data = srv.raw(request + request, timeout=5)
    head, body = split(data)
    assert head.startswith("http/1.1 200")
    assert head.count("content-length:") == 1 and "content-length: 5" in head
    assert body == b"01234", data
    assert srv.wait_for_log("wsgi app 'framing_apps'", timeout=5)
    assert f"GET {path}?long" in srv.stderr()


@pytest.mark.parametrize("path", KINDS)
def test_shorter_body_closes_the_connection_at_once(srv, path):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(f"GET {path}?short HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        started = time.monotonic()
        data = read_until_close(s, timeout=5)  # raises if the server leaves it open
        assert time.monotonic() - started < 4
    head, body = split(data)
    assert "content-length: 10" in head
    assert body == (b"56789" if path == "/file" else b"01234")  # /file: the file's last 5 bytes


def test_endless_generator_past_its_length_is_closed(srv):
    srv.raw(b"GET /generator?long HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", timeout=5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status, _, body = srv.get("/closed")
        if b"/generator" in body:
            break
        time.sleep(0.05)
    assert b"/generator" in body


def test_http_client_sees_a_short_body_as_incomplete(srv):
    import http.client

    conn = srv.connection(timeout=5)
    try:
        conn.request("GET", "/generator?short")
        resp = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_matching_length_keeps_the_connection(srv):
    """The guard costs nothing to a correct app: same connection, next request answered."""
    conn = srv.connection(timeout=5)
    try:
        for _ in range(3):
            conn.request("GET", "/closed")
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
            assert not resp.will_close
    finally:
        conn.close()
