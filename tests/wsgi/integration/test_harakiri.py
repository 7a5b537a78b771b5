"""Deadlines that fail one request, not the worker (--harakiri, a route's "timeout"): through the
binary, a request past its deadline gets 504 and an access-log line; a WSGI request gets
corgi.RequestTimeout inside its fiber (at the point where it waits, or asynchronously while it
runs bytecode), its finally blocks and its iterable's close() run, and the lane carries on; C++
handlers are cancelled; a request stuck in C code past --harakiri-grace is logged and reported."""

import json
import os
import re
import socket
import tempfile
import threading
import time

import pytest

from support import APPS_DIR, read_until_close

# Every WSGI request of these servers runs on one lane (--threads 1), so a spinning request and a
# sleeping one share it; C++ routes run on the io threads.
ROUTES = [
    {"rule": "/plaintext", "handler": "plaintext"},
    {"rule": "/cpp-sleep", "handler": "sleep"},
    {"rule": "/cpp-short", "handler": "sleep", "timeout": 0.3},
    {"rule": "/cpp-exempt", "handler": "sleep", "timeout": 0},
    {"rule": "/sleep", "wsgi": "harakiri_apps:app", "timeout": 15},
    {"mount": "/", "wsgi": "harakiri_apps:app"},
]
GLOBAL_DEADLINE = 2.0
MARGIN = 4.0  # a noisy machine: what a deadline may overshoot by before the test calls it broken


@pytest.fixture
def config_file():
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="corgi-harakiri-", delete=False) as f:
        json.dump({"routes": ROUTES}, f)
    try:
        yield f.name
    finally:
        os.unlink(f.name)


@pytest.fixture
def server(corgi, config_file):
    return corgi(
        "--pythonpath", APPS_DIR, "--config", config_file, "--threads", "1",
        "--harakiri", str(GLOBAL_DEADLINE),
    )


def timed_get(srv, path, timeout=30.0):
    t0 = time.monotonic()
    status, _, body = srv.get(path, timeout=timeout)
    return status, body, time.monotonic() - t0


def events(srv):
    status, _, body = srv.get("/events")
    assert status == 200
    return json.loads(body)


def events_once_recorded(srv, *needed, timeout=5.0):
    """The recorded events once they include `needed`: the client's 504 goes out at the deadline, and
    the request's own unwinding (on its lane) may finish a moment later."""
    deadline = time.monotonic() + timeout
    seen = events(srv)
    while not all(n in seen for n in needed) and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = events(srv)
    return seen


