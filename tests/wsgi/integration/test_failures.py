"""Failures through the binary: what the client sees, what the log says, and that the worker keeps
serving (except after a fiber stack overflow, which stops the process)."""

import http.client
import re

import pytest

from support import python_app, sanitized_build

GET = "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_import_error_at_start_up_exits_non_zero(corgi):
    srv = corgi(*python_app("--wsgi", "broken_import:application"), listening=False)
    rc = srv.wait_exit(30)
    assert rc is not None, "corgi kept running with an app that cannot be imported"
    assert rc != 0
    err = srv.stderr()
    assert "Traceback (most recent call last)" in err
    assert "ModuleNotFoundError" in err and "corgi_no_such_module_for_the_test" in err
    assert "serving http" not in err


def test_exception_before_start_response_is_a_500(corgi):
    srv = corgi(*python_app("--wsgi", "plain_apps:fail_before_headers"))
    for _ in range(2):
        status, _, body = srv.get("/boom")
        assert status == 500 and b"Internal Server Error" in body
        assert b"boom" not in body  # the traceback goes to the log, not to the client
    assert srv.get("/ok")[2] == b"still serving"
    assert srv.wait_for_log("RuntimeError: boom before start_response")
    assert "Traceback (most recent call last)" in srv.stderr()


@pytest.mark.parametrize("path", ["/sized", "/chunked"])
def test_exception_after_headers_truncates_the_response(corgi, path):
    srv = corgi(*python_app("--wsgi", "plain_apps:fail_after_headers"))
    reply = srv.raw(GET.format(path).encode(), timeout=10)  # keep-alive asked: only an abort closes it
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    if path == "/sized":
        assert re.search(rb"(?i)content-length: 1000\r\n", head + b"\r\n")
        assert 0 < len(body) < 1000
    else:
        assert re.search(rb"(?i)transfer-encoding: chunked", head)
        assert b"x" * 100 in body and not body.endswith(b"0\r\n\r\n")
    # http.client sees it as a truncated body, not as a success
    conn = srv.connection()
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()
    assert srv.get("/ok")[2] == b"still serving"
    assert srv.wait_for_log("RuntimeError: boom after the headers")


def test_non_iterable_result_is_a_500_with_a_clear_log_line(corgi):
    srv = corgi(*python_app("--wsgi", "plain_apps:non_iterable"))
    assert srv.get("/bad")[0] == 500
    assert srv.get("/ok")[2] == b"still serving"
    assert srv.wait_for_log("must return an iterable of bytes, not int")
    assert "returned a non-iterable" in srv.stderr()


def test_fiber_stack_overflow_is_reported_and_stops_the_process(corgi):
    srv = corgi(*python_app("--wsgi", "plain_apps:deep_recursion", "--fiber-stack-kib", "128"))
    assert srv.get("/ok")[2] == b"still serving"
    try:
        reply = srv.raw(GET.format("/deep").encode(), timeout=20)
    except (ConnectionError, TimeoutError) as e:
        reply = repr(e).encode()
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:200]
    rc = srv.wait_exit(20)
    assert rc is not None, "the process neither recovered nor stopped after a fiber stack overflow"
    assert rc != 0
    err = srv.stderr()
    if sanitized_build():
        # ASan watches every stack itself and reports the overflow before corgi's handler could.
        assert "AddressSanitizer: stack-overflow" in err, err[-2000:]
    else:
        assert "fiber stack overflow" in err and "128 KiB" in err, err[-2000:]


def test_waiting_for_the_client_outside_the_request_fiber_is_an_error_not_a_crash(corgi):
    srv = corgi(*python_app("--wsgi", "plain_apps:input_elsewhere"))
    body = b"x" * 100
    # A coroutine the request awaits runs on its fiber: reading and write() work there.
    assert srv.request("POST", "/coroutine", body=body)[2] == b"read 100 bytes in a coroutine"
    assert srv.request("POST", "/write", body=body)[2] == b"written from a coroutine, then returned"
    # A task created before the request awaited steps on the lane: an error, not a crash.
    for path in ("/task", "/task/write"):
        assert srv.request("POST", path, body=body)[0] == 500
    assert srv.wait_for_log("RuntimeError: write() sends to the client, and only the request itself")
    assert "RuntimeError: wsgi.input needs more of the request body" in srv.stderr()
    status, _, reply = srv.request("POST", "/thread", body=body)
    assert status == 200 and reply.startswith(b"wsgi.input needs more of the request body")
    assert srv.get("/ok")[2] == b"still serving"
    assert srv.proc.poll() is None


def test_sigterm_ends_the_process_even_with_a_request_spinning_in_python(corgi):
    # Without --harakiri nothing interrupts the loop: once the graceful timeout has passed, the lane
    # is left behind (it still holds the GIL) and the process exits instead of waiting forever.
    import socket
    import signal
    import time

    srv = corgi(*python_app("--wsgi", "plain_apps:spin_forever", "--graceful-timeout", "1"))
    client = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        client.sendall(b"GET /spin HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)  # inside the loop now
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        status = srv.wait_exit(15.0)
        assert status == 0, srv.stderr()[-2000:]
        assert time.monotonic() - started < 10
        assert "still running Python" in srv.stderr()
    finally:
        client.close()
