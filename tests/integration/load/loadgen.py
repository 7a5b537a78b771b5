"""An open-loop HTTP/1.1 load generator for the process-model tests and bench/workers.sh.

Open loop: request i starts at t0 + i / rate whatever happened to the earlier ones, so a server that stalls
during a reload shows up as failures or latency instead of being politely waited for (a closed-loop client such as
wrk sends less while the server is slow and hides the gap). One asyncio loop in one thread drives every request,
which keeps the client cheap on a 2-core machine.

The load mixes four kinds of request, in a fixed repeating pattern so that every run sends the same ones:
  new        GET / on a fresh connection with `Connection: close`
  keepalive  GET / on a pooled keep-alive connection (a new one when none is idle)
  post       POST /echo with a 16 KiB body on a fresh connection; the answer names its length and CRC-32
  slow       GET /slow?ms=200 on a fresh connection, a streamed answer whose first chunk is sent before the
             handler sleeps (so a request lost mid-way still says which worker held it)

Every outcome is classified as Puma's restart tests do (test/helpers/integration.rb): success, refused, reset,
read_timeout, write_error, unexpected_body (plus connect_timeout). The load is bounded three ways: a request
count, a duration and a per-request timeout, so it always stops by itself; stop() ends it early.

Used as a program it prints a JSON summary:
  python3.11 loadgen.py --port 8000 --rate 60 --seconds 10 [--mix new=3,keepalive=3,post=2,slow=2]
"""

import argparse
import asyncio
import collections
import dataclasses
import itertools
import json
import os
import re
import sys
import threading
import time
import zlib

SUCCESS = "success"
FAILURES = ("refused", "reset", "read_timeout", "write_error", "unexpected_body", "connect_timeout")
DEFAULT_MIX = {"new": 3, "keepalive": 3, "post": 2, "slow": 2}
STAMP = re.compile(rb"version=(\S+) pid=(\d+) imported_by=(\d+)")


@dataclasses.dataclass
class Outcome:
    index: int
    kind: str
    started: float  # time.monotonic() when the request began (before connecting)
    finished: float = 0.0
    result: str = ""
    detail: str = ""
    status: int = 0
    body: bytes = b""
    reused: bool = False  # sent on a keep-alive connection that had served a request before
    local_port: int = 0  # the client's port: tells which server process held the connection
    version: str = ""  # from the body's stamp (for `slow`, from its first chunk)
    pid: int = 0
    imported_by: int = 0

    @property
    def ok(self):
        return self.result == SUCCESS


def expand_mix(mix):
    """{"new": 3, "slow": 1} -> a list of kinds interleaved (new, slow, new, new), the pattern that repeats."""
    pattern = []
    left = dict(mix)
    while any(left.values()):
        for kind in list(left):
            if left[kind] > 0:
                pattern.append(kind)
                left[kind] -= 1
    return pattern


def parse_mix(text):
    mix = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind not in DEFAULT_MIX or not weight.isdigit():
            raise ValueError(f"--mix: expected kind=N with kind in {sorted(DEFAULT_MIX)}, got {part!r}")
        mix[kind] = int(weight)
    return mix


class _Response:
    def __init__(self):
        self.status = 0
        self.headers = {}
        self.body = b""


