"""Requests that run past their deadline (--harakiri, a route's "timeout"), for test_harakiri.py.
What happened to them is recorded in `EVENTS` (one process, --threads 1) and read back over /events."""

import asyncio
import json
import os
import time

import corgi

EVENTS = []


def _json(start_response, data):
    body = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class Recorded:
    """A response iterable that records its close() (PEP 3333: the server must call it)."""

    def __init__(self, name, chunks):
        self.name = name
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        EVENTS.append(f"{self.name}:close")


def spinning(name):
    """Runs bytecode forever (only an asynchronous exception reaches it), recording how it ends."""
    try:
        yield b""  # an empty chunk: iteration has begun, nothing goes out
        while True:
            pass
    except BaseException as e:
        EVENTS.append(f"{name}:raised:{type(e).__name__}:{isinstance(e, Exception)}")
        raise
    finally:
        EVENTS.append(f"{name}:finally")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/events":
        return _json(start_response, EVENTS)
    if path == "/pid":
        return _json(start_response, os.getpid())
    if path == "/spin":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Recorded("spin", spinning("spin"))
    if path == "/sleep":
        # Suspends the fiber (corgi.sleep): the lane serves other requests meanwhile.
        seconds = float(environ.get("QUERY_STRING", "").partition("=")[2] or "1")
        corgi.sleep(seconds)
        EVENTS.append("sleep:done")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/read-body":
        # Waits for a body that the test never sends: RequestTimeout at that suspension point.
        try:
            data = environ["wsgi.input"].read()
        except BaseException as e:
            EVENTS.append(f"read-body:raised:{type(e).__name__}")
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [data]
    if path == "/await":
        # Awaits a coroutine: it is cancelled the asyncio way, then the request gets RequestTimeout.
        async def slow():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                EVENTS.append("await:coroutine-cancelled")
                raise

        try:
            corgi.await_(slow())
        except BaseException as e:
            EVENTS.append(f"await:raised:{type(e).__name__}")
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"awaited"]
    if path == "/stuck":
        # Blocks the lane thread in C (time.sleep releases the GIL, but no other fiber of the lane
        # can run): nothing can interrupt it before it returns.
        time.sleep(float(environ.get("QUERY_STRING", "").partition("=")[2] or "20"))
        EVENTS.append("stuck:returned")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"unstuck"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
