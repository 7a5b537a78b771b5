"""Concurrency through the binary: C++ routes beside a busy Python lane, --threads for blocking C
calls, and many fibers parked in corgi.sleep. Bounds are generous; they fail only when requests
are serialized."""

import asyncio
import hashlib
import json
import os
import socket
import threading
import time

from support import python_app, read_until_close


def in_thread(fn, *args):
    """Runs fn(*args) in a thread; returns a function that joins it (bounded) and gives its result."""
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # reported by the joiner
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout=30.0):
        t.join(timeout)
        assert not t.is_alive(), "the request did not finish in time"
        if "error" in out:
            raise out["error"]
        return out["value"]

    join.alive = t.is_alive
    return join


def test_cpp_route_answers_while_python_is_cpu_bound(corgi):
    srv = corgi("--config", "examples/demo.json", *python_app("--mount", "/cpu=plain_apps:cpu"))
    started = time.monotonic()
    busy = in_thread(srv.get, "/cpu?seconds=3")
    time.sleep(0.5)  # the Python request is in its loop, holding the GIL
    t0 = time.monotonic()
    status, _, body = srv.get("/hello/fast", timeout=5)
    elapsed = time.monotonic() - t0
    assert status == 200 and b"fast" in body
    assert elapsed < 1.0, f"the C++ route took {elapsed:.2f} s while Python was busy"
    assert busy.alive(), "the CPU-bound request should still be running"
    status, _, body = busy()
    assert status == 200 and json.loads(body)["loops"] > 0
    assert time.monotonic() - started >= 2.5


def two_blocking_sleeps(srv):
    t0 = time.monotonic()
    joins = [in_thread(srv.get, "/?seconds=1") for _ in range(2)]
    results = [j() for j in joins]
    assert [r[0] for r in results] == [200, 200]
    return time.monotonic() - t0


def test_threads_give_concurrency_to_blocking_calls(corgi):
    two_lanes = corgi(*python_app("--wsgi", "plain_apps:blocking_sleep", "--threads", "2"))
    one_lane = corgi(*python_app("--wsgi", "plain_apps:blocking_sleep", "--threads", "1"))
    parallel = two_blocking_sleeps(two_lanes)
    assert parallel < 1.7, f"--threads 2: two time.sleep(1) took {parallel:.2f} s"
    serial = two_blocking_sleeps(one_lane)
    assert serial >= 1.9, f"--threads 1: a blocking call should hold its lane, got {serial:.2f} s"


async def _get(port, path, timeout):
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
        return data
    finally:
        writer.close()


async def _many(port, n, path, timeout):
    return await asyncio.wait_for(asyncio.gather(*(_get(port, path, timeout) for _ in range(n))), timeout + 5)


def test_200_fibers_sleeping_at_once(corgi):
    srv = corgi(*python_app("--wsgi", "plain_apps:fiber_sleep", "--threads", "1", "--fibers", "256"))
    t0 = time.monotonic()
    replies = asyncio.run(_many(srv.port, 200, "/?seconds=0.5", 10))
    elapsed = time.monotonic() - t0
    assert len(replies) == 200
    assert all(r.startswith(b"HTTP/1.1 200 ") and r.endswith(b"\r\n\r\nok") for r in replies), replies[:2]
    assert elapsed < 1.5, f"200 requests of corgi.sleep(0.5) took {elapsed:.2f} s"


def test_slow_uploads_do_not_block_a_fast_request(corgi):
    srv = corgi(*python_app("--mount", "/hash=plain_apps:hash_input", "--mount", "/fast=plain_apps:fiber_sleep"))
    body = bytes(range(256)) * 40  # 10240 bytes
    socks = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            socks.append(s)
            s.sendall(
                f"POST /hash/ HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body[:100]
            )
        time.sleep(0.3)  # the 50 uploads are inside the app, each waiting for the rest of its body
        t0 = time.monotonic()
        status, _, reply = srv.get("/fast/?seconds=0")
        elapsed = time.monotonic() - t0
        assert (status, reply) == (200, b"ok")
        assert elapsed < 1.0, f"a fast request took {elapsed:.2f} s behind 50 slow uploads"
        for s in socks:
            s.sendall(body[100:])
        for s in socks:
            head, _, out = read_until_close(s, 10).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert json.loads(out)["sha256"] == hashlib.sha256(body).hexdigest()
    finally:
        for s in socks:
            s.close()


def test_a_finished_response_is_not_held_by_the_next_request_blocking_the_lane(corgi):
    """The lane batches its wake-ups of the io thread while it has more work; when the next request blocks the
    lane (time.sleep), the batch still goes out within milliseconds, not when the blocking call returns."""
    srv = corgi(
        *python_app("--mount", "/cpu=plain_apps:cpu", "--mount", "/block=plain_apps:blocking_sleep", "--threads", "1")
    )
    timings = {}

    def timed_cpu():
        t0 = time.monotonic()
        status, _, _ = srv.get("/cpu?seconds=0.3")
        timings["cpu"] = time.monotonic() - t0
        return status

    first = in_thread(timed_cpu)
    time.sleep(0.1)  # the CPU request holds the lane: the blocking one queues behind it, in the same batch
    blocker = in_thread(srv.get, "/block?seconds=3")
    assert first() == 200
    assert timings["cpu"] < 1.5, f"the finished response waited for the blocked lane: {timings['cpu']:.2f} s"
    assert blocker()[0] == 200


def _context_switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if "ctxt_switches" in line:
                    total += int(line.split()[1])
    return total


def test_an_idle_server_goes_quiet_after_load(corgi):
    """The lanes' wake-up helpers poll only while there is load: an idle worker must not keep waking up (a poll
    every 250 µs would be thousands of context switches a second)."""
    srv = corgi(*python_app("--wsgi", "plain_apps:echo_environ"))
    joins = [in_thread(lambda: [srv.get("/") for _ in range(50)]) for _ in range(4)]
    for j in joins:
        j()
    time.sleep(0.5)  # the helpers give up polling after ~13 ms without work
    before = _context_switches(srv.proc.pid)
    time.sleep(2)
    switches = _context_switches(srv.proc.pid) - before
    assert switches < 200, f"{switches} context switches in 2 s of idleness"
