"""Coroutines that read the request body, and Flask and Django async views (asgiref's
async_to_sync), through the binary: their steps run on the request's fiber, the body arrives
slowly, and on one lane the views of concurrent requests wait together."""

import hashlib
import json
import os

import pytest

from support import python_app, post_slowly, concurrently

MEGABYTE = os.urandom(1024 * 1024)
MEGABYTE_SHA = hashlib.sha256(MEGABYTE).hexdigest()


# --- plain coroutines ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plain(module_corgi):
    return module_corgi(*python_app("--threads", "1", "--wsgi", "plain_apps:async_body"))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_returned_coroutine_reads_a_slow_body_with_asyncio_semantics(plain, chunked):
    body = b"0123456789" + b"line of the body\n" * 4000
    status, reply = post_slowly(plain.port, "/semantics", body, piece=7000, pause=0.03, chunked=chunked)
    assert status == 200, reply
    data = json.loads(reply)
    assert data["size"] == len(body) and data["sha256"] == hashlib.sha256(body).hexdigest()
    assert data["first"] == "0123456789" and data["after_end"] == ""
    assert data["has_task"] and data["same_task"]  # asyncio.current_task() is the request's task
    assert data["timed_out"] and data["wait_for_timed_out"] and data["not_cancelling"]
    assert data["cancelled"]  # task.cancel(): CancelledError in the victim, its finally ran
    assert data["child_own_task"]  # wait_for's child is a task of its own, reading the body too
    assert data["child_saw"] == "set-by-wsgi-call"  # contextvars flow from the WSGI call down
    assert data["var_after_child"] == "set-by-wsgi-call"  # ... and not back up from a child


def test_corgi_await_of_a_coroutine_that_reads_the_body(plain):
    status, reply = post_slowly(plain.port, "/await", MEGABYTE, piece=128 * 1024, pause=0.02)
    assert status == 200
    assert json.loads(reply) == {"size": len(MEGABYTE), "sha256": MEGABYTE_SHA}


def test_slow_bodies_read_in_coroutines_do_not_block_each_other(plain):
    """Eight coroutines each wait ~1 s for their bodies on one lane: together, not one after another."""
    body = b"x" * 10000

    def one(i):
        return post_slowly(plain.port, "/await", body, piece=1000, pause=0.1)

    results, elapsed = concurrently(8, one)
    assert all(r == (200, json.dumps({"size": 10000, "sha256": hashlib.sha256(body).hexdigest()}).encode())
               for r in results), results
    assert elapsed < 5, f"8 slow uploads read in coroutines took {elapsed:.1f} s on one lane"


# --- Flask ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flask_async(module_corgi):
    return module_corgi(*python_app("--threads", "1", "--wsgi", "flask_async:app"))


def test_flask_async_views_wait_together_on_one_lane(flask_async):
    results, elapsed = concurrently(20, lambda i: flask_async.get("/sleep?s=1", timeout=30))
    assert all(not isinstance(r, Exception) and r[0] == 200 for r in results), results
    assert all(json.loads(r[2]) == {"slept": 1.0} for r in results)
    # asgiref's own way runs them one after another on the single lane: 20 s.
    assert elapsed < 3, f"20 Flask async views awaiting asyncio.sleep(1) took {elapsed:.1f} s"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_flask_async_view_reads_a_slow_megabyte(flask_async, chunked):
    status, reply = post_slowly(flask_async.port, "/upload", MEGABYTE, piece=64 * 1024, pause=0.02, chunked=chunked)
    assert status == 200, reply
    assert json.loads(reply) == {"size": len(MEGABYTE), "sha256": MEGABYTE_SHA}


def test_flask_async_view_runs_on_the_lane_loop(flask_async):
    status, _, body = flask_async.get("/where")
    assert status == 200 and json.loads(body) == {"loop": "CorgiEventLoop", "task": "FiberTask"}


@pytest.mark.parametrize("how", ["flag", "config"])
def test_the_hook_can_be_turned_off(corgi, tmp_path, how):
    if how == "flag":
        srv = corgi(*python_app("--no-async-views-hook", "--wsgi", "flask_async:app"))
    else:
        cfg = tmp_path / "corgi.json"
        cfg.write_text(json.dumps({"async_views_hook": False}))
        srv = corgi("--config", str(cfg), *python_app("--wsgi", "flask_async:app"))
    # asgiref's own way: a new event loop in a thread of its own.
    status, _, body = srv.get("/where")
    assert status == 200 and json.loads(body)["loop"] != "CorgiEventLoop"
    assert srv.get("/sleep?s=0.01")[0] == 200


# --- Django --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def django_async(module_corgi):
    return module_corgi(*python_app("--threads", "1", "--wsgi", "django_async:application"))


def test_django_async_view_reads_a_slow_megabyte(django_async):
    # Content-Length only: Django's WSGIRequest reads CONTENT_LENGTH bytes (a chunked body is empty to it).
    status, reply = post_slowly(django_async.port, "/upload", MEGABYTE, piece=64 * 1024, pause=0.02)
    assert status == 200, reply
    assert json.loads(reply) == {"size": len(MEGABYTE), "sha256": MEGABYTE_SHA}


def test_django_async_views_wait_together_on_one_lane(django_async):
    assert json.loads(django_async.get("/where")[2]) == {"loop": "CorgiEventLoop"}
    results, elapsed = concurrently(20, lambda i: django_async.get("/sleep?s=1", timeout=30))
    assert all(not isinstance(r, Exception) and r[0] == 200 for r in results), results
    assert elapsed < 3, f"20 Django async views awaiting asyncio.sleep(1) took {elapsed:.1f} s"


def test_a_bad_hook_setting_names_its_key(corgi, tmp_path):
    cfg = tmp_path / "corgi.json"
    cfg.write_text(json.dumps({"async_views_hook": "no"}))
    srv = corgi("--config", str(cfg), *python_app("--wsgi", "flask_async:app"), listening=False)
    assert srv.wait_exit(20) == 2
    assert "/async_views_hook" in srv.stderr()