class Load:
    """Runs the load in a thread of its own: start(), then join() for the outcomes (or stop() to end early)."""

    def __init__(self, port, rate=60.0, seconds=10.0, max_requests=None, mix=None, host="127.0.0.1",
                 timeout=10.0, pool_size=8, slow_ms=200, post_bytes=16384):
        self.host, self.port = host, port
        self.rate, self.seconds = float(rate), float(seconds)
        self.max_requests = max_requests if max_requests is not None else int(self.rate * self.seconds) + 1
        self.pattern = expand_mix(mix or DEFAULT_MIX)
        self.timeout = timeout
        self.pool_size = pool_size
        self.slow_ms = slow_ms
        self.post_body = os.urandom(post_bytes)
        self.post_crc = zlib.crc32(self.post_body)
        self.outcomes = []
        self.stale_discarded = 0  # idle keep-alive connections the server had closed, dropped before reuse
        self.stale_retried = 0  # requests sent on a keep-alive connection the server closed meanwhile, retried
        self._idle = []
        self._stop = threading.Event()
        self._thread = None
        self._started_at = None

    # --- control, from any thread --------------------------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="loadgen", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()

    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout=None):
        """Waits for the last request to end; returns the outcomes in the order they were started. Never waits
        much longer than the load's own bounds (seconds + per-request timeout)."""
        bound = self.seconds + 2 * self.timeout + 10 if timeout is None else timeout
        self._thread.join(bound)
        if self._thread.is_alive():
            raise RuntimeError(f"the load did not stop within {bound} s")
        return self.outcomes

    def run(self):
        """Runs the whole load in the calling thread; returns the outcomes."""
        asyncio.run(self._main())
        return self.outcomes

    # --- the schedule ------------------------------------------------------------------------------------------
    async def _main(self):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        self._started_at = time.monotonic()
        tasks = set()
        kinds = itertools.cycle(self.pattern)
        for i in range(self.max_requests):
            due = t0 + i / self.rate
            if due - t0 >= self.seconds or self._stop.is_set():
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            outcome = Outcome(index=i, kind=next(kinds), started=time.monotonic())
            self.outcomes.append(outcome)
            task = asyncio.create_task(self._one(outcome))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            # Each request has its own timeout; this bound only guards against a bug here.
            await asyncio.wait(set(tasks), timeout=3 * self.timeout + 5)
        for t in list(tasks):
            t.cancel()
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()

    # --- one request -------------------------------------------------------------------------------------------
    def _request_bytes(self, kind):
        host = f"Host: {self.host}:{self.port}\r\n"
        if kind == "new":
            return f"GET / HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode()
        if kind == "keepalive":
            return f"GET / HTTP/1.1\r\n{host}\r\n".encode()
        if kind == "slow":
            return f"GET /slow?ms={self.slow_ms} HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode()
        return (
            f"POST /echo HTTP/1.1\r\n{host}Connection: close\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(self.post_body)}\r\n\r\n"
        ).encode() + self.post_body

    async def _connect(self):
        return await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)

    def _take_idle(self):
        while self._idle:
            reader, writer = self._idle.pop()
            # The server may have closed an idle connection (a worker draining, its keep-alive timeout):
            # the FIN has been read by the loop by now. Reusing it would only race the close (HTTP clients
            # such as urllib3 make the same check).
            if reader.at_eof() or writer.is_closing():
                self.stale_discarded += 1
                writer.close()
                continue
            return reader, writer
        return None

    async def _one(self, o, fresh=False):
        writer = None
        keep = False
        try:
            conn = self._take_idle() if o.kind == "keepalive" and not fresh else None
            o.reused = conn is not None
            if conn is None:
                try:
                    conn = await self._connect()
                except asyncio.TimeoutError:
                    return self._end(o, "connect_timeout", "no connection within the timeout")
                except ConnectionRefusedError as e:
                    return self._end(o, "refused", str(e))
                except ConnectionResetError as e:
                    return self._end(o, "reset", "at connect: " + str(e))
                except OSError as e:
                    return self._end(o, "refused", f"at connect: {e}")
            reader, writer = conn
            sock = writer.get_extra_info("sockname")
            o.local_port = sock[1] if sock else 0
            try:
                writer.write(self._request_bytes(o.kind))
                await asyncio.wait_for(writer.drain(), self.timeout)
            except asyncio.TimeoutError:
                return self._end(o, "write_error", "the request could not be sent within the timeout")
            except OSError as e:
                return self._end(o, "write_error", str(e))
            try:
                resp = await asyncio.wait_for(self._read_response(reader, o), self.timeout)
            except asyncio.TimeoutError:
                return self._end(o, "read_timeout", f"no complete response within {self.timeout} s")
            except asyncio.IncompleteReadError as e:
                if o.reused and not e.partial and not fresh:
                    # RFC 9112 9.3.1: a server may close an idle keep-alive connection at any time, and a
                    # request sent on it meanwhile got no byte back, so it was never processed; clients
                    # retry such an idempotent request on a new connection (urllib3's retries, nginx's
                    # proxy_next_upstream). Counted, so the report shows how often it happened.
                    writer.close()
                    writer = None
                    self.stale_retried += 1
                    return await self._one(o, fresh=True)
                return self._end(o, "reset", f"closed before the response was complete ({len(e.partial)} bytes)")
            except asyncio.LimitOverrunError as e:
                return self._end(o, "unexpected_body", f"header block too long: {e}")
            except OSError as e:  # ECONNRESET, ENOTCONN, EPIPE
                if o.reused and not fresh and isinstance(e, ConnectionResetError):
                    writer.close()  # the same stale keep-alive case, reset instead of closed
                    writer = None
                    self.stale_retried += 1
                    return await self._one(o, fresh=True)
                return self._end(o, "reset", str(e))
            except ValueError as e:
                return self._end(o, "unexpected_body", f"malformed response: {e}")
            o.status, o.body = resp.status, resp.body
            problem = self._check(o, resp)
            if problem:
                return self._end(o, "unexpected_body", problem)
            keep = o.kind == "keepalive" and resp.headers.get("connection", "").lower() != "close"
            return self._end(o, SUCCESS, "")
        finally:
            if writer is not None:
                if keep and len(self._idle) < self.pool_size:
                    self._idle.append((reader, writer))
                else:
                    writer.close()

    def _end(self, o, result, detail):
        o.finished = time.monotonic()
        o.result, o.detail = result, detail

    async def _read_response(self, reader, o):
        resp = _Response()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError(f"status line {lines[0]!r}")
        resp.status = int(parts[1])
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                resp.headers[name.strip().lower()] = value.strip()
        if resp.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # no trailers are sent
                    break
                chunk = await reader.readexactly(size)
                await reader.readexactly(2)
                if not chunks:
                    self._stamp(o, chunk)  # the first chunk names the worker before the handler sleeps
                chunks.append(chunk)
            resp.body = b"".join(chunks)
        elif "content-length" in resp.headers:
            resp.body = await reader.readexactly(int(resp.headers["content-length"]))
        else:
            resp.body = await reader.read()  # until close
        return resp

    @staticmethod
    def _stamp(o, body):
        m = STAMP.search(body)
        if m:
            o.version, o.pid, o.imported_by = m.group(1).decode(), int(m.group(2)), int(m.group(3))

    def _check(self, o, resp):
        if resp.status != 200:
            return f"status {resp.status}"
        self._stamp(o, resp.body)
        if not o.version:
            return f"no version stamp in {resp.body[:80]!r}"
        if o.kind == "post" and f"length={len(self.post_body)} crc={self.post_crc}".encode() not in resp.body:
            return f"the echo does not match what was sent: {resp.body[:120]!r}"
        if o.kind == "slow" and not resp.body.endswith(b"slept\n"):
            return f"the slow answer is incomplete: {resp.body[:120]!r}"
        return ""


