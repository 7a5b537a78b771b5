"""For the load tests (tests/integration/load) and bench/workers.sh: every answer is stamped with the version this
module read from version.txt beside it when it was imported, the pid of the worker that served it, and the pid of
the process that imported it (the master under preload, else the worker), so a client can tell which generation
of workers answered. Runs under corgi, Gunicorn and uWSGI alike (time.sleep where there is no corgi module).

  GET  /            the stamp
  POST /echo        the stamp, the body's length and CRC-32
  GET  /slow?ms=N   streamed: the stamp first, then N ms of sleep (a fiber's under corgi), then "slept"
"""

import os
import time
import zlib
from urllib.parse import parse_qs

try:
    import corgi

    _sleep = corgi.sleep
except ImportError:
    _sleep = time.sleep

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "version.txt")) as _f:
    VERSION = _f.read().strip() or "none"
IMPORTED_BY = os.getpid()


def _stamp(extra=""):
    return f"version={VERSION} pid={os.getpid()} imported_by={IMPORTED_BY}{extra}\n".encode()


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/slow":
        ms = int(parse_qs(environ.get("QUERY_STRING", "")).get("ms", ["200"])[0])
        # No Content-Length: the answer is chunked and its first chunk leaves before the sleep.
        start_response("200 OK", [("Content-Type", "text/plain")])

        def slow_body():
            yield _stamp()
            _sleep(ms / 1000)
            yield b"slept\n"

        return slow_body()
    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(length) if length else b""
        body = _stamp(f" length={len(data)} crc={zlib.crc32(data)}")
    else:
        body = _stamp()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
