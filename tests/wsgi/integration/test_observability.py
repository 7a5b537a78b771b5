"""One completion point per request: access-log formats (common, combined, json, templates) that
no client can forge, and the request id in the response, environ, corgi.request_id(), Python
logging records and the error log."""

import json
import os
import re
import signal
import socket
import time

from support import python_app

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def access_lines(srv, count, timeout=5.0):
    """The first `count` access-log lines (stdout, flushed every 100 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        with open(srv.out_path, "rb") as f:
            lines = [l for l in f.read().split(b"\n") if l]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def app(*args):
    return python_app("--wsgi", "observability_apps", *args)


def test_request_id_is_generated_and_reaches_app_header_log_and_logging(corgi):
    srv = corgi(*app())
    ids = []
    for i in range(3):
        status, headers, body = srv.request("POST", f"/r{i}", body=b"x" * 100)
        assert status == 200
        doc = json.loads(body)
        rid = headers["x-request-id"]
        assert HEX32.match(rid)
        assert doc["environ"] == rid and doc["corgi"] == rid
        ids.append(rid)
    assert len(set(ids)) == 3  # 128 random bits each
    lines = access_lines(srv, 3)
    for rid, line in zip(ids, lines):
        assert line.decode().endswith(" " + rid)
    err = srv.stderr()
    for i, rid in enumerate(ids):
        assert f"app-log id={rid} serving /r{i}" in err
    assert "app-log id=- imported" in err  # outside a request


def test_trusted_peer_x_request_id_is_kept_untrusted_replaced(corgi):
    # 127.0.0.1 is trusted by default (Gunicorn's --forwarded-allow-ips).
    srv = corgi(*app())
    status, headers, body = srv.get("/t", headers={"X-Request-Id": "edge-42.abc:1"})
    assert headers["x-request-id"] == "edge-42.abc:1"
    assert json.loads(body)["corgi"] == "edge-42.abc:1"
    # A value that could forge a log field is never taken, even from a trusted peer.
    status, headers, body = srv.get("/t", headers={"X-Request-Id": 'a" b'})
    assert HEX32.match(headers["x-request-id"])
    untrusted = corgi(*app("--forwarded-allow-ips", "10.0.0.0/8, fd00::/8"))
    status, headers, body = untrusted.get("/t", headers={"X-Request-Id": "edge-42"})
    rid = headers["x-request-id"]
    assert HEX32.match(rid)
    assert json.loads(body)["environ"] == rid  # the client's value does not reach the app


def test_error_log_lines_name_the_request(corgi):
    srv = corgi(*app())
    status, headers, _ = srv.get("/boom")
    assert status == 500
    rid = headers["x-request-id"]
    assert srv.wait_for_log(f"(request {rid}): the application raised")
    cpp = corgi()  # the built-in demo routes, /fail among them
    status, headers, _ = cpp.get("/fail")
    assert status == 500
    assert cpp.wait_for_log(f"(GET /fail, route 'fail', request {headers['x-request-id']})")


def test_json_access_log_escapes_every_field(corgi):
    srv = corgi(*app("--access-log-format", "json"))
    evil_agent = 'curl" "injected\\'
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        # A quote and bytes outside ASCII in the target, a quote and backslash in a header, an
        # invalid UTF-8 byte in the referer: every line stays one JSON document.
        s.sendall(b'GET /q"x\xc3\xa9?a=%22 HTTP/1.1\r\nHost: h\r\nUser-Agent: ' + evil_agent.encode() +
                  b"\r\nReferer: \xff\xfe\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
    srv.request("POST", "/post", body=b"y" * 1000)
    lines = access_lines(srv, 2)
    assert len(lines) == 2
    first, second = (json.loads(l) for l in lines)
    assert first["uri"] == '/q"xé?a=%22'
    assert first["user_agent"] == evil_agent
    assert first["referer"] == "\u00ff\u00fe"
    assert first["status"] == 200 and first["method"] == "GET"
    assert HEX32.match(first["request_id"]) and first["listener"] == "http"
    assert second["bytes_in"] == 1000 and second["bytes_out"] > 0
    assert isinstance(second["msecs"], float) and second["msecs"] >= 0
    assert second["pid"] == srv.proc.pid


def test_combined_and_template_formats(corgi):
    srv = corgi("--config", "examples/demo.json", "--access-log-format", "combined")
    srv.get("/plaintext", headers={"Referer": "http://r.example/", "User-Agent": 'ua "quoted"'})
    line = access_lines(srv, 1)[0].decode()
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[[^]]+\] "GET /plaintext HTTP/1\.1" 200 13 "http://r\.example/" '
        r'"ua \\x22quoted\\x22" [0-9a-f]{32}', line), line
    tpl = corgi("--config", "examples/demo.json", "--access-log-format",
                "{method} {uri} {status} {bytes} route={route} ua={header:User-Agent} {{literal}} {request_id}")
    status, headers, _ = tpl.get("/hello/dog", headers={"User-Agent": "a\tb"})
    line = access_lines(tpl, 1)[0].decode()
    assert re.fullmatch(r"GET /hello/dog 200 \d+ route=hello ua=a\\x09b \{literal\} " + headers["x-request-id"],
                        line), line


def test_bad_formats_and_proxy_lists_exit_2_naming_them(corgi):
    import subprocess
    from support import corgi_binary
    for args, needle in [
        (["--access-log-format", "{method} {nope}"], "unknown placeholder {nope}"),
        (["--access-log-format", "{method"], "without '}'"),
        (["--forwarded-allow-ips", "10.0.0.0/33"], "--forwarded-allow-ips"),
        (["--forwarded-allow-ips", "not-an-ip"], "not-an-ip"),
    ]:
        r = subprocess.run([corgi_binary(), *args, "--check-config"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr, (args, r.stderr)


def test_json_error_log_carries_the_traceback_and_request_id_as_fields(corgi):
    srv = corgi(*python_app("--wsgi", "plain_apps:fail_before_headers"), "--error-log-format", "json")
    status, headers, _ = srv.get("/boom", headers={"X-Request-Id": "json-error-log-1"})
    assert status == 500 and headers["x-request-id"] == "json-error-log-1"
    assert srv.wait_for_log("json-error-log-1")
    records = []
    for line in srv.stderr().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))  # every JSON line parses: one record per line
    [rec] = [r for r in records if r.get("request_id") == "json-error-log-1"]
    assert rec["level"] == "error"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["time"])
    assert rec["pid"] == srv.proc.pid
    assert rec["traceback"].startswith("Traceback (most recent call last)")
    assert "RuntimeError: boom before start_response" in rec["traceback"]
    assert "Traceback" not in rec["message"]


def test_log_level_drops_lines_below_it(corgi):
    quiet = corgi(*python_app("--wsgi", "plain_apps:fail_before_headers"), "--log-level", "critical")
    loud = corgi(*python_app("--wsgi", "plain_apps:fail_before_headers"), "--log-level", "ERROR")
    for srv in (quiet, loud):
        assert srv.get("/boom")[0] == 500
        assert srv.get("/ok")[2] == b"still serving"
    assert loud.wait_for_log("RuntimeError: boom before start_response")
    time.sleep(0.3)  # the quiet server answered the same requests: its error line would be written by now
    assert "boom before start_response" not in quiet.stderr()


def test_made_up_methods_share_one_metrics_label_and_reloads_count_as_reload(corgi):
    from support import StatsClient, free_port, http_get

    stats = StatsClient(free_port())
    srv = corgi(*python_app("--wsgi", "plain_apps:echo_environ"), "--workers", "1", *stats.flags())
    try:
        stats.wait_workers(1)
        for method in ("FOO", "BAR", "BAZ", "GET"):
            assert b" 200 " in srv.raw(f"{method} /m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _, _, body = http_get(stats.port, "/metrics")
            text = body.decode()
            if 'method="OTHER"' in text and 'method="GET"' in text:
                break
            time.sleep(0.1)
        assert re.search(r'corgi_requests_total\{route="/",method="OTHER",status="200"\} 3\b', text), text
        assert 'method="FOO"' not in text and 'method="BAR"' not in text
        before = stats.wait_workers(1)
        old_pid = before["workers"][0]["pid"]
        assert before["corgi"]["worker_restarts"]["reload"] == 0
        os.kill(srv.proc.pid, signal.SIGHUP)
        doc = stats.wait_workers(1, exclude=(old_pid,), timeout=60)
        assert doc["corgi"]["worker_restarts"]["reload"] == 1
    finally:
        stats.end()


def test_environ_has_http_host_only_when_sent_and_always_the_request_id(corgi):
    srv = corgi(*python_app("--wsgi", "plain_apps:http_vars"))
    body = srv.raw(b"GET / HTTP/1.0\r\n\r\n")
    doc = json.loads(body.partition(b"\r\n\r\n")[2])
    assert "HTTP_HOST" not in doc
    assert HEX32.match(doc["HTTP_X_REQUEST_ID"])
    status, _, body = srv.get("/", headers={"Host": "a.test", "Accept": "x/y"})
    doc = json.loads(body)
    assert doc["HTTP_HOST"] == "a.test" and doc["HTTP_ACCEPT"] == "x/y"
    assert all(isinstance(v, str) for v in doc.values())
    many = {f"X-H{i}": str(i) for i in range(40)}  # well past the template's room: the dict grows
    doc = json.loads(srv.get("/", headers=many)[2])
    assert all(doc[f"HTTP_X_H{i}"] == str(i) for i in range(40))
