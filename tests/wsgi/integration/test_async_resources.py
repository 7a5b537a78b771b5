"""examples/wsgi_async_resources.py (werkzeug Map of Resource classes with async def methods)
served by the binary."""

import hashlib
import json
import os
import threading
import time

import pytest

from support import EXAMPLES_DIR, post_slowly, python_app


@pytest.fixture(scope="module")
def srv(module_corgi):
    return module_corgi("--wsgi-file", f"{EXAMPLES_DIR}/wsgi_async_resources.py")


def test_get_awaits_asyncio_sleep(srv):
    t0 = time.monotonic()
    status, headers, body = srv.get("/hello/corgi?delay=0.3")
    assert time.monotonic() - t0 >= 0.3
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert body.startswith(b"hello corgi after 0.")


def test_post_then_get_items(srv):
    status, _, body = srv.request(
        "POST", "/items", body="name=biscuit", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 201
    created = json.loads(body)
    assert created["name"] == "biscuit"
    status, _, body = srv.request(
        "POST", "/items", body=json.dumps({"name": "bone"}), headers={"Content-Type": "application/json"}
    )
    assert status == 201
    second = json.loads(body)
    assert second == {"id": created["id"] + 1, "name": "bone"}

    status, _, body = srv.get(f"/items/{created['id']}")
    assert status == 200 and json.loads(body) == created
    items = json.loads(srv.get("/items")[2])["items"]
    assert created in items and second in items

    assert srv.request("POST", "/items", body="", headers={"Content-Type": "text/plain"})[0] == 400
    assert srv.request("DELETE", f"/items/{second['id']}")[0] == 204
    assert srv.get(f"/items/{second['id']}")[0] == 404  # NotFound raised inside the coroutine
    status, headers, _ = srv.request("PUT", "/items")
    assert status == 405 and set(headers["allow"].split(", ")) == {"GET", "POST"}
    assert srv.get("/nowhere")[0] == 404  # routing failure, answered by the sync part


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_async_post_reads_a_slowly_arriving_body(srv, chunked):
    """Upload.post calls request.get_data() in the coroutine while the body is still arriving."""
    body = os.urandom(300_000)
    status, reply = post_slowly(srv.port, "/upload", body, piece=30_000, pause=0.03, chunked=chunked)
    assert status == 200, reply
    assert json.loads(reply) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_gather_inside_one_request(srv):
    status, _, body = srv.get("/gather?n=5")
    data = json.loads(body)
    assert status == 200 and data["results"] == [0, 1, 4, 9, 16]
    assert data["seconds"] < 0.4  # the five sleeps of 0.1 s ran together


def test_concurrent_requests_overlap(srv):
    results = []
    lock = threading.Lock()

    def one(i):
        r = srv.get(f"/hello/n{i}?delay=0.5")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(10)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    elapsed = time.monotonic() - t0
    assert len(results) == 10 and all(r[0] == 200 for r in results)
    assert sorted(r[2].split(b" ")[1] for r in results) == sorted(b"n%d" % i for i in range(10))
    assert elapsed < 2.5, f"10 requests awaiting asyncio.sleep(0.5) took {elapsed:.2f} s"


def test_await_of_asyncio_sleep_and_tcp_client(corgi):
    """A synchronous app awaits asyncio.sleep and an asyncio TCP client (to this server's own C++
    route) through corgi.await_; asyncio.get_event_loop() is the lane's loop."""
    srv = corgi("--config", "examples/demo.json", *python_app("--mount", "/py=plain_apps:asyncio_client"))
    status, _, body = srv.get("/py/?path=/hello/loop")
    assert status == 200
    data = json.loads(body)
    assert data["status_line"].startswith("HTTP/1.1 200")
    assert "loop" in data["body"]
    assert data["seconds"] >= 0.05 and data["same_loop"] is True


def test_asyncio_is_imported_only_when_the_app_needs_it(corgi):
    """corgi's asyncio bridge waits for the first import of asyncio (about 10 MB of a worker's RSS
    with the ssl it pulls in): an app that never uses it does not get it; one that imports it in a
    request gets the lane's loop from asyncio.get_event_loop()."""
    srv = corgi(*python_app("--wsgi", "lazy_asyncio:app"))
    assert json.loads(srv.get("/modules")[2]) == {"asyncio": False, "ssl": False}
    status, _, body = srv.get("/import-and-sleep")
    assert status == 200, body
    assert json.loads(body) == {"loop": "CorgiEventLoop", "same": True}
    assert json.loads(srv.get("/modules")[2])["asyncio"] is True


def test_awaiting_a_plain_coroutine_sets_up_asyncio_on_demand(corgi):
    srv = corgi(*python_app("--wsgi", "lazy_asyncio:app"))
    status, _, body = srv.get("/plain-await")
    assert status == 200, body
    assert json.loads(body) == {"value": 42, "asyncio": True}
