"""The embedded interpreter as an app sees it: Debian's CPython with its C extension modules, and
named threads an operator can tell apart."""

import json
import os

from support import python_app


def test_extension_modules_load_and_work(corgi):
    srv = corgi(*python_app("--wsgi", "plain_apps:interpreter_facts"))
    status, _, body = srv.get("/")
    assert status == 200, srv.stderr()[-2000:]
    facts = json.loads(body)
    assert facts["executable"] == "/usr/bin/python3.11"
    assert facts["prefix"] == "/usr"
    assert facts["decimal"] == "0.125" and facts["decimal_module"]  # _decimal from lib-dynload
    assert facts["sqlite"] == 42  # _sqlite3 from lib-dynload, linked to libsqlite3
    assert facts["strlen"] == 5  # _ctypes from lib-dynload, calling into libc
    assert facts["escaped"] == "&lt;a&gt;"
    assert facts["speedups"] == "markupsafe._speedups"  # a C extension from dist-packages


def test_threads_are_named(corgi):
    srv = corgi("--io-threads", "2", "--threads", "2", *python_app("--wsgi", "plain_apps:echo_environ"))
    assert srv.get("/")[0] == 200
    task_dir = f"/proc/{srv.proc.pid}/task"
    names = sorted(open(os.path.join(task_dir, tid, "comm")).read().strip() for tid in os.listdir(task_dir))
    assert "corgi-io-1" in names
    assert "corgi-lane-0" in names and "corgi-lane-1" in names
    assert "corgi-kick-0" in names and "corgi-kick-1" in names
