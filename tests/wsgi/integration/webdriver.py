"""Headless Chromium driven through chromedriver's W3C WebDriver HTTP API with the standard library only (urllib +
json): Debian's chromium and chromium-driver, no Selenium. chromedriver runs on a free port of 127.0.0.1 in a session of
its own; close() ends the browser session, then chromedriver and every process below it (the browser, its zygotes and
renderers) by PID, also when the test failed."""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from support import require_tools


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid):
    """(ppid, start time in clock ticks) or None; the start time tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def _descendants(root):
    """{pid: start time} of every live process below `root`."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st:
                parents[int(name)] = st
    out, frontier = {}, [root]
    while frontier:
        p = frontier.pop()
        for pid, (ppid, start) in parents.items():
            if ppid == p and pid not in out:
                out[pid] = start
                frontier.append(pid)
    return out


class Browser:
    """One chromedriver and one browser session in it."""

    def __init__(self, out_dir, window=(1280, 1000)):
        tools = require_tools("chromium", "chromedriver")
        self.out_dir = out_dir
        self.port = _free_port()
        self.log_path = os.path.join(out_dir, "chromedriver.log")
        self.session = None
        self.seen = {}  # every process seen below chromedriver: pid -> start time
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [tools["chromedriver"], f"--port={self.port}", "--allowed-ips=127.0.0.1"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            self._wait_ready(20.0)
            profile = os.path.join(out_dir, "chromium-profile")
            caps = {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": shutil.which("chromium"),
                    # As root in a container: no sandbox; no GPU; /dev/shm may be small.
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}",
                             "--no-first-run", "--disable-extensions", "--disable-background-networking"],
                },
            }
            value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}}, timeout=60.0)
            self.session = value["sessionId"]
            self._remember()
        except BaseException:
            self.close()
            raise

    # --- WebDriver -------------------------------------------------------------------------------------------------
    def _call(self, method, path, body=None, timeout=30.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            raise AssertionError(f"WebDriver {method} {path}: HTTP {e.code}: {detail[:2000]}") from None

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"chromedriver exited with {self.proc.returncode}: {self._log()}")
            try:
                if self._call("GET", "/status", timeout=2.0).get("ready"):
                    return
            except (OSError, AssertionError, ValueError):
                pass
            time.sleep(0.05)
        pytest.fail(f"chromedriver was not ready within {timeout} s: {self._log()}")

    def _log(self):
        with open(self.log_path, "rb") as f:
            return f.read()[-4000:].decode("utf-8", "replace")

    def _s(self, suffix):
        return f"/session/{self.session}{suffix}"

    def get(self, url):
        self._call("POST", self._s("/url"), {"url": url}, timeout=60.0)
        self._remember()

    def execute(self, script, *args):
        """The value of a function body run in the page (`return ...;`), JSON-converted."""
        return self._call("POST", self._s("/execute/sync"), {"script": script, "args": list(args)})

    def screenshot(self, path):
        png = base64.b64decode(self._call("GET", self._s("/screenshot"), timeout=60.0))
        with open(path, "wb") as f:
            f.write(png)
        return path

    def wait_for(self, script, timeout, *args, interval=0.1):
        """The first truthy value of `script` within `timeout` seconds, else its last value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.execute(script, *args)
            if value or time.monotonic() >= deadline:
                return value
            time.sleep(interval)

    # --- ending ----------------------------------------------------------------------------------------------------
    def _remember(self):
        self.seen.update(_descendants(self.proc.pid))

    def close(self):
        if self.proc.poll() is None:
            self._remember()
            if self.session:
                try:
                    self._call("DELETE", self._s(""), timeout=10.0)
                except Exception:  # the browser may be gone already; the PIDs below end it anyway
                    pass
                self.session = None
            self._remember()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10.0)
        # Whatever outlived chromedriver (orphaned browser processes), by PID, if it is still the same process.
        for pid, start in self.seen.items():
            st = _stat(pid)
            if st and st[1] == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(
            (st := _stat(pid)) and st[1] == start for pid, start in self.seen.items()
        ):
            time.sleep(0.05)
