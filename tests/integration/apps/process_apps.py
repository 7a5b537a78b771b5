"""For the process-model tests: every answer is the pid of the worker that served it."""

import os
from urllib.parse import parse_qs

import corgi

IMPORTED_BY = os.getpid()  # the master's pid when preloaded (the default), else the worker's
POSTFORK_RAN_IN = []  # pids where the @corgi.postfork hook ran (one per process: a fork copies it)


@corgi.postfork
def record_postfork():
    POSTFORK_RAN_IN.append(os.getpid())


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if environ["PATH_INFO"] == "/sleep":
        corgi.sleep(int(query.get("ms", ["1000"])[0]) / 1000)
    if environ["PATH_INFO"] == "/multiprocess":
        body = str(environ["wsgi.multiprocess"]).encode()
    elif environ["PATH_INFO"] == "/postfork":
        body = ",".join(map(str, POSTFORK_RAN_IN)).encode()
    elif environ["PATH_INFO"] == "/imported-by":
        body = str(IMPORTED_BY).encode()
    else:
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
