"""Plain WSGI callables for the end-to-end tests (served with --pythonpath tests/wsgi/integration/apps)."""

import hashlib
import json
import sys
import time
from wsgiref.validate import validator

import corgi


def _json(start_response, data, status="200 OK"):
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _query(environ):
    from urllib.parse import parse_qs

    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


# --- wsgiref.validate ----------------------------------------------------------------------------------------------
def _plain(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stream":

        def gen():
            for i in range(5):
                yield b"chunk %d\n" % i

        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/post":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"got " + body]
    if path == "/lines":
        inp = environ["wsgi.input"]
        first = inp.readline()
        rest = inp.readlines()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"first=" + first, b"rest=%d" % len(rest)]
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"and returned"]
    if path == "/error-log":
        environ["wsgi.errors"].write("validated app writes to wsgi.errors\n")
        environ["wsgi.errors"].flush()
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Path", path)])
    return [b"hello ", environ["REQUEST_METHOD"].encode(), b" ", path.encode("latin-1")]


validated = validator(_plain)


# --- environ echo (mounts, routing args) -------------------------------------------------------------------------
def echo_environ(environ, start_response):
    keys = ("CONTENT_LENGTH", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_METHOD", "SERVER_PROTOCOL",
            "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR", "wsgi.url_scheme")
    data = {k: environ.get(k) for k in keys}
    data["routing_args"] = repr(environ.get("wsgiorg.routing_args"))
    data["multithread"] = environ["wsgi.multithread"]
    data["cookie"] = environ.get("HTTP_COOKIE")
    return _json(start_response, data)


# --- concurrency -------------------------------------------------------------------------------------------------
def cpu(environ, start_response):
    """A pure-Python CPU loop holding the GIL for ?seconds= (default 3)."""
    seconds = float(_query(environ).get("seconds", "3"))
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return _json(start_response, {"loops": n})


def blocking_sleep(environ, start_response):
    """time.sleep: a blocking C call (it releases the GIL but not the lane)."""
    started = time.monotonic()
    time.sleep(float(_query(environ).get("seconds", "1")))
    return _json(start_response, {"started": started, "ended": time.monotonic()})


def fiber_sleep(environ, start_response):
    corgi.sleep(float(_query(environ).get("seconds", "0.5")))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


# --- failures ----------------------------------------------------------------------------------------------------
def fail_before_headers(environ, start_response):
    if environ["PATH_INFO"] == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"still serving"]
    raise RuntimeError("boom before start_response")


def fail_after_headers(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"still serving"]

    def body():
        yield b"x" * 100
        corgi.sleep(0.05)  # the first chunk is on the wire before the failure
        raise RuntimeError("boom after the headers")

    headers = [("Content-Type", "text/plain")]
    if path == "/sized":
        headers.append(("Content-Length", "1000"))
    start_response("200 OK", headers)  # /chunked: no length, so chunked on HTTP/1.1
    return body()


def non_iterable(environ, start_response):
    if environ["PATH_INFO"] == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"still serving"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return 42


def deep_recursion(environ, start_response):
    """Recursion through C (map() calls back into Python): every level costs C stack, so this
    overflows a small fiber stack long before the raised recursion limit stops it."""
    if environ["PATH_INFO"] == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"still serving"]
    sys.setrecursionlimit(1_000_000)

    def down(n):
        return n if n == 0 else next(map(down, [n - 1]))

    depth = down(200_000)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"survived %d" % depth]


# --- wsgi.input --------------------------------------------------------------------------------------------------
def hash_input(environ, start_response):
    """Hashes the body reading at most ?piece= bytes at a time; reports how it was read."""
    piece = int(_query(environ).get("piece", "65536"))
    inp = environ["wsgi.input"]
    digest = hashlib.sha256()
    reads = 0
    biggest = 0
    total = 0
    while True:
        data = inp.read(piece)
        if not data:
            break
        reads += 1
        biggest = max(biggest, len(data))
        total += len(data)
        digest.update(data)
    return _json(
        start_response,
        {
            "sha256": digest.hexdigest(),
            "total": total,
            "reads": reads,
            "biggest": biggest,
            "content_length": environ.get("CONTENT_LENGTH"),
            "terminated": environ.get("wsgi.input_terminated"),
        },
    )


