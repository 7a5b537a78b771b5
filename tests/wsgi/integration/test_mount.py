"""Python apps beside C++ handlers in one URL map: --mount and JSON config routes."""

import json

from support import python_app


def test_cli_mount_beside_demo_routes(corgi):
    srv = corgi("--config", "examples/demo.json", *python_app("--mount", "/py=plain_apps:echo_environ"))
    status, _, body = srv.get("/py/a%20b/c%2Fd?x=1&y=%20")
    assert status == 200
    env = json.loads(body)
    assert env["SCRIPT_NAME"] == "/py"
    assert env["PATH_INFO"] == "/a b/c/d"  # percent-decoded
    assert env["QUERY_STRING"] == "x=1&y=%20"  # raw
    assert env["routing_args"] == "None"
    assert env["wsgi.url_scheme"] == "http" and env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert json.loads(srv.get("/py")[2])["PATH_INFO"] == ""
    assert json.loads(srv.get("/py/")[2])["PATH_INFO"] == "/"
    # duplicate Cookie headers reach the app joined with "; "
    conn = srv.connection()
    try:
        conn.putrequest("GET", "/py/c")
        conn.putheader("Cookie", "a=1")
        conn.putheader("Cookie", "b=2")
        conn.endheaders()
        assert json.loads(conn.getresponse().read())["cookie"] == "a=1; b=2"
    finally:
        conn.close()

    # the C++ routes of the config still answer, before and after the mount
    status, _, body = srv.get("/hello/corgi")
    assert status == 200 and b"corgi" in body
    status, _, body = srv.get("/user/42")
    assert status == 200 and json.loads(body)["args"] == {"id": 42}
    assert srv.get("/pyx")[0] == 404  # a mount matches whole segments only


def test_json_config_rule_and_mount(corgi, tmp_path):
    config = {
        "routes": [
            {"rule": "/u/<int:id>", "endpoint": "user_py", "wsgi": "plain_apps:echo_environ"},
            {"mount": "/legacy", "wsgi": "plain_apps:echo_environ"},
            {"rule": "/hello/<name>", "endpoint": "hello", "handler": "hello"},
        ]
    }
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(config))
    srv = corgi("--config", str(path), *python_app())

    status, _, body = srv.get("/u/42")
    assert status == 200
    env = json.loads(body)
    assert env["routing_args"] == repr(((), {"id": 42}))
    assert srv.get("/u/forty-two")[0] == 404

    env = json.loads(srv.get("/legacy/x/y?q")[2])
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/legacy", "/x/y", "q")
    status, _, body = srv.get("/hello/there")
    assert status == 200 and b"there" in body


def test_the_make_run_demo(corgi):
    """What `make run` serves: the demo config's C++ routes with the Flask and async examples mounted (the same
    flags as the Makefile's run target, on 127.0.0.1:0)."""
    import re

    from support import SOURCE_DIR

    with open(f"{SOURCE_DIR}/Makefile") as f:
        makefile = f.read().replace("\\\n", " ")
    run_line = re.search(r"^run: build\n\t(.*)$", makefile, re.M).group(1)
    args = run_line.split()[1:]  # after ./$(BUILD)/bin/corgi
    assert "--mount" in args, run_line
    srv = corgi(*args)
    assert srv.get("/hello/you")[2] == b"Hello, you!\n"
    status, _, body = srv.get("/flask/")
    assert status == 200 and b"flask" in body
    status, _, body = srv.get("/async/hello/corgi")
    assert status == 200 and body.startswith(b"hello corgi")


def test_server_and_remote_address_on_a_wildcard_and_a_specific_listener(corgi):
    """SERVER_NAME/PORT are the address the client reached, also when the listener is bound to all interfaces."""
    import re
    import time

    srv = corgi("--http", "0.0.0.0:0", *python_app("--wsgi", "plain_apps:echo_environ"), with_http=False,
                listening=False)
    deadline = time.monotonic() + 20
    while not (m := re.search(r"serving http on 0\.0\.0\.0:(\d+)", srv.stderr())):
        assert time.monotonic() < deadline and srv.proc.poll() is None, srv.stderr()[-2000:]
        time.sleep(0.02)
    srv.port = int(m.group(1))
    env = json.loads(srv.get("/x")[2])
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["REMOTE_ADDR"]) == ("127.0.0.1", str(srv.port), "127.0.0.1")

    specific = corgi(*python_app("--wsgi", "plain_apps:echo_environ"))
    env = json.loads(specific.get("/x")[2])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(specific.port))
