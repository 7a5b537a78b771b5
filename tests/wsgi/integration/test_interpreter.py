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


def thread_names(pid):
    task_dir = f"/proc/{pid}/task"
    return sorted(open(os.path.join(task_dir, tid, "comm")).read().strip() for tid in os.listdir(task_dir))


def test_threads_are_named(corgi):
    srv = corgi("--io-threads", "2", "--threads", "2", "--python-on-io-threads", "false",
                *python_app("--wsgi", "plain_apps:echo_environ"))
    assert srv.get("/")[0] == 200
    names = thread_names(srv.proc.pid)
    assert "corgi-io-1" in names and "corgi-control" in names
    assert "corgi-lane-0" in names and "corgi-lane-1" in names
    assert "corgi-kick-0" in names and "corgi-kick-1" in names


def test_a_python_only_server_runs_its_lanes_on_the_io_threads(corgi):
    # Every route is Python and the counts agree: each io thread is a lane (no hand-off, no lane
    # threads); the app still sees one of two lanes serving it concurrently.
    srv = corgi("--io-threads", "2", "--threads", "2", *python_app("--wsgi", "plain_apps:echo_environ"))
    status, _, body = srv.get("/")
    assert status == 200 and json.loads(body)["multithread"] is True
    names = thread_names(srv.proc.pid)
    assert "corgi-io-1" in names and "corgi-control" in names
    assert not [n for n in names if n.startswith(("corgi-lane", "corgi-kick"))], names


def test_a_server_with_cpp_routes_keeps_python_on_lanes_of_their_own(corgi, tmp_path):
    # A C++ route must never wait for Python: with one in the map, the lanes have their own threads.
    path = tmp_path / "routes.json"
    path.write_text(json.dumps({"routes": [
        {"rule": "/hello/<name>", "endpoint": "hello", "handler": "hello"},
        {"mount": "/", "wsgi": "plain_apps:echo_environ"}]}))
    srv = corgi("--config", str(path), "--io-threads", "1", "--threads", "1", *python_app())
    assert srv.get("/")[0] == 200 and srv.get("/hello/x")[0] == 200
    names = thread_names(srv.proc.pid)
    assert "corgi-lane-0" in names and "corgi-kick-0" in names, names