def summarize(outcomes, stale_discarded=0, stale_retried=0):
    """Counts by result and by kind, the versions seen, the latency percentiles of the successes."""
    by_result = collections.Counter(o.result for o in outcomes)
    by_kind = {}
    for o in outcomes:
        by_kind.setdefault(o.kind, collections.Counter())[o.result] += 1
    latencies = sorted(o.finished - o.started for o in outcomes if o.ok and o.kind != "slow")

    def pct(p):
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else None

    return {
        "requests": len(outcomes),
        "success": by_result.get(SUCCESS, 0),
        "failed": sum(n for r, n in by_result.items() if r != SUCCESS),
        "by_result": dict(by_result),
        "by_kind": {k: dict(v) for k, v in by_kind.items()},
        "versions": sorted({o.version for o in outcomes if o.version}),
        "worker_pids": len({o.pid for o in outcomes if o.pid}),
        "stale_keepalive_discarded": stale_discarded,
        "stale_keepalive_retried": stale_retried,
        "latency_ms_p50_p99_max": [pct(0.5), pct(0.99), pct(1.0)],
        "first_failures": [f"{o.kind} #{o.index}: {o.result} ({o.detail})" for o in outcomes if not o.ok][:10],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=60.0, help="requests per second (default 60)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long the load lasts (default 10)")
    p.add_argument("--timeout", type=float, default=10.0, help="per request (default 10)")
    p.add_argument("--mix", type=parse_mix, default=DEFAULT_MIX, help="e.g. new=3,keepalive=3,post=2,slow=2")
    p.add_argument("--slow-ms", type=int, default=200)
    a = p.parse_args(argv)
    load = Load(a.port, rate=a.rate, seconds=a.seconds, mix=a.mix, host=a.host, timeout=a.timeout,
                slow_ms=a.slow_ms)
    outcomes = load.run()
    json.dump(summarize(outcomes, load.stale_discarded, load.stale_retried), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
