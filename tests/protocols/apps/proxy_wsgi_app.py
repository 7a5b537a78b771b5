"""A plain WSGI app (no framework) mounted into corgi behind nginx by nginx_test.py.

It reports what it was given, so the test can compare the environ across uwsgi, FastCGI, SCGI and HTTP proxying:
  /stream?chunks=N&size=S  N lines from a generator, no Content-Length (corgi streams them, chunked or to EOF);
  /sized?bytes=N           N bytes with a Content-Length the app sets itself (HEAD must keep it and send no body);
  /gated?file=PATH         one line, then waits (corgi.sleep, the fiber parks) until PATH exists, then one more line:
                           the test creates PATH only after the first line reached it, so the route only completes
                           if every hop delivers a chunk before the app has finished (X-Accel-Buffering: no);
  anything else            the environ as JSON: CGI keys, wsgi.url_scheme, the HTTP_* keys, the body's length and
                           SHA-256 as read from wsgi.input (read in pieces, then to the end, as apps do).
"""

import hashlib
import json
import os
from urllib.parse import parse_qs

import corgi

CGI_KEYS = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
            "SERVER_PROTOCOL", "REMOTE_ADDR", "REQUEST_URI", "HTTPS")


def _read_body(environ):
    stream = environ["wsgi.input"]
    digest, size = hashlib.sha256(), 0
    # A fixed read size first (what most frameworks do with CONTENT_LENGTH), then read() to the end.
    while True:
        piece = stream.read(65536)
        if not piece:
            break
        digest.update(piece)
        size += len(piece)
    rest = stream.read()
    digest.update(rest)
    size += len(rest)
    return size, digest.hexdigest()


def _stream(count, size):
    for i in range(count):
        line = f"line {i} ".encode()
        yield line + b"." * max(0, size - len(line) - 1) + b"\n"


def _gated(gate):
    yield b"before the gate\n"
    for _ in range(1000):  # 10 s at most: a broken stream ends the test with a visible failure, not a hang
        if os.path.exists(gate):
            yield b"after the gate\n"
            return
        corgi.sleep(0.01)
    yield b"gate never opened\n"


def application(environ, start_response):
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/stream":
        count, size = int(query.get("chunks", ["10"])[0]), int(query.get("size", ["16"])[0])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream(count, size)
    if path == "/gated":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Accel-Buffering", "no")])
        return _gated(query["file"][0])
    if path == "/sized":
        n = int(query.get("bytes", ["0"])[0])
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(n))])
        return [b"s" * n]
    if path == "/lie":
        # A body that breaks its own Content-Length: ?long sends 10 bytes for 5, ?short 5 for 10.
        longer = "long" in query or environ.get("QUERY_STRING") == "long"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5" if longer else "10")])
        return (piece for piece in ([b"012", b"3456789"] if longer else [b"012", b"34"]))
    size, sha = _read_body(environ)
    doc = {key: environ.get(key) for key in CGI_KEYS}
    doc["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
    doc["wsgi.input_terminated"] = environ.get("wsgi.input_terminated")
    doc["http"] = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    doc["body_length"], doc["body_sha256"] = size, sha
    body = json.dumps(doc, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
