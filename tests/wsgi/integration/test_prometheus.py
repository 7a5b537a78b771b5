"""corgi's Prometheus metrics checked by Debian's Prometheus itself: `promtool check metrics` accepts the exposition
of the stats listener (`--stats ADDR --stats-http`, GET /metrics) and of the URL map's built-in target
(`{"rule": "/metrics", "metrics": true}`); a real `prometheus` server scraping corgi on 127.0.0.1 every second reads
the request counter and the latency histogram back through its HTTP API, and a worker killed with SIGKILL does not
make the whole-server counters go down."""

import json
import math
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from support import APPS_DIR, StatsClient, free_port, http_get, require_tools

EXPOSITION = "text/plain; version=0.0.4"
ROUTE = "/app"  # the endpoint of a mount is its prefix (`corgi routes`)


def write_config(tmp_path):
    path = tmp_path / "corgi.json"
    path.write_text(json.dumps({
        "routes": [
            {"rule": "/metrics", "metrics": True},
            {"mount": ROUTE, "wsgi": "plain_apps:echo_environ"},
        ]
    }))
    return str(path)


@pytest.fixture
def metrics_server(corgi, tmp_path):
    """corgi with two workers, the stats listener and the URL map's /metrics target."""
    stats = StatsClient(free_port())
    try:
        srv = corgi("--config", write_config(tmp_path), "--pythonpath", APPS_DIR, "--workers", "2", *stats.flags())
        stats.wait_workers(2)
        yield srv, stats
    finally:
        stats.end()


def promtool_check(promtool, text):
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    # Exit 0 and nothing said: no error and no lint problem (missing HELP, bad suffix, ...: exit 3).
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (r.returncode, r.stdout, r.stderr)


def samples(text, name):
    """{frozenset(label items): value} of the samples of one metric name in an exposition."""
    out = {}
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head.startswith(name + "{"):
            body = head[len(name) + 1 : -1]
            labels = {}
            for part in body.split('",'):
                k, _, v = part.partition('="')
                labels[k] = v.rstrip('"')
            out[frozenset(labels.items())] = float(value)
        elif head == name:
            out[frozenset()] = float(value)
    return out


def test_promtool_accepts_both_expositions(metrics_server):
    promtool = require_tools("promtool")["promtool"]
    srv, stats = metrics_server
    for i in range(10):
        assert srv.get(f"{ROUTE}/x{i}")[0] == 200
    assert srv.get("/nowhere")[0] == 404
    assert srv.request("POST", f"{ROUTE}/p", body=b"x")[0] == 200
    # A request is counted once its response was sent, and the master gathers the workers' figures: wait for them.
    deadline = time.monotonic() + 10.0
    while not any(r["route"] == ROUTE and r["requests"] == 11 for r in stats.json()["corgi"]["routes"]):
        assert time.monotonic() < deadline, stats.json()["corgi"]
        time.sleep(0.05)

    status, headers, listener_body = http_get(stats.port, "/metrics")
    assert status == 200 and headers["content-type"].startswith(EXPOSITION), (status, headers)
    status, headers, target_body = srv.get("/metrics")
    assert status == 200 and headers["content-type"].startswith(EXPOSITION), (status, headers)

    for body in (listener_body.decode(), target_body.decode()):
        promtool_check(promtool, body)
        for family in ("corgi_requests_total", "corgi_request_duration_seconds", "corgi_requests_in_flight",
                       "corgi_worker_restarts_total", "corgi_listen_queue", "corgi_gil_wait_seconds_total",
                       "corgi_worker_rss_bytes", "corgi_workers"):
            assert f"# TYPE {family} " in body, (family, body[:3000])
        counts = samples(body, "corgi_requests_total")
        get_ok = frozenset({"route": ROUTE, "method": "GET", "status": "200"}.items())
        post_ok = frozenset({"route": ROUTE, "method": "POST", "status": "200"}.items())
        assert counts.get(get_ok) == 10 and counts.get(post_ok) == 1, counts
        assert samples(body, "corgi_workers") == {frozenset(): 2.0}
        rss = samples(body, "corgi_worker_rss_bytes")
        assert len(rss) == 2 and all(v > 0 for v in rss.values()), rss
        buckets = samples(body, "corgi_request_duration_seconds_bucket")
        inf = frozenset({"route": ROUTE, "le": "+Inf"}.items())
        assert buckets.get(inf) == 11, buckets


