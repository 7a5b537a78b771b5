"""For the observability tests: what the app sees of its request id, and a log record emitted while
serving it."""

import json
import logging
import sys

import corgi

log = logging.getLogger("observability_app")
handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(logging.Formatter("app-log id=%(request_id)s %(message)s"))
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False
log.info("imported")  # outside any request


def application(environ, start_response):
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom on purpose")
    body = environ["wsgi.input"].read()
    log.info("serving %s", environ["PATH_INFO"])
    doc = {
        "environ": environ.get("HTTP_X_REQUEST_ID"),
        "corgi": corgi.request_id(),
        "body_length": len(body),
    }
    data = json.dumps(doc).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