def input_lines(environ, start_response):
    """readline(), readline(n), iteration and read() on one body."""
    inp = environ["wsgi.input"]
    first = inp.readline()
    limited = inp.readline(3)
    rest_of_line = inp.readline()
    iterated = [line for _, line in zip(range(2), inp)]
    remainder = inp.read()
    after = inp.read()
    return _json(
        start_response,
        {
            "first": first.decode(),
            "limited": limited.decode(),
            "rest_of_line": rest_of_line.decode(),
            "iterated": [line.decode() for line in iterated],
            "remainder": remainder.decode(),
            "after": after.decode(),
            "terminated": environ.get("wsgi.input_terminated"),
            "content_length": environ.get("CONTENT_LENGTH"),
        },
    )


# --- waiting for the client outside the request's fiber ----------------------------------------------------------
def input_elsewhere(environ, start_response):
    """Reads wsgi.input (or calls write()) from a returned coroutine or from another thread: a
    clear RuntimeError, never a crash of the lane."""
    path = environ["PATH_INFO"]
    if path == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"still serving"]
    if path == "/thread":
        import threading

        outcome = []

        def read():
            try:
                environ["wsgi.input"].read()
                outcome.append("read")
            except RuntimeError as e:
                outcome.append(str(e))

        t = threading.Thread(target=read)
        t.start()
        t.join(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [outcome[0].encode() if outcome else b"thread hung"]

    import asyncio

    async def later():
        await asyncio.sleep(0.01)
        if path.endswith("/write"):
            start_response("200 OK", [("Content-Type", "text/plain")])(b"written from a coroutine, ")
            return [b"then returned"]
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read %d bytes in a coroutine" % len(data)]

    if path.startswith("/task"):
        # A task created before the request awaits steps on the lane's loop, off the request's fiber.
        return asyncio.ensure_future(later(), loop=asyncio.get_event_loop())
    return later()  # awaited by corgi: its steps run on the request's fiber


# --- asyncio through corgi.await_ ----------------------------------------------------------------------------------
def asyncio_client(environ, start_response):
    """Fetches ?path= from this very server with an asyncio TCP client, awaited with corgi.await_."""
    import asyncio

    path = _query(environ).get("path", "/")
    port = int(environ["SERVER_PORT"])

    async def fetch():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
        return data

    started = time.monotonic()
    corgi.await_(asyncio.sleep(0.05))
    reply = corgi.await_(fetch())
    same_loop = asyncio.get_event_loop() is corgi._lane_loop()
    head, _, body = reply.partition(b"\r\n\r\n")
    return _json(
        start_response,
        {
            "status_line": head.split(b"\r\n")[0].decode(),
            "body": body.decode("latin-1"),
            "seconds": time.monotonic() - started,
            "same_loop": same_loop,
        },
    )


def custom_status(environ, start_response):
    """The status line is the app's: a custom reason, and a standard code with a reworded reason."""
    status = {"/custom": "299 Custom Thing", "/reworded": "404 Nothing Here", "/standard": "404 Not Found"}[
        environ["PATH_INFO"]
    ]
    start_response(status, [("Content-Type", "text/plain")])
    return [status.encode()]


# --- the embedded interpreter ---------------------------------------------------------------------------------------
def interpreter_facts(environ, start_response):
    """Uses C extension modules from lib-dynload and dist-packages: they resolve the C API in the
    corgi executable (static libpython) or in libpython3.11.so, and either way must load and work."""
    import ctypes
    import decimal
    import sqlite3

    import markupsafe

    db = sqlite3.connect(":memory:")
    total = db.execute("select sum(value) from (select 20 as value union all select 22)").fetchone()[0]
    return _json(
        start_response,
        {
            "executable": sys.executable,
            "prefix": sys.prefix,
            "decimal": str(decimal.Decimal(1) / decimal.Decimal(8)),
            "decimal_module": getattr(decimal, "__libmpdec_version__", None) is not None,
            "sqlite": total,
            "strlen": ctypes.CDLL(None).strlen(b"corgi"),
            "escaped": str(markupsafe.escape("<a>")),
            "speedups": markupsafe.escape.__module__,
        },
    )


# --- streaming --------------------------------------------------------------------------------------------------
def held_stream(environ, start_response):
    """Yields a first block, then holds the next one until the file named by the query exists (at most
    10 s), waiting on the fiber (`?fiber&PATH`) or blocking the whole lane (`?blocking&PATH`)."""
    import os
    from urllib.parse import unquote

    mode, path = environ["QUERY_STRING"].split("&", 1)
    path = unquote(path)
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        yield b"first block\n"
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            if mode == "fiber":
                corgi.sleep(0.01)
            else:
                time.sleep(0.01)  # a blocking call: the lane itself stops here
        yield b"released\n" if os.path.exists(path) else b"timed out\n"

    return body()


_closed_streams = []


def endless_stream(environ, start_response):
    """`/closed`: the names of the endless streams whose close() ran; `/?NAME`: streams 1 KiB chunks until the
    client goes away (a HEAD never reads them)."""
    if environ["PATH_INFO"] == "/closed":
        return _json(start_response, _closed_streams)
    name = environ["QUERY_STRING"]

    class Endless:
        def __iter__(self):
            while True:
                yield b"x" * 1024

        def close(self):
            _closed_streams.append(name)

    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return Endless()


# --- coroutines that read the request body (their steps run on the request's fiber) --------------------------------
_request_var = None


def async_body(environ, start_response):
    """/semantics: asyncio semantics inside the awaited coroutine while the body arrives slowly:
    current_task, contextvars, asyncio.timeout, wait_for (of a child that reads the body) and
    cancellation. /await: a synchronous app reading the body in corgi.await_(coroutine)."""
    import asyncio
    import contextvars

    global _request_var
    if _request_var is None:
        _request_var = contextvars.ContextVar("request_var")
    var = _request_var
    var.set("set-by-wsgi-call")
    inp = environ["wsgi.input"]
    path = environ["PATH_INFO"]

    async def read_rest(parent):
        me = asyncio.current_task()
        seen = var.get()
        var.set("set-by-child")  # a child's own context: the parent does not see this
        data = b"".join(inp)  # iteration: readline() until the end of the body
        return {"data": data, "own_task": me is not None and me is not parent, "saw": seen}

    async def semantics():
        me = asyncio.current_task()
        first = inp.read(10)
        await asyncio.sleep(0)
        same_task = asyncio.current_task() is me
        timed_out = False
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(5)
        except TimeoutError:
            timed_out = True
        wait_for_timed_out = False
        try:
            await asyncio.wait_for(asyncio.sleep(5), 0.05)
        except TimeoutError:
            wait_for_timed_out = True
        cleaned = []

        async def sleeper():
            try:
                await asyncio.sleep(5)
            finally:
                cleaned.append(True)

        victim = asyncio.create_task(sleeper())
        await asyncio.sleep(0.01)
        victim.cancel()
        try:
            await victim
            cancelled = False
        except asyncio.CancelledError:
            cancelled = victim.cancelled() and cleaned == [True]
        rest = await asyncio.wait_for(read_rest(me), 20)
        body = first + rest["data"]
        return {
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "first": first.decode("latin-1"),
            "has_task": me is not None,
            "same_task": same_task,
            "timed_out": timed_out,
            "wait_for_timed_out": wait_for_timed_out,
            "cancelled": cancelled,
            "not_cancelling": me.cancelling() == 0,
            "child_own_task": rest["own_task"],
            "child_saw": rest["saw"],
            "var_after_child": var.get(),
            "after_end": inp.read().decode(),
        }

    async def app():
        data = await semantics()
        return _json(start_response, data)

    if path == "/await":

        async def read_all():
            await asyncio.sleep(0.01)
            return inp.read()

        data = corgi.await_(read_all())
        return _json(start_response, {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return app()


def spin_forever(environ, start_response):
    """Never returns, never suspends: a request SIGTERM's graceful timeout cannot end."""
    while True:
        pass


def http_vars(environ, start_response):
    """The HTTP_* variables of the environ, as JSON (placeholders must never leak: PEP 3333)."""
    return _json(start_response, {k: v for k, v in environ.items() if k.startswith("HTTP_")})
