"""Fixtures of the process-model load tests: a corgi master with pre-forked workers serving
tests/integration/apps/stamped_app.py from a directory of the test's own (so a test can change the version the app
reads at import, or break its import). Every process is ended by pid at teardown: the master, then each worker ever
seen whose pid still names the same process."""

import os
import shutil
import signal
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("CORGI_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "wsgi", "integration"))  # support.Server

import procfs  # noqa: E402
from procfs import eventually  # noqa: E402
from support import Server  # noqa: E402

STAMPED_APP = os.path.join(SOURCE_DIR, "tests", "integration", "apps", "stamped_app.py")


class StampedApp:
    """stamped_app.py and its version.txt in a directory of their own."""

    def __init__(self, directory):
        self.dir = directory
        self.module = os.path.join(directory, "stamped_app.py")
        shutil.copyfile(STAMPED_APP, self.module)
        self.set_version("v0")

    def set_version(self, version):
        # Written whole then renamed: a worker importing meanwhile reads the old file or the new one.
        tmp = os.path.join(self.dir, "version.tmp")
        with open(tmp, "w") as f:
            f.write(version + "\n")
        os.replace(tmp, os.path.join(self.dir, "version.txt"))

    def break_import(self, message):
        with open(self.module, "w") as f:
            f.write(f"raise RuntimeError({message!r})\n")

    def restore(self):
        shutil.copyfile(STAMPED_APP, self.module)


class Prefork:
    """A master and its workers. Workers are the master's children in /proc; a worker is ready once the master has
    logged "worker PID ready"."""

    def __init__(self, server):
        self.server = server
        self.seen = {}  # pid -> start time

    @property
    def master(self):
        return self.server.proc.pid

    @property
    def port(self):
        return self.server.port

    def stderr(self):
        return self.server.stderr()

    def signal(self, sig):
        os.kill(self.master, sig)

    def workers(self):
        pids = procfs.children(self.master)
        for pid in pids:
            st = procfs.stat(pid)
            if st:
                self.seen.setdefault(pid, st[2])
        return pids

    def ready(self, pid, log=None):
        return f"worker {pid} ready" in (log if log is not None else self.stderr())

    def wait_generation(self, n, old=(), timeout=30.0):
        """Waits until the master has exactly n workers, all ready, none of them in `old`, and every pid of `old`
        has exited; returns the new set (empty on timeout)."""

        def settled():
            pids = self.workers()
            log = self.stderr()
            if len(pids) != n or pids & set(old) or any(procfs.alive(p) for p in old):
                return set()
            return pids if all(self.ready(p, log) for p in pids) else set()

        return eventually(settled, timeout)

    def accepting(self, listener):
        """The workers that accept new connections now: ready, and still holding the listening socket (a draining
        worker has closed its copy). /proc is read before the log, so a worker that becomes ready in between
        counts as accepting a little early, never as not accepting."""
        holding = {p for p in self.workers() if listener in procfs.socket_inodes(p)}
        log = self.stderr()
        return {p for p in holding if self.ready(p, log)}

    def kill_all(self):
        if self.server.proc.poll() is None:
            os.kill(self.master, signal.SIGKILL)
            self.server.proc.wait(timeout=10)
        for pid, start in self.seen.items():
            st = procfs.stat(pid)
            if st and st[2] == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def stamped_app():
    with tempfile.TemporaryDirectory(prefix="corgi-load-app-") as d:
        yield StampedApp(d)


@pytest.fixture
def prefork():
    """prefork(app, workers, *flags) -> a started Prefork on 127.0.0.1:0 whose workers are all ready."""
    started = []
    tmpdirs = []

    def start(app, workers, *flags):
        tmp = tempfile.TemporaryDirectory(prefix="corgi-load-")
        tmpdirs.append(tmp)
        argv = ["--http", "127.0.0.1:0", "--processes", str(workers), "--io-threads", "1", "--disable-logging",
                "--pythonpath", app.dir, "--wsgi", "stamped_app", *flags]
        srv = Prefork(Server(argv, SOURCE_DIR, tmp.name))
        started.append(srv)
        srv.server.wait_listening()
        if not srv.wait_generation(workers):
            pytest.fail(f"{workers} ready workers did not appear:\n{srv.stderr()[-4000:]}")
        return srv

    try:
        yield start
    finally:
        for srv in started:
            srv.kill_all()
        for tmp in tmpdirs:
            tmp.cleanup()
