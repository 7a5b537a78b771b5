"""WSGI callables for corgi's wsgi unit tests (tests/wsgi/wsgi_*_test.cpp load them as unit_apps:NAME)."""
import asyncio
import contextvars
import io
import json
import os
import socket
import sqlite3
import sys
import tempfile
import threading

import corgi

# What the tests check after the fact: ids of iterables whose close() ran, errors seen by apps.
closed = []
seen = {}


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]


def environ_dump(environ, start_response):
    keys = ["REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
            "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "REQUEST_URI",
            "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated"]
    out = {k: environ[k] for k in keys if k in environ}
    out["wsgi.version"] = list(environ["wsgi.version"])
    out["http"] = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    out["types_native"] = all(type(v) is str for k, v in environ.items() if k.isupper())
    out["PATH_INFO_hex"] = environ["PATH_INFO"].encode("latin-1").hex()
    out["SCRIPT_NAME_hex"] = environ["SCRIPT_NAME"].encode("latin-1").hex()
    out["extra"] = {k: environ[k] for k in ("UWSGI_SCHEME", "DOCUMENT_ROOT") if k in environ}
    if "wsgiorg.routing_args" in environ:
        args, kwargs = environ["wsgiorg.routing_args"]
        out["routing_args"] = [list(args), kwargs]
    out["has_file_wrapper"] = callable(environ.get("wsgi.file_wrapper"))
    environ["wsgi.errors"].write("environ_dump was here\n")
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def input_modes(environ, start_response):
    """The body read five ways, selected by QUERY_STRING."""
    inp = environ["wsgi.input"]
    mode = environ["QUERY_STRING"]
    if mode == "read":
        parts = [inp.read()]
    elif mode == "read_n":
        parts = []
        while True:
            chunk = inp.read(7)
            if not chunk:
                break
            parts.append(chunk)
    elif mode == "readline":
        parts = []
        while True:
            line = inp.readline()
            if not line:
                break
            parts.append(line)
    elif mode == "readline_limit":
        parts = [inp.readline(3), inp.readline(100), inp.read()]
    elif mode == "readlines":
        parts = inp.readlines()
    elif mode == "iter":
        parts = list(inp)
    else:
        parts = [inp.read(int(mode))]
    body = json.dumps([p.decode("latin-1") for p in parts]).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class Tracked:
    """An iterable that records its close()."""

    def __init__(self, name, chunks, fail_at=None):
        self.name, self.chunks, self.fail_at = name, chunks, fail_at

    def __iter__(self):
        for i, c in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("generator failed on purpose")
            corgi.suspend()
            yield c

    def close(self):
        closed.append(self.name)


