"""WSGI apps whose bodies disagree with the Content-Length they declare, one per way of producing a
body: a list, a generator, write(), wsgi.file_wrapper over a real file and over a BytesIO. The query
says which: ?long (10 bytes for a declared 5) or ?short (5 bytes for a declared 10). A generator
records in CLOSED whether the server closed it (it must, even when it stops reading early)."""

import io
import os
import tempfile

CLOSED = []

_FILE = os.path.join(tempfile.gettempdir(), "corgi-framing-%d.bin" % os.getpid())
with open(_FILE, "wb") as f:
    f.write(b"0123456789")


def _declared(environ):
    return "5" if environ.get("QUERY_STRING") == "long" else "10"


def _body(environ):
    return b"0123456789" if environ.get("QUERY_STRING") == "long" else b"01234"


def as_list(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", _declared(environ))])
    return [_body(environ)]


def as_generator(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", _declared(environ))])

    def gen():
        try:
            body = _body(environ)
            yield body[:3]
            yield body[3:]
            # An endless tail for ?long: the server must stop taking it.
            while environ.get("QUERY_STRING") == "long":
                yield b"x" * 1024
        finally:
            CLOSED.append(environ["PATH_INFO"])

    return gen()


def with_write(environ, start_response):
    write = start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", _declared(environ))]
    )
    body = _body(environ)
    write(body[:4])
    return [body[4:]]


def file_wrapper(environ, start_response):
    """?long: the real file is 10 bytes, 5 declared; ?short: 10 declared for the first 5 bytes."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", _declared(environ))])
    if environ.get("QUERY_STRING") == "long":
        f = open(_FILE, "rb")
    else:
        f = open(_FILE, "rb")
        f.seek(5)
    return environ["wsgi.file_wrapper"](f)


def bytesio_wrapper(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", _declared(environ))])
    return environ["wsgi.file_wrapper"](io.BytesIO(_body(environ)), 3)


def closed(environ, start_response):
    body = ",".join(CLOSED).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    routes = {
        "/list": as_list,
        "/generator": as_generator,
        "/write": with_write,
        "/file": file_wrapper,
        "/bytesio": bytesio_wrapper,
        "/closed": closed,
    }
    return routes[environ["PATH_INFO"]](environ, start_response)