def stdout_of(srv):
    with open(srv.out_path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def wait_for_access_line(srv, method, path, status, timeout=5.0):
    pattern = re.compile(rf'"{method} {re.escape(path)} HTTP/1\.1" {status} ')
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pattern.search(stdout_of(srv)):
            return True
        time.sleep(0.05)
    return False


def in_background(fn):
    result = {}

    def run():
        try:
            result["value"] = fn()
        except Exception as e:  # reported by the assertions on result
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def test_a_spinning_request_gets_504_while_a_sleeping_one_on_the_same_lane_gets_200(server):
    sleeper, slept = in_background(lambda: timed_get(server, "/sleep?s=1.5"))
    time.sleep(0.3)  # the sleeper is suspended in corgi.sleep when the spinner takes the lane
    status, body, took = timed_get(server, "/spin")
    assert status == 504, body
    assert GLOBAL_DEADLINE - 0.1 <= took < GLOBAL_DEADLINE + MARGIN
    sleeper.join(30)
    assert "value" in slept, slept
    assert slept["value"][:2] == (200, b"slept")
    seen = events_once_recorded(server, "spin:finally", "spin:close", "sleep:done")
    # RequestTimeout reached the bytecode loop (a BaseException, not an Exception), then the
    # generator's finally ran and the server called the iterable's close().
    assert "spin:raised:RequestTimeout:False" in seen
    assert seen.index("spin:finally") < seen.index("spin:close")
    assert "sleep:done" in seen
    assert wait_for_access_line(server, "GET", "/spin", 504)
    assert wait_for_access_line(server, "GET", "/sleep?s=1.5", 200)
    assert server.wait_for_log("request ended by its deadline")
    # The lane and the worker carry on.
    assert server.get("/hello")[:3:2] == (200, b"ok")


def test_a_request_waiting_for_a_body_that_never_comes_gets_504(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /read-body HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n0123456789")
        t0 = time.monotonic()
        reply = read_until_close(s, 30)
        took = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 504 "), reply[:200]
    assert GLOBAL_DEADLINE - 0.1 <= took < GLOBAL_DEADLINE + MARGIN
    raised = "read-body:raised:RequestTimeout"
    assert raised in events_once_recorded(server, raised)
    assert wait_for_access_line(server, "POST", "/read-body", 504)


def test_an_awaited_coroutine_is_cancelled_and_the_request_gets_request_timeout(server):
    status, _, took = timed_get(server, "/await")
    assert status == 504
    assert took < GLOBAL_DEADLINE + MARGIN
    seen = events_once_recorded(server, "await:coroutine-cancelled", "await:raised:RequestTimeout")
    assert seen.index("await:coroutine-cancelled") < seen.index("await:raised:RequestTimeout")


def test_cpp_handlers_are_cancelled_and_route_timeouts_override_the_global_one(server):
    # The demo's /sleep waits on a timer: cancelled at the deadline, not after its 30 s.
    status, _, took = timed_get(server, "/cpp-sleep?ms=30000")
    assert status == 504
    assert GLOBAL_DEADLINE - 0.1 <= took < GLOBAL_DEADLINE + MARGIN
    assert wait_for_access_line(server, "GET", "/cpp-sleep?ms=30000", 504)
    assert server.get("/plaintext")[0] == 200
    # A shorter deadline of its own: well before the global one.
    status, _, took = timed_get(server, "/cpp-short?ms=30000")
    assert status == 504
    assert took < GLOBAL_DEADLINE - 0.3
    # "timeout": 0, no deadline at all: it outlives the global one.
    status, body, took = timed_get(server, f"/cpp-exempt?ms={int((GLOBAL_DEADLINE + 0.5) * 1000)}")
    assert status == 200, body
    assert took >= GLOBAL_DEADLINE
    # A longer one of its own (a WSGI rule with "timeout": 15).
    status, body, _ = timed_get(server, f"/sleep?s={GLOBAL_DEADLINE + 0.5}")
    assert (status, body) == (200, b"slept")


def test_a_request_stuck_in_c_code_is_logged_and_cpp_routes_keep_answering(corgi, config_file):
    srv = corgi(
        "--pythonpath", APPS_DIR, "--config", config_file, "--threads", "1",
        "--harakiri", "1", "--harakiri-grace", "1",
    )
    stuck, result = in_background(lambda: timed_get(srv, "/stuck?s=20"))
    stuck.join(1 + MARGIN + 2)
    assert "value" in result, result
    status, _, took = result["value"]
    assert status == 504  # the io side answers, whatever the lane does
    assert took < 1 + MARGIN
    assert srv.wait_for_log("is stuck", timeout=1 + 1 + MARGIN)
    line = next(l for l in srv.stderr().splitlines() if "is stuck" in l)
    assert "GET /stuck?s=20" in line and "running for" in line
    assert srv.wait_for_log("cannot be recycled")  # a single process: no master to replace it
    # The lane is still inside time.sleep; the io threads and C++ routes are not.
    for _ in range(3):
        status, body, took = timed_get(srv, "/plaintext", timeout=10)
        assert (status, body) == (200, b"Hello, World!")
        assert took < 2


def test_the_master_replaces_a_worker_with_a_request_stuck_in_c_code(corgi, config_file):
    srv = corgi(
        "--master", "--pythonpath", APPS_DIR, "--config", config_file, "--threads", "1",
        "--harakiri", "1", "--harakiri-grace", "1", "--graceful-timeout", "2",
    )
    status, _, body = srv.get("/pid", timeout=10)
    assert status == 200
    first = json.loads(body)
    status, _, _ = timed_get(srv, "/stuck?s=20")
    assert status == 504
    # The stuck worker's lane answers nothing; its successor does, once the master replaced it.
    deadline = time.monotonic() + 25
    pid = first
    while time.monotonic() < deadline and pid == first:
        try:
            status, _, body = srv.get("/pid", timeout=2)
            if status == 200:
                pid = json.loads(body)
        except OSError:
            pass
        time.sleep(0.2)
    assert pid != first, srv.stderr()[-3000:]
    assert "stuck request" in srv.stderr()