def streaming(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Tracked(environ["QUERY_STRING"] or "streaming", [b"one ", b"", b"two ", b"three"])


def streaming_with_length(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
    return Tracked("with_length", [b"hello", b" ", b"world"])


def fails_after_headers(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Tracked("fails_after_headers", [b"first", b"second", b"third"], fail_at=1)


def fails_before_headers(environ, start_response):
    raise ValueError("app failed on purpose")


def fails_in_first_item(environ, start_response):
    start_response("200 OK", [])
    return Tracked("fails_in_first_item", [b"never"], fail_at=0)


def writer(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    write(b"")
    write(b"then ")
    return [b"returned"]


def endless(environ, start_response):
    """Streams until the client goes away; records close()."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    class Endless:
        def __iter__(self):
            while True:
                yield b"x" * 1000

        def close(self):
            closed.append(environ["QUERY_STRING"] or "endless")

    return Endless()


def big_chunks(environ, start_response):
    """Chunks too big to copy (written from the bytes objects while the fiber waits), between small
    ones that are copied."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return iter([b"<", b"a" * 100_000, b"|", b"b" * 100_000, b">"])


def many_small_chunks(environ, start_response):
    """More small chunks than the outbox window holds: the fiber has to wait for the io side."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return (b"%05d\n" % i for i in range(40_000))


def non_iterable(environ, start_response):
    start_response("200 OK", [])
    return 42


def non_bytes(environ, start_response):
    start_response("200 OK", [])
    return ["text is not bytes"]


def no_start_response(environ, start_response):
    return [b"forgot"]


def start_twice(environ, start_response):
    start_response("200 OK", [])
    start_response("200 OK", [])
    return [b"no"]


def exc_info_replaces(environ, start_response):
    start_response("200 OK", [("X-First", "1")])
    try:
        raise KeyError("handled")
    except KeyError:
        start_response("503 Service Unavailable", [("X-Second", "2")], sys.exc_info())
    return [b"replaced"]


def exc_info_after_headers(environ, start_response):
    start_response("200 OK", [])

    def body():
        yield b"partial"
        try:
            raise KeyError("too late")
        except KeyError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never"

    return body()


def bad_status(environ, start_response):
    kind = environ["QUERY_STRING"]
    status, headers = {
        "status_bytes": (b"200 OK", []),
        "status_short": ("200", []),
        "status_letters": ("2x0 OK", []),
        "header_newline": ("200 OK", [("X-Bad", "a\r\nInjected: yes")]),
        "header_name": ("200 OK", [("Bad Name", "x")]),
        "hop_by_hop": ("200 OK", [("Connection", "close")]),
        "header_not_tuple": ("200 OK", ["X-A: b"]),
    }[kind]
    try:
        start_response(status, headers)
    except (TypeError, ValueError, AssertionError) as e:
        body = type(e).__name__.encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    return [b"accepted"]


def file_wrapper_real(environ, start_response):
    path = os.path.join(tempfile.gettempdir(), f"corgi-wsgi-test-{os.getpid()}.txt")
    with open(path, "wb") as f:
        f.write(b"0123456789" * 1000)
    f = open(path, "rb")
    f.seek(10)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return environ["wsgi.file_wrapper"](f, 4096)


def file_wrapper_bytesio(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return environ["wsgi.file_wrapper"](io.BytesIO(b"abc" * 5000), 1000)


def sleepy(environ, start_response):
    corgi.sleep(float(environ["QUERY_STRING"] or "0.5"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept"]


# --- isolation ----------------------------------------------------------------------------------------------
request_var = contextvars.ContextVar("request_var", default="unset")
local = threading.local()


def _deep(n, check):
    if n == 0:
        corgi.sleep(0.01)
        return check()
    return _deep(n - 1, check)


def isolation(environ, start_response):
    rid = environ["QUERY_STRING"]
    problems = []
    if request_var.get() != "unset":
        problems.append(f"contextvar leaked in: {request_var.get()}")
    if getattr(local, "rid", None) is not None:
        problems.append(f"threading.local leaked in: {local.rid}")
    if sys.exc_info()[1] is not None:
        problems.append(f"exception state leaked in: {sys.exc_info()[1]!r}")
    request_var.set(rid)
    local.rid = rid
    try:
        raise KeyError(rid)
    except KeyError:
        corgi.sleep(0.02)
        if sys.exc_info()[1].args[0] != rid:
            problems.append(f"exc_info of another request: {sys.exc_info()[1]!r}")
    # Deep recursion while other requests sleep at depth too: the limit counts per request.
    depth = sys.getrecursionlimit() - 100
    ok = _deep(depth, lambda: request_var.get() == rid and local.rid == rid)
    if not ok:
        problems.append("contextvar or threading.local changed during the sleep")
    body = json.dumps({"rid": rid, "problems": problems}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def sqlite_callback(environ, start_response):
    """PyGILState_Ensure inside a fiber: sqlite3 calls back into Python."""
    request_var.set("in-fiber")
    conn = sqlite3.connect(":memory:")
    conn.create_function("probe", 1, lambda x: f"{request_var.get()}:{x}")
    corgi.sleep(0.01)
    value = conn.execute("select probe(7)").fetchone()[0]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [value.encode()]


# --- corgi module ------------------------------------------------------------------------------------------
def waits(environ, start_response):
    a, b = socket.socketpair()
    try:
        timed_out = corgi.wait_readable(a, timeout=0.05)
        t = threading.Thread(target=lambda: (corgi.sleep(0.05), b.send(b"!")))
        t.start()
        ready = corgi.wait_readable(a.fileno(), timeout=5)
        data = a.recv(10)
        writable = corgi.wait_writable(b, timeout=1)
        t.join()
    finally:
        a.close()
        b.close()
    corgi.suspend()
    body = json.dumps({"timed_out": timed_out, "ready": ready, "data": data.decode(), "writable": writable,
                       "in_request": corgi.in_request()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


async def _echo_client(port, text):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(text.encode() + b"\n")
    await writer.drain()
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return line.decode().strip()


_server_port = []


async def _start_echo_server():
    async def handle(reader, writer):
        line = await reader.readline()
        await asyncio.sleep(0.01)
        writer.write(line.upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    _server_port.append(server.sockets[0].getsockname()[1])
    return server


async def _fail():
    await asyncio.sleep(0)
    raise ZeroDivisionError("inside a coroutine")


def asyncio_app(environ, start_response):
    rid = environ["QUERY_STRING"] or "x"
    request_var.set(rid)
    loop = asyncio.get_event_loop()
    if not _server_port:
        corgi.await_(_start_echo_server())

    async def sees_context():
        await asyncio.sleep(0.01)
        return request_var.get()

    slept = corgi.await_(asyncio.sleep(0.05, result="slept"))
    ctx = corgi.await_(sees_context())
    echoed = corgi.await_(_echo_client(_server_port[0], f"hello {rid}"))
    try:
        corgi.await_(_fail())
        error = None
    except ZeroDivisionError as e:
        error = str(e)
    in_executor = corgi.await_(loop.run_in_executor(None, lambda: 6 * 7))
    body = json.dumps({"slept": slept, "ctx": ctx, "echoed": echoed, "error": error, "executor": in_executor,
                       "same_loop": loop is asyncio.get_event_loop(),
                       "loop_class": type(loop).__name__}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


async def coroutine_app(environ, start_response):
    await asyncio.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"from a coroutine"]


def returns_coroutine(environ, start_response):
    return coroutine_app(environ, start_response)


def returns_wsgi_app(environ, start_response):
    async def make():
        await asyncio.sleep(0.01)
        return hello

    return make()


def state(environ, start_response):
    body = json.dumps({"closed": closed, "seen": seen}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def reset_state(environ, start_response):
    closed.clear()
    seen.clear()
    start_response("204 No Content", [])
    return []


# --- coroutines that read the body: their steps run on the request's fiber ----------------------------------------
async def coroutine_reads_body(environ, start_response):
    """Reads the body in pieces across awaits; QUERY_STRING "fast" skips the body."""
    me = asyncio.current_task()
    parts = []
    if environ["QUERY_STRING"] != "fast":
        inp = environ["wsgi.input"]
        parts.append(inp.read(3).decode())
        await asyncio.sleep(0)
        parts.append(inp.readline().decode())
        parts.append(inp.read().decode())
    else:
        await asyncio.sleep(0.01)
    out = {"parts": parts, "same_task": asyncio.current_task() is me, "in_request": corgi.in_request(),
           "running_loop": asyncio.get_running_loop() is asyncio.get_event_loop()}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(out).encode()]


_hook_var = contextvars.ContextVar("hook_var", default="unset")


def async_to_sync_nested(environ, start_response):
    """asgiref's async_to_sync on a request's fiber, and again inside the coroutine it runs (asgiref
    itself refuses the nested call: a loop runs in this thread)."""
    from asgiref.sync import async_to_sync

    async def inner():
        await asyncio.sleep(0.01)
        _hook_var.set("set-by-inner")
        return asyncio.current_task()

    def sync_helper():
        return async_to_sync(inner)()

    async def outer():
        me = asyncio.current_task()
        data = environ["wsgi.input"].read()
        inner_task = sync_helper()  # sync code in a coroutine step: a nested await on the fiber
        return {"body": data.decode(), "inner_task_differs": inner_task is not me and inner_task is not None,
                "same_task_after": asyncio.current_task() is me, "var_in_outer": _hook_var.get(),
                "loop": type(asyncio.get_running_loop()).__name__}

    out = async_to_sync(outer)()
    out["var_in_caller"] = _hook_var.get()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(out).encode()]


left_behind = []
_left_behind_tasks = []


async def leaves_a_task(environ, start_response):
    """Creates a task it does not await: it goes on after the request, stepping on the lane."""
    async def later():
        await asyncio.sleep(0.05)
        left_behind.append(corgi.in_request())

    _left_behind_tasks.append(asyncio.get_running_loop().create_task(later()))
    await asyncio.sleep(0)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"left"]


def left_behind_state(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(left_behind).encode()]


async def timeout_around_read(environ, start_response):
    """asyncio.timeout() expires while the task is parked in a synchronous read: the read completes,
    the timeout takes effect at the next await."""
    data = b""
    outcome = "no timeout"
    try:
        async with asyncio.timeout(0.05):
            data = environ["wsgi.input"].read()
            await asyncio.sleep(0)
            outcome = "not cancelled at the next await"
    except TimeoutError:
        outcome = "TimeoutError"
    out = {"data": data.decode(), "outcome": outcome, "cancelling": asyncio.current_task().cancelling()}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(out).encode()]