class Prometheus:
    """A prometheus server of the test's own on a free port of 127.0.0.1, scraping one target every second; its
    config and TSDB in tmp_path; ended by PID."""

    def __init__(self, binary, tmp_path, target):
        self.port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: corgi\n    metrics_path: /metrics\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log_path = tmp_path / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path),
            )
        try:
            self._wait_ready(30.0)
        except BaseException:
            self.close()
            raise

    def log(self):
        return self.log_path.read_text(errors="replace")[-4000:]

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if http_get(self.port, "/-/ready", timeout=2.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"prometheus was not ready within {timeout} s:\n{self.log()}")

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10.0) as resp:
            doc = json.loads(resp.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr):
        """{frozenset(labels without __name__): float value} of an instant query."""
        data = self.api("query", query=expr)
        return {frozenset((k, v) for k, v in r["metric"].items() if k != "__name__"): float(r["value"][1])
                for r in data["result"]}

    def scalar(self, expr):
        """The value of a query with one series (None while it has none)."""
        res = self.query(expr)
        assert len(res) <= 1, res
        return next(iter(res.values())) if res else None

    def wait_value(self, expr, want, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            got = self.scalar(expr)
            if got == want or time.monotonic() >= deadline:
                return got
            time.sleep(0.25)

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10.0)


@pytest.fixture
def prometheus_for(tmp_path):
    started = []

    def start(target):
        p = Prometheus(require_tools("prometheus")["prometheus"], tmp_path, target)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            p.close()


def test_prometheus_reads_counters_back_and_they_survive_a_worker_restart(metrics_server, prometheus_for):
    srv, stats = metrics_server
    prom = prometheus_for(f"127.0.0.1:{stats.port}")
    up = prom.wait_value('up{job="corgi"}', 1.0)
    assert up == 1.0, (prom.query("up"), prom.api("targets"), prom.log())

    total = f'sum(corgi_requests_total{{route="{ROUTE}"}})'
    n = 40
    for i in range(n):
        assert srv.get(f"{ROUTE}/a{i}")[0] == 200
    got = prom.wait_value(total, float(n))
    assert got == n, (got, prom.query(f'corgi_requests_total{{route="{ROUTE}"}}'), prom.api("targets"))

    buckets = prom.query(f'corgi_request_duration_seconds_bucket{{route="{ROUTE}"}}')
    les = {dict(k)["le"] for k in buckets}
    assert "+Inf" in les and len(les) > 2, buckets
    assert buckets[next(k for k in buckets if dict(k)["le"] == "+Inf")] == n
    finite = sorted((float(dict(k)["le"]), v) for k, v in buckets.items() if dict(k)["le"] != "+Inf")
    assert all(a[1] <= b[1] for a, b in zip(finite, finite[1:])), finite  # cumulative
    assert prom.scalar(f'sum(corgi_request_duration_seconds_count{{route="{ROUTE}"}})') == n
    p99 = prom.scalar(f'histogram_quantile(0.99, sum by (le) (corgi_request_duration_seconds_bucket{{route="{ROUTE}"}}))')
    assert p99 is not None and 0 < p99 < math.inf, p99
    assert prom.scalar("corgi_workers") == 2

    # One worker killed: the master respawns it and the figures it served stay counted.
    doc = stats.json()
    victim = doc["workers"][0]
    restarts_before = sum(doc["corgi"]["worker_restarts"].values())
    os.kill(victim["pid"], signal.SIGKILL)
    # Right after the kill, before and after the respawn, the whole-server figure never goes below n.
    deadline = time.monotonic() + 30.0
    seen_totals = []
    while True:
        doc = stats.json()
        seen_totals.append(doc["corgi"]["requests_total"])
        pids = {w["pid"] for w in doc["workers"]}
        if len(pids) == 2 and victim["pid"] not in pids and all(pids):
            break
        assert time.monotonic() < deadline, f"worker {victim['pid']} was not respawned: {doc['workers']}"
        time.sleep(0.05)
    stats.wait_workers(2, exclude={victim["pid"]})
    assert min(seen_totals) >= n, seen_totals
    respawned = next(w for w in stats.json()["workers"] if w["id"] == victim["id"])
    assert respawned["respawn_count"] >= victim["respawn_count"] + 1, respawned
    assert sum(stats.json()["corgi"]["worker_restarts"].values()) == restarts_before + 1

    m = 25
    for i in range(m):
        assert srv.get(f"{ROUTE}/b{i}")[0] == 200
    got = prom.wait_value(total, float(n + m))
    assert got == n + m, (got, prom.query(f'corgi_requests_total{{route="{ROUTE}"}}'))
    # Prometheus saw no counter reset in any series over the whole test (scraped every second, kill included).
    resets = prom.query(f'resets(corgi_requests_total{{route="{ROUTE}"}}[10m])')
    assert resets and all(v == 0 for v in resets.values()), resets
    assert prom.scalar(f'sum(resets(corgi_request_duration_seconds_count{{route="{ROUTE}"}}[10m]))') == 0
    assert prom.wait_value("sum(corgi_worker_restarts_total)", float(restarts_before + 1)) == restarts_before + 1
    assert prom.scalar("corgi_workers") == 2
