"""Helpers of the end-to-end WSGI tests: the real corgi binary (env CORGI_BINARY) on 127.0.0.1:0, driven over real
sockets with the standard library. Every server is killed by PID at teardown and every wait is
bounded, so a hung server fails a test instead of hanging the run."""

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
APPS_DIR = os.path.join(HERE, "apps")
SOURCE_DIR = os.environ.get("CORGI_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", "..", ".."))
EXAMPLES_DIR = os.path.join(SOURCE_DIR, "examples")
SERVING = re.compile(rb"corgi: serving http on 127\.0\.0\.1:(\d+)")


def sanitized_build():
    """True when the binary was built with AddressSanitizer (`corgi --version` says so)."""
    out = subprocess.run([corgi_binary(), "--version"], capture_output=True, text=True, timeout=10).stdout
    return "sanitizers:" in out


def corgi_binary():
    path = os.environ.get("CORGI_BINARY")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("CORGI_BINARY is not set to the corgi executable (run through ctest)")
    return path


def require_tools(*names):
    """{name: path} of external test tools (Debian's prometheus, chromium, ...; `scripts/install-deps.sh --test`).
    A missing one skips the test, saying which, unless CI is set: there it fails the test."""
    found = {n: shutil.which(n) for n in names}
    missing = [n for n, p in found.items() if not p]
    if missing:
        why = f"{', '.join(missing)} not installed (scripts/install-deps.sh --test installs it)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{why}; CI is set, so this is a failure")
        print(f"skipping: {why}")
        pytest.skip(why)
    return found


class Server:
    """One corgi process; stdout and stderr go to files so that a chatty server can never block on a
    full pipe."""

    def __init__(self, args, cwd, tmpdir):
        self.args = args
        self.port = None
        self.err_path = os.path.join(tmpdir, "stderr")
        self.out_path = os.path.join(tmpdir, "stdout")
        env = dict(os.environ)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.err_path, "wb") as err, open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [corgi_binary(), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_listening(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.err_path, "rb") as f:
                m = SERVING.search(f.read())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                pytest.fail(f"corgi exited with {self.proc.returncode} before listening:\n{self.stderr()[-4000:]}")
            time.sleep(0.02)
        pytest.fail(f"corgi did not listen within {timeout} s:\n{self.stderr()[-4000:]}")

    def wait_exit(self, timeout=20.0):
        """The exit status, or None when the process is still running after `timeout`."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_for_log(self, needle, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.stderr():
                return True
            time.sleep(0.02)
        return False

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait_exit(5.0) is None:
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10.0)

    # --- clients ------------------------------------------------------------------------------------------------
    def connection(self, timeout=15.0):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=15.0):
        """(status, headers as a lowercase dict (repeats joined by ', '), body bytes)."""
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            hdrs = {}
            for k, v in resp.getheaders():
                k = k.lower()
                hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
            return resp.status, hdrs, data
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def raw(self, data, timeout=15.0):
        """Sends raw bytes, reads until the server closes (or `timeout`): everything received."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            return read_until_close(s, timeout)


def read_until_close(sock, timeout):
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the server did not close the connection in time")
        sock.settimeout(left)
        try:
            b = sock.recv(65536)
        except ConnectionResetError:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


class Launcher:
    """Starts servers (listening on 127.0.0.1:0 unless with_http=False) and kills them all in close()."""

    def __init__(self):
        self.servers = []
        self.tmpdirs = []

    def start(self, *args, cwd=None, listening=True, with_http=True):
        tmp = tempfile.TemporaryDirectory(prefix="corgi-wsgi-it-")
        self.tmpdirs.append(tmp)
        argv = list(args)
        if with_http:
            argv = ["--http", "127.0.0.1:0", *argv]
        srv = Server(argv, cwd or SOURCE_DIR, tmp.name)
        self.servers.append(srv)
        if listening:
            srv.wait_listening()
        return srv

    def close(self):
        for srv in self.servers:
            srv.kill()
        for tmp in self.tmpdirs:
            tmp.cleanup()


def free_port():
    """A TCP port of 127.0.0.1 free a moment ago, for a listener whose port a test must choose itself."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, headers=None, timeout=10.0):
    """(status, headers as a lowercase dict, body bytes) of one GET on a connection of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def proc_start_time(pid):
    """The start time of a live process in clock ticks (tells a reused pid apart), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


class StatsClient:
    """corgi's stats listener (`--stats 127.0.0.1:PORT --stats-http`) on a port chosen beforehand. Remembers every
    worker pid it saw, so that end() can kill by PID whatever survived the master (`Launcher.close` ends the
    master only)."""

    def __init__(self, port):
        self.port = port
        self.seen = {}  # worker pid -> start time

    def flags(self):
        return ["--stats", f"127.0.0.1:{self.port}", "--stats-http"]

    def json(self, timeout=10.0):
        import json

        status, headers, body = http_get(self.port, "/", timeout=timeout)
        assert status == 200, (status, body[:500])
        doc = json.loads(body)
        for w in doc.get("workers", []):
            if w.get("pid") and w["pid"] not in self.seen:
                self.seen[w["pid"]] = proc_start_time(w["pid"])
        return doc

    def wait_workers(self, n, timeout=30.0, exclude=()):
        """The stats document once it lists n workers with live pids, none of them in `exclude`."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                doc = self.json(timeout=2.0)
            except (OSError, AssertionError, ValueError) as e:
                last = e
            else:
                last = doc.get("workers")
                pids = [w.get("pid") for w in doc.get("workers", [])]
                if len(pids) == n and all(pids) and not set(pids) & set(exclude) and all(
                    proc_start_time(p) for p in pids
                ):
                    return doc
            time.sleep(0.05)
        pytest.fail(f"the stats listener did not list {n} live workers within {timeout} s (last: {last!r})")

    def end(self):
        for pid, start in self.seen.items():
            if start is not None and proc_start_time(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def python_app(*args):
    """The flags that serve a module of tests/wsgi/integration/apps."""
    return ["--pythonpath", APPS_DIR, *args]


def post_slowly(port, path, body, piece=65536, pause=0.05, chunked=False, timeout=30.0):
    """POSTs `body` over one connection in pieces of `piece` bytes with `pause` seconds between them,
    with a Content-Length or chunked; returns (status, body) of the Connection: close reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: application/octet-stream\r\n{framing}\r\n\r\n".encode()
        )
        for i in range(0, len(body), piece):
            part = body[i : i + piece]
            s.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            time.sleep(pause)
        if chunked:
            s.sendall(b"0\r\n\r\n")
        reply = read_until_close(s, timeout)
    head, _, data = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        out = b""
        while True:
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out += data[:size]
            data = data[size + 2 :]
        data = out
    return status, data


def concurrently(n, fn, timeout=30.0):
    """Runs fn(i) for i in range(n) in n threads at once; returns (results in order, seconds)."""
    import threading

    results = [None] * n

    def run(i):
        try:
            results[i] = fn(i)
        except Exception as e:  # reported by the caller's assertions
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results, time.monotonic() - t0
