"""PEP 3333: the reason phrase of the app's status reaches the client as given."""

import pytest

from support import python_app


@pytest.fixture(scope="module")
def srv(module_corgi):
    return module_corgi(*python_app("--wsgi", "plain_apps:custom_status"))


@pytest.mark.parametrize(
    "path, line",
    [
        ("/custom", b"HTTP/1.1 299 Custom Thing\r\n"),
        ("/reworded", b"HTTP/1.1 404 Nothing Here\r\n"),
        ("/standard", b"HTTP/1.1 404 Not Found\r\n"),
    ],
)
def test_reason_phrase_is_the_apps(srv, path, line):
    reply = srv.raw(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    assert reply.startswith(line), reply[:80]
