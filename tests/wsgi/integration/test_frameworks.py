"""Flask, Django, Bottle and a wsgiref-validated plain app through the corgi binary."""

import hashlib
import json
import os
import uuid

import pytest

from support import EXAMPLES_DIR, python_app


# --- Flask -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flask_server(module_corgi):
    return module_corgi("--pythonpath", EXAMPLES_DIR, "--wsgi", "flask_app:app")


def test_flask_routes_json_and_404(flask_server):
    status, headers, body = flask_server.get("/")
    assert (status, body) == (200, b"hello from flask on corgi\n")
    assert headers["content-type"].startswith("text/html")
    status, headers, body = flask_server.get("/user/12")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"id": 12, "name": "user12", "script_name": ""}
    assert flask_server.get("/user/0")[0] == 404  # abort(404) in the view
    assert flask_server.get("/user/abc")[0] == 404  # the int converter refuses it
    assert flask_server.get("/no/such/page")[0] == 404
    assert flask_server.request("POST", "/user/3")[0] == 405


def test_flask_post_form_and_json(flask_server):
    status, _, body = flask_server.request(
        "POST", "/echo", body="a=1&b=two+words", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 200 and json.loads(body) == {"kind": "form", "data": {"a": "1", "b": "two words"}}
    payload = {"list": [1, 2, 3], "text": "h\u00e9"}
    status, _, body = flask_server.request(
        "POST", "/echo", body=json.dumps(payload), headers={"Content-Type": "application/json"}
    )
    assert status == 200 and json.loads(body) == {"kind": "json", "data": payload}


def test_flask_file_upload(flask_server):
    content = os.urandom(300_000)
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"blob.bin\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    status, _, resp = flask_server.request(
        "POST", "/upload", body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert status == 200
    assert json.loads(resp) == {"filename": "blob.bin", "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def test_flask_redirect_streaming_and_head(flask_server):
    status, headers, _ = flask_server.get("/old")
    assert status == 302 and headers["location"] in ("/user/7", f"http://127.0.0.1:{flask_server.port}/user/7")

    status, headers, body = flask_server.get("/stream?n=4")
    assert status == 200
    assert headers.get("transfer-encoding") == "chunked" and "content-length" not in headers
    assert body == b"line 0\nline 1\nline 2\nline 3\n"

    status, headers, body = flask_server.request("HEAD", "/user/5")
    assert status == 200 and body == b""
    assert int(headers["content-length"]) == len(flask_server.get("/user/5")[2])


# --- Django ------------------------------------------------------------------------------------------------------
DJANGO_DIR = os.path.join(EXAMPLES_DIR, "django_project")


@pytest.mark.parametrize("how", ["chdir", "pythonpath"])
def test_django_minimal_project(corgi, how):
    if how == "chdir":
        srv = corgi("--chdir", DJANGO_DIR, "--wsgi", "project.wsgi:application")
    else:
        srv = corgi("--pythonpath", DJANGO_DIR, "--wsgi", "project.wsgi", cwd="/")  # callable: application
    status, headers, body = srv.get("/")
    assert (status, body) == (200, b"django on corgi\n")
    assert headers["content-type"] == "text/plain"

    status, headers, body = srv.get("/items/42/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"<title>item 42</title>" in body and b"item 42 is answer; url /items/42/" in body

    status, _, body = srv.get("/items/7/")  # Http404 from the view: the 404.html template
    assert status == 404 and b"nothing here" in body
    status, _, body = srv.get("/items/seven/")  # the int path converter refuses it
    assert status == 404 and b"nothing here" in body
    status, headers, _ = srv.get("/items/42")  # CommonMiddleware's APPEND_SLASH
    assert status == 301 and headers["location"] == "/items/42/"
    status, _, _ = srv.get("/", headers={"Host": "evil.example"})  # DEBUG False: ALLOWED_HOSTS enforced
    assert status == 400


# --- Bottle ------------------------------------------------------------------------------------------------------
def test_bottle_app(corgi):
    srv = corgi(*python_app("--mount", "/b=bottle_app:app"))
    assert srv.get("/b/")[2] == b"hello from bottle\n"
    status, headers, body = srv.get("/b/hello/corgi")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"hello": "corgi", "script_name": "/b"}
    status, _, body = srv.request(
        "POST", "/b/form", body="name=rex&n=21", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 200 and json.loads(body) == {"name": "rex", "n": 42}
    status, _, body = srv.get("/b/gone")
    assert status == 410 and b"gone for good" in body
    assert srv.get("/b/stream")[2] == b"part 0\npart 1\npart 2\n"
    assert srv.get("/b/missing")[0] == 404


# --- wsgiref.validate ------------------------------------------------------------------------------------------------
def test_validator_wrapped_app(corgi):
    srv = corgi(*python_app("--wsgi", "plain_apps:validated"))
    status, headers, body = srv.get("/hello")
    assert (status, headers["x-path"], body) == (200, "/hello", b"hello GET /hello")
    status, headers, body = srv.get("/stream")
    assert status == 200 and body == b"".join(b"chunk %d\n" % i for i in range(5))
    status, _, body = srv.request("POST", "/post", body=b"payload bytes", headers={"Content-Type": "text/plain"})
    assert (status, body) == (200, b"got payload bytes")
    status, _, body = srv.request("POST", "/lines", body=b"one\ntwo\nthree\n", headers={"Content-Type": "text/plain"})
    assert (status, body) == (200, b"first=one\nrest=2")
    assert srv.get("/write")[2] == b"written and returned"
    status, _, _ = srv.get("/error-log")
    assert status == 200
    assert srv.request("HEAD", "/hello")[0] == 200
    assert srv.get("/caf%C3%A9?x=1")[2] == "hello GET /café".encode("utf-8")
    assert srv.wait_for_log("validated app writes to wsgi.errors")
    log = srv.stderr()
    assert "AssertionError" not in log and "Traceback" not in log, log[-3000:]
