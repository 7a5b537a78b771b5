"""One settings schema for every source: uWSGI ini files as their documentation writes them (the Django tutorial's
mysite_uwsgi.ini, a Flask deployment's app.ini) serve the same apps under corgi, with a warning naming each option
corgi ignores and an error naming the line of a magic variable it cannot honour; a Gunicorn command line works
unchanged; flags win over CORGI_* variables, which win over files; --print-config prints what is in effect, as a
JSON file corgi reads back; every bad value exits 2 naming its flag, variable, key or ini line."""

import json
import os
import signal
import socket
import stat
import struct
import subprocess
import time

import pytest

from support import EXAMPLES_DIR, Server, corgi_binary, free_port, http_get


def run_corgi(*args, env=None, cwd=None, timeout=30):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CORGI_") or k == "CORGI_BINARY"}
    full_env.update(env or {})
    return subprocess.run(
        [corgi_binary(), *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd or EXAMPLES_DIR
    )


def effective(*args, env=None, cwd=None):
    r = run_corgi(*args, "--print-config", env=env, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def uwsgi_get(sock_path, path, host="127.0.0.1", timeout=15.0):
    """One GET over the uwsgi protocol (what nginx's uwsgi_pass sends): (status line, body bytes)."""
    params = {
        "REQUEST_METHOD": "GET",
        "REQUEST_URI": path,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": host,
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": host,
    }
    body = b"".join(
        struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode() for k, v in params.items()
    )
    packet = struct.pack("<BHB", 0, len(body), 0) + body
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(packet)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    data = b"".join(chunks)
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), rest


def wait_for(predicate, what, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.proc.poll() is not None:
            pytest.fail(f"corgi exited with {proc.proc.returncode} before {what}:\n{proc.stderr()[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"no {what} within {timeout} s:\n{proc.stderr()[-3000:]}")


# The ini of uWSGI's tutorial "Setting up Django and your web server with uWSGI and nginx", as it is written there
# (paths filled in).
DJANGO_TUTORIAL_INI = """\
# mysite_uwsgi.ini file
[uwsgi]

# Django-related settings
# the base directory (full path)
chdir           = {chdir}
# Django's wsgi file
module          = project.wsgi
# the virtualenv (full path)
home            = /path/to/virtualenv

# process-related settings
# master
master          = true
# maximum number of worker processes
processes       = 2
# the socket (use the full path to be safe
socket          = {socket}
# ... with appropriate permissions - may be needed
chmod-socket    = 664
# clear environment on exit
vacuum          = true
"""


def test_the_django_tutorial_ini_serves_django_over_a_unix_socket(tmp_path):
    sock = str(tmp_path / "mysite.sock")
    ini = write(
        tmp_path / "mysite_uwsgi.ini",
        DJANGO_TUTORIAL_INI.format(chdir=os.path.join(EXAMPLES_DIR, "django_project"), socket=sock),
    )
    srv = Server(["--ini", ini], EXAMPLES_DIR, str(tmp_path))
    try:
        wait_for(lambda: os.path.exists(sock), "uwsgi socket", srv)
        wait_for(lambda: srv.stderr().count("worker") >= 2 and "ready" in srv.stderr(), "workers ready", srv)
        status, body = uwsgi_get(sock, "/")
        assert status == "HTTP/1.1 200 OK"
        assert body == b"django on corgi\n"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o664
        err = srv.stderr()
        # The one option corgi does not share, named with its line; none of the others.
        assert f"{ini}:10 (home): uWSGI option 'home' is not supported by corgi; ignored" in err
        assert err.count("not supported by corgi") == 1
    finally:
        srv.kill()
    assert not os.path.exists(sock), "vacuum: the socket file is removed at exit"


# A Flask deployment's app.ini, as deployment guides write it (module, master, processes, a socket, die-on-term).
FLASK_INI = """\
[uwsgi]
module = flask_app:app
chdir = %d{examples}

master = true
processes = 2
enable-threads = true

http-socket = 127.0.0.1:{port}
die-on-term = true
harakiri = 30
max-requests = 5000
reload-on-rss = 512
buffer-size = 32768
disable-logging = true
pidfile = %d%n.pid
stats = %d%n-stats.sock
"""


def test_a_flask_ini_serves_flask_and_maps_every_shared_option(tmp_path):
    port = free_port()
    rel = os.path.relpath(EXAMPLES_DIR, tmp_path)
    ini = write(tmp_path / "app.ini", FLASK_INI.format(examples=rel, port=port))
    cfg, err = effective("--ini", ini)
    assert cfg["wsgi"] == "flask_app:app"
    assert os.path.realpath(cfg["chdir"]) == os.path.realpath(EXAMPLES_DIR)
    assert cfg["workers"] == 2
    assert cfg["listen"] == [{"http": f"127.0.0.1:{port}"}]
    assert cfg["limits"]["harakiri"] == 30
    assert cfg["max_requests"] == 5000
    assert cfg["max_rss"] == 512
    assert cfg["limits"]["max_header_bytes"] == 32768
    assert cfg["access_log"] is False
    assert cfg["pidfile"] == str(tmp_path / "app.pid")  # %d%n: the ini's directory and name
    assert cfg["stats"] == "unix:" + str(tmp_path / "app-stats.sock")
    assert "app.ini:7 (enable-threads): uWSGI option 'enable-threads' is not supported by corgi; ignored" in err
    assert "die-on-term" not in err  # its meaning is corgi's own: SIGTERM stops gracefully

    srv = Server(["--ini", ini], str(tmp_path), str(tmp_path))
    try:
        wait_for(lambda: "ready" in srv.stderr(), "a ready worker", srv)
        status, _, body = http_get(port, "/")
        assert status == 200 and body == b"hello from flask on corgi\n"
        with open(tmp_path / "app.pid") as f:
            assert int(f.read()) == srv.proc.pid
        os.kill(srv.proc.pid, signal.SIGTERM)
        assert srv.wait_exit(20.0) == 0
    finally:
        srv.kill()


@pytest.mark.parametrize(
    "line, message",
    [
        ("chdir = /srv/%t", "magic variable %t is not supported by corgi"),
        ("chdir = %(nowhere)/x", "placeholder %(nowhere) is not set"),
        ("socket = @(exec://hostname)", "@(...) file and exec includes are not supported"),
        ("processes = many", "expected a non-negative integer, got 'many'"),
        ("processes = 0", "must be between 1 and 1024"),
        ("master = perhaps", "expected true or false"),
        ("socket = 127.0.0.1:99999", "bad port"),
    ],
)
def test_a_bad_ini_line_exits_2_naming_file_and_line(tmp_path, line, message):
    ini = write(tmp_path / "bad.ini", f"[uwsgi]\n# a comment\nmodule = flask_app:app\n{line}\n")
    r = run_corgi("--ini", ini, "--check-config")
    assert r.returncode == 2, r.stderr
    assert f"{ini}:4 (" in r.stderr and message in r.stderr
    assert r.stdout == ""


def test_ini_placeholders_environment_sections_and_missing_sections(tmp_path):
    ini = write(
        tmp_path / "multi.ini",
        "[other]\nprocesses = 7\n\n[uwsgi]\nbase = %d\npythonpath = %(base)lib\nchdir = $(CONFIG_TEST_HOME)\n"
        "\n[production]\nprocesses = 3\nmaster\n",
    )
    cfg, _ = effective("--ini", ini, env={"CONFIG_TEST_HOME": str(tmp_path)})
    assert cfg["pythonpath"] == [str(tmp_path) + "/lib"]
    assert cfg["chdir"] == str(tmp_path)
    assert "workers" not in cfg  # [other] and [production] are not read
    cfg, _ = effective("--ini", ini + ":production")
    assert cfg["workers"] == 3
    r = run_corgi("--ini", ini + ":staging", "--check-config")
    assert r.returncode == 2 and "has no [staging] section" in r.stderr


def test_a_gunicorn_command_line_works_unchanged(tmp_path):
    port = free_port()
    args = ["-w", "2", "-b", f"127.0.0.1:{port}", "--access-logfile", "-", "--timeout", "20",
            "--graceful-timeout", "5", "--max-requests", "100", "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8",
            "flask_app:app"]  # fmt: skip
    cfg, _ = effective(*args)
    assert cfg["workers"] == 2
    assert cfg["listen"] == [{"http": f"127.0.0.1:{port}"}]
    assert cfg["access_log_file"] == "-"
    assert cfg["worker_timeout"] == 20  # Gunicorn's --timeout: a silent worker is replaced
    assert cfg["timeouts"]["graceful"] == 5
    assert cfg["max_requests"] == 100
    assert cfg["forwarded_allow_ips"] == ["127.0.0.1", "10.0.0.0/8"]
    assert cfg["wsgi"] == "flask_app:app"
    cfg, _ = effective("--bind", "unix:/run/x.sock", "-b", "localhost", "-b", "[::1]", "app:app")
    assert cfg["listen"] == [{"http": "unix:/run/x.sock"}, {"http": "localhost:8000"}, {"http": "[::1]:8000"}]
    cfg, err = effective("-w4", "-b127.0.0.1:7020", "-k", "gthread", "-e", "A_CORGI_TEST_VAR=1", "app:app")
    assert (cfg["workers"], cfg["listen"]) == (4, [{"http": "127.0.0.1:7020"}])
    assert cfg["env"] == ["A_CORGI_TEST_VAR=1"]
    assert "-k gthread ignored" in err

    srv = Server(args, EXAMPLES_DIR, str(tmp_path))
    try:
        wait_for(lambda: srv.stderr().count("ready") >= 1, "a ready worker", srv)
        status, _, body = http_get(port, "/", headers={"X-Request-Id": "gunicorn-style-1"})
        assert status == 200 and body == b"hello from flask on corgi\n"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "gunicorn-style-1" not in open(srv.out_path).read():
            time.sleep(0.05)
        assert '"GET / HTTP/1.1" 200' in open(srv.out_path).read()  # --access-logfile -: stdout
    finally:
        srv.kill()


def test_flags_win_over_the_environment_which_wins_over_files(tmp_path):
    conf = write(tmp_path / "c.json", json.dumps({"workers": 2, "threads": 2, "listen": ["127.0.0.1:7001"]}))
    env = {"CORGI_WORKERS": "3", "CORGI_HTTP": "127.0.0.1:7002,127.0.0.1:7003"}
    cfg, _ = effective("--config", conf)
    assert (cfg["workers"], cfg["threads"], cfg["listen"]) == (2, 2, [{"http": "127.0.0.1:7001"}])
    cfg, _ = effective("--config", conf, env=env)
    assert (cfg["workers"], cfg["threads"]) == (3, 2)
    assert cfg["listen"] == [{"http": "127.0.0.1:7002"}, {"http": "127.0.0.1:7003"}]  # replaced, not added
    cfg, _ = effective("--config", conf, "-w", "4", "--socket", "127.0.0.1:7004", env=env)
    assert (cfg["workers"], cfg["threads"]) == (4, 2)
    assert cfg["listen"] == [{"uwsgi": "127.0.0.1:7004"}]
    # CORGI_CONFIG names the file when no flag does.
    cfg, _ = effective(env={"CORGI_CONFIG": conf})
    assert cfg["workers"] == 2


def test_print_config_is_a_config_file_corgi_reads_back(tmp_path):
    args = ["--http", "127.0.0.1:7010", "--socket", "unix:/tmp/corgi-x.sock", "-w", "3", "--threads", "4",
            "--harakiri", "2.5", "--mount", "/f=flask_app:app", "--pythonpath", "a,b", "--chmod-socket", "660",
            "--stats", "127.0.0.1:7011", "--stats-http", "--no-async-views-hook", "--log-level", "warning",
            "--error-log-format", "json", "--access-log-format", "json", "--max-body-bytes", "1000"]  # fmt: skip
    first, _ = effective(*args)
    assert first["limits"]["harakiri"] == 2.5
    assert first["mounts"] == {"/f": "flask_app:app"}
    assert first["pythonpath"] == ["a", "b"]
    assert first["chmod_socket"] == "660"
    assert first["async_views_hook"] is False
    conf = write(tmp_path / "printed.json", json.dumps(first))
    again, _ = effective("--config", conf)
    assert again == first


@pytest.mark.parametrize(
    "args, env, names, message",
    [
        (["--threads", "0"], {}, "--threads", "must be between 1 and 256"),
        ([], {"CORGI_THREADS": "0"}, "CORGI_THREADS", "must be between 1 and 256"),
        (["--fiber-stack-kib", "8"], {}, "--fiber-stack-kib", "must be between 64 and 65536"),
        ([], {"CORGI_FIBER_STACK_KIB": "8"}, "CORGI_FIBER_STACK_KIB", "must be between 64 and 65536"),
        ([], {"CORGI_MASTER": "sometimes"}, "CORGI_MASTER", "expected true or false"),
        ([], {"CORGI_HTTP": "nowhere"}, "CORGI_HTTP", "expected host:port"),
        (["--log-level", "loud"], {}, "--log-level", "unknown level 'loud'"),
        (["--error-log-format", "xml"], {}, "--error-log-format", "expected text or json"),
        (["--timeout", "-1"], {}, "--timeout", "non-negative"),
        (["-b", "fd://3"], {}, "-b", "fd:// binds are not supported"),
        (["-c", "gunicorn.conf.py"], {}, "-c gunicorn.conf.py", "Python config files are not read"),
        (["--env", "NOEQUALS"], {}, "--env", "expects KEY=VALUE"),
        (["--mount", "nope"], {}, "--mount", "expects /PREFIX="),
                (["a:app", "b:app"], {}, "unexpected argument 'b:app'", ""),
        (["--preload", "false"], {}, "--preload takes no value", "--preload=false"),
        (["--forwarded-allow-ips", "127.0.0.1,nonsense"], {}, "--forwarded-allow-ips: ", "nonsense"),
    ],
)
def test_bad_values_exit_2_naming_flag_or_variable(args, env, names, message):
    r = run_corgi(*args, "--check-config", env=env)
    assert r.returncode == 2, r.stderr
    assert names in r.stderr and message in r.stderr
    assert "configuration OK" not in r.stdout


def test_the_json_file_has_the_same_bounds_as_flags(tmp_path):
    for doc, pointer, message in [
        ({"fiber_stack_kib": 8}, "/fiber_stack_kib", "must be between 64 and 65536"),
        ({"threads": 0}, "/threads", "must be between 1 and 256"),
        ({"limits": {"harakiri": "soon"}}, "/limits/harakiri", "expected a duration in seconds"),
        ({"limits": {"nope": 1}}, "/limits/nope", "unknown setting (expected one of"),
        ({"mounts": {"f": "x:app"}}, "/mounts/f", "a mount prefix starts with '/'"),
        ({"listen": [{"gopher": "127.0.0.1:70"}]}, "/listen/0/gopher", "unknown protocol"),
    ]:
        conf = write(tmp_path / "bad.json", json.dumps(doc))
        r = run_corgi("--config", conf, "--check-config")
        assert r.returncode == 2, (doc, r.stderr)
        assert f"{conf}: {pointer}" in r.stderr and message in r.stderr, (doc, r.stderr)


def test_unknown_corgi_variables_are_warned_about_and_check_config_says_ok():
    r = run_corgi("--http", "127.0.0.1:0", "--check-config", env={"CORGI_WROKERS": "4"})
    assert r.returncode == 0, r.stderr
    assert "CORGI_WROKERS is not a corgi setting; ignored" in r.stderr
    assert "configuration OK" in r.stdout


def test_url_map_errors_name_the_file_and_ini_section_magic(tmp_path):
    conf = write(tmp_path / "routes.json", json.dumps({"routes": [{"rule": "/x", "retrun": {"status": 200}}]}))
    r = run_corgi("--config", conf, "--check-config")
    assert r.returncode == 2 and f"{conf}: /routes/0" in r.stderr, r.stderr
    ini = write(tmp_path / "site.ini", "[uwsgi]\nvacuum = false\npidfile = /run/%x.pid\n")
    cfg, err = effective("--ini", ini)
    assert cfg["pidfile"] == "/run/site.ini:uwsgi.pid"  # uWSGI's %x: FILE:SECTION
    assert "site.ini:2 (vacuum): vacuum = false is not corgi's way" in err


def test_log_file_variables_are_named_after_gunicorns_flags(tmp_path):
    cfg, _ = effective(env={"CORGI_ACCESS_LOGFILE": str(tmp_path / "a.log"), "CORGI_ERROR_LOGFILE": "-",
                            "CORGI_ERROR_LOG_FORMAT": "JSON", "CORGI_ACCESS_LOG_ENABLED": "no"})  # fmt: skip
    assert cfg["access_log_file"] == str(tmp_path / "a.log")
    assert cfg["error_log_file"] == "-"
    assert cfg["error_log_format"] == "json"
    assert cfg["access_log"] is False
