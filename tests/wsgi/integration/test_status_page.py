"""The live status page (`--stats ADDR --stats-http`, GET /_corgi/status) in a real browser: Debian's headless
Chromium driven through chromedriver's WebDriver API. The page renders the master's workers, and its figures move by
themselves while real requests arrive, without a reload; when the server goes away it says so. A screenshot of the
page under load lands in the test's tmp_path (its path is printed)."""

import os
import subprocess
import threading
import time

import pytest

from support import SOURCE_DIR, StatsClient, corgi_binary, free_port, http_get, python_app
from webdriver import Browser

PAGE_FILE = os.path.join(SOURCE_DIR, "apps", "corgi", "status_page.html")
APP = python_app("--wsgi", "plain_apps:echo_environ")

# Figures as the page shows them (data-value holds the raw number; see the comment at the top of the page).
READ_PAGE = """
const v = (el) => (el && el.getAttribute("data-value") !== "" ? Number(el.getAttribute("data-value")) : null);
const rows = Array.from(document.querySelectorAll("#workers tr[data-worker-id]"));
const route = document.querySelector('#routes tr[data-route="' + CSS.escape(arguments[0]) + '"]');
const cell = (f) => (route ? route.querySelector('td[data-field="' + f + '"]') : null);
return {
  state: document.body.getAttribute("data-state"),
  polls: Number(document.body.getAttribute("data-polls")),
  marker: window.__corgi_test_marker || null,
  master: v(document.getElementById("server-pid")),
  requests: v(document.getElementById("server-requests")),
  workers: rows.map((tr) => ({id: Number(tr.getAttribute("data-worker-id")), pid: Number(tr.getAttribute("data-pid")),
                              cell_pid: v(tr.querySelector('td[data-field="pid"]'))})),
  route_requests: v(cell("requests")),
  route_rate: v(cell("rate")),
  route_mean_ms: v(cell("mean_ms")),
  route_p99_ms: v(cell("p99_ms")),
  error: document.getElementById("conn-error").textContent,
};
"""


def endpoint_of_root_mount():
    """The endpoint `corgi routes` lists for the app mounted at / (the route label of the figures)."""
    out = subprocess.run([corgi_binary(), "routes", *APP], capture_output=True, text=True, timeout=30,
                         cwd=SOURCE_DIR)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 1 and rows[0][0] == "/", out.stdout
    return rows[0][1]


@pytest.fixture
def stats_server(corgi):
    stats = StatsClient(free_port())
    try:
        srv = corgi(*APP, "--workers", "2", *stats.flags())
        yield corgi, srv, stats
    finally:
        stats.end()


@pytest.fixture
def browser(tmp_path):
    b = Browser(str(tmp_path))
    try:
        yield b
    finally:
        b.close()


def test_status_page_is_the_embedded_file(stats_server):
    _, srv, stats = stats_server
    stats.wait_workers(2)
    status, headers, body = http_get(stats.port, "/_corgi/status")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    with open(PAGE_FILE, "rb") as f:
        assert body == f.read()  # the raw string literal kept every byte


def test_status_page_renders_workers_and_moves_under_load(stats_server, browser, tmp_path, capsys):
    corgi, srv, stats = stats_server
    doc = stats.wait_workers(2)
    route = endpoint_of_root_mount()
    real_pids = {w["pid"] for w in doc["workers"]}
    assert srv.proc.pid not in real_pids and len(real_pids) == 2

    shot = tmp_path / "status_page.png"
    try:
        browser.get(f"http://127.0.0.1:{stats.port}/_corgi/status")
        page = browser.wait_for(f"const p = (function () {{ {READ_PAGE} }}).apply(null, arguments);"
                                "return p.state === 'connected' && p.workers.length === 2 ? p : null;", 15.0, route)
        assert page, browser.execute(READ_PAGE, route)
        assert page["master"] == srv.proc.pid
        assert {w["pid"] for w in page["workers"]} == real_pids
        assert all(w["pid"] == w["cell_pid"] for w in page["workers"])
        assert sorted(w["id"] for w in page["workers"]) == sorted(w["id"] for w in doc["workers"])

        # From here on the page is never reloaded: a marker in its window would not survive a reload.
        browser.execute("window.__corgi_test_marker = 'same page'; return true;")
        before = browser.execute(READ_PAGE, route)
        base_total = before["requests"] or 0
        base_route = before["route_requests"] or 0

        # Real requests from a thread, bounded in number and paced so that several polls see them arrive.
        n = 150
        results = []

        def load():
            for i in range(n):
                try:
                    status, _, _ = srv.get(f"/load/{i}", timeout=10.0)
                    results.append(status)
                except OSError as e:
                    results.append(repr(e))
                time.sleep(0.02)

        t = threading.Thread(target=load, daemon=True)
        t.start()
        # While the load runs, the route's rate (from successive polls) and its latency show up by themselves.
        moving = browser.wait_for(
            f"const p = (function () {{ {READ_PAGE} }}).apply(null, arguments);"
            "return p.route_rate > 0 && p.route_mean_ms > 0 && p.route_p99_ms > 0 ? p : null;", 15.0, route)
        t.join(60.0)
        assert not t.is_alive(), "the load thread did not finish"
        assert results == [200] * n, results[:10]
        assert moving, browser.execute(READ_PAGE, route)

        after = browser.wait_for(
            f"const p = (function () {{ {READ_PAGE} }}).apply(null, arguments);"
            f"return p.requests >= {base_total + n} && p.route_requests >= {base_route + n} ? p : null;",
            10.0, route)
        assert after, (browser.execute(READ_PAGE, route), stats.json()["corgi"])
        assert after["marker"] == "same page"
        assert after["polls"] > before["polls"]
        # The page shows what the server counted: the stats listener's own figure for the route.
        real = next(r for r in stats.json()["corgi"]["routes"] if r["route"] == route)
        assert after["route_requests"] == real["requests"] == base_route + n
    finally:
        browser.screenshot(str(shot))
        with capsys.disabled():
            print(f"\nstatus page screenshot: {shot}")

    # The server goes away: the page says so and keeps trying; a new server on the same stats address is picked up
    # (its own master pid, its own counters) without a reload.
    srv.kill()
    gone = browser.wait_for(
        f"const p = (function () {{ {READ_PAGE} }}).apply(null, arguments);"
        "return p.state === 'disconnected' ? p : null;", 10.0, route)
    assert gone and gone["error"], browser.execute(READ_PAGE, route)
    time.sleep(1.5)
    still = browser.execute(READ_PAGE, route)
    assert still["state"] == "disconnected" and still["polls"] == gone["polls"]
    browser.screenshot(str(tmp_path / "status_page_disconnected.png"))
    again = corgi(*APP, "--workers", "1", *stats.flags())
    stats.wait_workers(1)
    back = browser.wait_for(
        f"const p = (function () {{ {READ_PAGE} }}).apply(null, arguments);"
        f"return p.state === 'connected' && p.master === {again.proc.pid} && p.workers.length === 1 ? p : null;",
        10.0, route)
    assert back and back["marker"] == "same page", browser.execute(READ_PAGE, route)
