# A WSGI app whose requests wait 10 ms (or the seconds in the query string) on their fiber, with
# corgi.sleep at /corgi and with asyncio.sleep through corgi.await_ at /asyncio: what
# bench/await_sleep.sh compares.
import asyncio

import corgi

BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    seconds = float(environ.get("QUERY_STRING") or 0.01)
    if environ["PATH_INFO"] == "/asyncio":
        corgi.await_(asyncio.sleep(seconds))
    else:
        corgi.sleep(seconds)
    start_response("200 OK", HEADERS)
    return [BODY]
