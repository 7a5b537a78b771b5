#!/usr/bin/python3.11
"""Integration tests with the real peer: Debian's nginx in front of the corgi binary.

nginx runs in the foreground (no daemon, no master) with a config written to a temporary directory, listening on
127.0.0.1 only, and talks to corgi with uwsgi_pass, fastcgi_pass, scgi_pass and proxy_pass (HTTP/1.1 with
keep-alive), over TCP and unix sockets, using Debian's stock uwsgi_params / fastcgi_params / scgi_params files
unchanged (`include uwsgi_params;`). Every process is started here and stopped by PID when the tests end.
Both handler kinds sit behind every front: the C++ targets of ROUTES and a plain WSGI app (apps/proxy_wsgi_app.py)
mounted at /py, whose environ must come out the same whatever protocol carried the request.

Run: CORGI_BINARY=build/bin/corgi /usr/bin/python3.11 tests/protocols/nginx_test.py -v
(ctest does this: `ctest -R protocols_nginx_tests`). Standard library only.
"""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

NGINX = os.environ.get("CORGI_NGINX", "/usr/sbin/nginx")
NGINX_CONF_DIR = "/etc/nginx"
START_TIMEOUT = 15.0
APPS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
# A plain WSGI app (tests/protocols/apps/proxy_wsgi_app.py) mounted beside the C++ handlers: every handler kind must
# be reachable through every protocol.
WSGI_MOUNT = {"mount": "/py", "wsgi": "proxy_wsgi_app:application"}

ROUTES = {
    "routes": [
        {"rule": "/echo/<path:rest>", "endpoint": "echo", "methods": ["GET", "POST", "PUT", "DELETE"], "echo": True},
        {"rule": "/upload", "endpoint": "upload", "methods": ["POST", "PUT"], "handler": "echo_body"},
        {"rule": "/big", "endpoint": "big", "handler": "big"},
        {"rule": "/stream", "endpoint": "stream", "handler": "stream"},
        {"rule": "/sleep", "endpoint": "sleep", "handler": "sleep"},
        {"rule": "/fail", "endpoint": "fail", "handler": "fail"},
        {"rule": "/old", "redirect": "/new"},
        {"rule": "/new", "endpoint": "new", "return": {"status": 200, "body": "the new place\n"}},
        {"rule": "/docs/", "endpoint": "docs", "echo": True},
        {"rule": "/get-only", "endpoint": "get_only", "methods": ["GET"], "return": {"status": 200, "body": "got\n"}},
    ]
}


def free_port():
    """A port that was free a moment ago (nginx cannot listen on port 0 and report it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, what, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s")


class Processes:
    """Children started by the tests, killed by PID (never by name) when the tests end."""

    def __init__(self):
        self.procs = []

    def start(self, argv, log_stem, tmp):
        with open(os.path.join(tmp, log_stem + ".out"), "wb") as out, \
                open(os.path.join(tmp, log_stem + ".err"), "wb") as err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=tmp)
        proc.log_paths = (out.name, err.name)
        self.procs.append(proc)
        return proc

    def stop(self, proc, sig=signal.SIGTERM, timeout=5.0):
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self):
        for proc in reversed(self.procs):
            self.stop(proc)


def read_log(proc, which=1):
    with open(proc.log_paths[which], "rb") as f:
        return f.read().decode(errors="replace")


class Corgi:
    """One corgi process serving ROUTES on the given listeners: [("http"|"uwsgi"|"fastcgi"|"scgi", ADDR)]."""

    FLAGS = {"http": "--http", "uwsgi": "--socket", "fastcgi": "--fastcgi-socket", "scgi": "--scgi-socket"}

    def __init__(self, procs, tmp, name, listeners, wsgi=False):
        binary = os.path.abspath(os.environ["CORGI_BINARY"])
        config = os.path.join(tmp, name + ".json")
        doc = ROUTES
        if wsgi:
            doc = {"pythonpath": [APPS_DIR], "routes": ROUTES["routes"] + [WSGI_MOUNT]}
        with open(config, "w") as f:
            json.dump(doc, f)
        argv = [binary, "--config", config, "--io-threads", "2"]
        for proto, addr in listeners:
            argv += [self.FLAGS[proto], addr]
        self.proc = procs.start(argv, name, tmp)
        # Ready once it has printed one "serving" line per listener.
        deadline = time.monotonic() + START_TIMEOUT
        while read_log(self.proc).count("corgi: serving") < len(listeners):
            if self.proc.poll() is not None:
                raise RuntimeError(f"corgi {name} exited: {read_log(self.proc)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"corgi {name} did not start: {read_log(self.proc)}")
            time.sleep(0.05)


def nginx_config(tmp, servers, upstreams=""):
    temp = os.path.join(tmp, "nginx-temp")
    os.makedirs(temp, exist_ok=True)
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/client;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    client_max_body_size 64m;
{upstreams}
{servers}
}}
"""


def location_for(proto, target):
    """The location block a user would write for `proto`, passing to `target` (an upstream name or address)."""
    if proto == "uwsgi":
        return f"location / {{ include uwsgi_params; uwsgi_pass {target}; }}"
    if proto == "scgi":
        return f"location / {{ include scgi_params; scgi_pass {target}; }}"
    if proto == "fastcgi":
        return f"location / {{ include fastcgi_params; fastcgi_pass {target}; fastcgi_keep_conn on; }}"
    # HTTP/1.1 with keep-alive to the upstream (the upstream block has `keepalive`).
    return ("location / { proxy_pass http://%s; proxy_http_version 1.1; proxy_set_header Connection \"\"; "
            "proxy_set_header Host $host; }" % target)


def request(port, method, path, body=None, headers=None, chunked=False, timeout=20):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if chunked:
            hdrs["Transfer-Encoding"] = "chunked"
            conn.request(method, path, body=body, headers=hdrs, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def request_pairs(port, method, path, header_pairs, timeout=20):
    """A request whose header list may repeat a field (http.client's dict cannot)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if not any(name.lower() == "host" for name, _ in header_pairs):
            conn.putheader("Host", "127.0.0.1")
        for name, value in header_pairs:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def read_until(sock, needle, data=b""):
    """Receives until `needle` is in the data (or the peer closes, or the socket times out)."""
    while needle not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data


class NginxFronts(unittest.TestCase):
    """nginx -> one corgi with eight listeners: four protocols, each over TCP and over a unix socket. The fixture
    only; the test classes below each get their own processes."""

    PROTOCOLS = ["http", "uwsgi", "fastcgi", "scgi"]

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="corgi-nginx-")
        cls.procs = Processes()
        try:
            cls._start()
        except BaseException:
            cls.procs.stop_all()
            raise

    @classmethod
    def _start(cls):
        tmp = cls.tmp
        # Debian's params files, unchanged, where `include uwsgi_params;` finds them (next to nginx.conf).
        for name in ("uwsgi_params", "fastcgi_params", "scgi_params"):
            os.symlink(os.path.join(NGINX_CONF_DIR, name), os.path.join(tmp, name))
        listeners, upstreams, servers = [], [], []
        cls.front = {}  # (proto, transport) -> nginx port
        for proto in cls.PROTOCOLS:
            for transport in ("tcp", "unix"):
                if transport == "tcp":
                    backend = f"127.0.0.1:{free_port()}"
                    corgi_addr, nginx_addr = backend, backend
                else:
                    path = os.path.join(tmp, f"{proto}.sock")
                    corgi_addr, nginx_addr = "unix:" + path, "unix:" + path
                listeners.append((proto, corgi_addr))
                name = f"{proto}_{transport}"
                upstreams.append(f"upstream {name} {{ server {nginx_addr}; keepalive 4; }}")
                port = free_port()
                cls.front[(proto, transport)] = port
                mount = ""
                if proto != "http":
                    # The app mounted under /app: the stock params plus one SCRIPT_NAME line (and HTTPS on, as
                    # nginx's own `$https` would be behind TLS, to see the scheme reach the handler).
                    mount = location_for(proto, name).replace("location / {", "location /app/ {").replace(
                        "; }", f"; {proto}_param SCRIPT_NAME /app; {proto}_param HTTPS on; }}", 1)
                servers.append(f"server {{ listen 127.0.0.1:{port}; {location_for(proto, name)} {mount} }}")
        cls.corgi = Corgi(cls.procs, tmp, "corgi", listeners, wsgi=True)
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_config(tmp, "\n".join(servers), "\n".join(upstreams)))
        cls.nginx = cls.procs.start([NGINX, "-p", tmp, "-e", os.path.join(tmp, "nginx-error.log"), "-c", conf],
                                    "nginx", tmp)
        for port in cls.front.values():
            wait_for_port(port, cls.nginx, "nginx")

    @classmethod
    def tearDownClass(cls):
        cls.procs.stop_all()
        if os.environ.get("CORGI_KEEP_TMP"):
            print("kept", cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def each_front(self):
        return [(proto, transport, port) for (proto, transport), port in sorted(self.front.items())]


class NginxFrontTest(NginxFronts):
    """Every handler kind through every front."""

    def test_echo_shows_the_same_request_over_every_protocol(self):
        path = "/echo/a%20b/c%2Fd?x=1&y=2&y=3&e=%C3%A9"
        headers = {"X-Test": "corgi", "User-Agent": "nginx-test", "Accept": "application/json"}
        seen = {}
        for proto, transport, port in self.each_front():
            with self.subTest(protocol=proto, transport=transport):
                status, hdrs, body = request(port, "GET", path, headers=headers)
                self.assertEqual(status, 200, body)
                doc = json.loads(body)
                self.assertEqual(doc["protocol"], proto)
                if proto != "http" or transport == "tcp":
                    self.assertEqual(doc["remote_addr"], "127.0.0.1")  # from REMOTE_ADDR, or nginx's own address
                # What a handler can rely on, whatever carried the request.
                seen[(proto, transport)] = {
                    "endpoint": doc["endpoint"], "args": doc["args"], "method": doc["method"], "path": doc["path"],
                    "script_name": doc["script_name"], "path_info": doc["path_info"], "query": doc["query"],
                    "body_length": doc["body_length"],
                    "headers": {k: doc["headers"].get(k) for k in ("x-test", "user-agent", "accept", "host")},
                }
        reference = seen[("http", "tcp")]
        self.assertEqual(reference["path"], "/echo/a b/c/d")
        self.assertEqual(reference["args"], {"rest": "a b/c/d"})
        self.assertEqual(reference["query"], {"x": "1", "y": ["2", "3"], "e": "é"})
        self.assertEqual(reference["headers"]["x-test"], "corgi")
        self.assertEqual(reference["headers"]["host"], "127.0.0.1")
        for key, value in seen.items():
            self.assertEqual(value, reference, key)

    def test_script_name_param_mounts_the_app_under_a_prefix(self):
        for proto, transport, port in self.each_front():
            if proto == "http":
                continue
            with self.subTest(protocol=proto, transport=transport):
                status, _, body = request(port, "GET", "/app/echo/z%20z?q=1")
                self.assertEqual(status, 200, body)
                doc = json.loads(body)
                self.assertEqual((doc["script_name"], doc["path"], doc["path_info"], doc["args"]),
                                 ("/app", "/echo/z z", "/echo/z z", {"rest": "z z"}))
                self.assertEqual(doc["query"], {"q": "1"})

    def test_post_body_with_content_length_and_chunked(self):
        body = os.urandom(1024 * 1024 + 17)
        for proto, transport, port in self.each_front():
            with self.subTest(protocol=proto, transport=transport):
                status, _, got = request(port, "POST", "/upload", body=body,
                                         headers={"Content-Type": "application/octet-stream"})
                self.assertEqual(status, 200)
                self.assertEqual(got, body)
                # Chunked from the client: nginx buffers it and forwards a length; the body arrives intact and
                # the handler is not told "chunked" about a body that is no longer chunked.
                pieces = [body[i:i + 100000] for i in range(0, len(body), 100000)]
                status, _, got = request(port, "PUT", "/upload", body=iter(pieces), chunked=True)
                self.assertEqual(status, 200)
                self.assertEqual(got, body)
                status, _, doc = request(port, "POST", "/echo/x", body=iter([b"abc", b"defg"]), chunked=True)
                doc = json.loads(doc)
                self.assertEqual(doc["body_length"], 7)
                if proto != "http":
                    self.assertNotIn("transfer-encoding", doc["headers"])

    def test_large_and_streamed_responses(self):
        for proto, transport, port in self.each_front():
            with self.subTest(protocol=proto, transport=transport):
                status, hdrs, body = request(port, "GET", "/big?bytes=5000000")
                self.assertEqual(status, 200)
                self.assertEqual(len(body), 5000000)
                self.assertEqual(body.count(b"x"), 5000000)
                status, hdrs, body = request(port, "GET", "/stream?chunks=2000")
                self.assertEqual(status, 200)
                lines = body.decode().splitlines()
                self.assertEqual(lines, [f"chunk {i}" for i in range(2000)])

    def test_head_redirects_and_errors(self):
        for proto, transport, port in self.each_front():
            with self.subTest(protocol=proto, transport=transport):
                status, hdrs, body = request(port, "HEAD", "/big?bytes=12345")
                self.assertEqual(status, 200)
                self.assertEqual(hdrs.get("content-length"), "12345")
                self.assertEqual(body, b"")
                status, hdrs, _ = request(port, "GET", "/old")
                self.assertEqual(status, 308)
                self.assertTrue(hdrs["location"].endswith("/new"), hdrs["location"])
                status, hdrs, _ = request(port, "GET", "/docs")
                self.assertEqual(status, 308)
                self.assertTrue(hdrs["location"].endswith("/docs/"), hdrs["location"])
                status, _, body = request(port, "GET", "/new")
                self.assertEqual((status, body), (200, b"the new place\n"))
                status, _, _ = request(port, "GET", "/no/such/page")
                self.assertEqual(status, 404)
                status, hdrs, _ = request(port, "DELETE", "/get-only")
                self.assertEqual(status, 405)
                self.assertIn("GET", hdrs.get("allow", ""))
                status, _, body = request(port, "GET", "/fail")
                self.assertEqual(status, 500)
                self.assertNotIn(b"on purpose", body)  # details go to the log, not to the client

    def test_concurrent_requests_through_every_front(self):
        # Keep-alive upstream connections (FCGI_KEEP_CONN, HTTP keepalive) reused by many requests at once.
        import concurrent.futures
        jobs = [(port, i) for port in self.front.values() for i in range(25)]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda j: request(j[0], "GET", f"/echo/n?i={j[1]}"), jobs))
        for (port, i), (status, _, body) in zip(jobs, results):
            self.assertEqual(status, 200)
            self.assertEqual(json.loads(body)["query"], {"i": str(i)})

    # ---- the WSGI app (tests/protocols/apps/proxy_wsgi_app.py) mounted at /py, through every front ----

    def wsgi_environ(self, port, path, header_pairs=(), method="GET"):
        status, _, body = request_pairs(port, method, path, header_pairs)
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def test_wsgi_environ_is_the_same_over_every_protocol(self):
        path = "/py/env/a%20b/c%2Fd/%C3%A9?x=1&y=%2F&y=2&e=%C3%A9"
        pairs = [("Host", "Front.Example:8080"), ("X-Test", "corgi"), ("User-Agent", "nginx-test"),
                 ("Accept", "application/json"), ("X-Multi", "one"), ("X-Multi", "two"),
                 ("Cookie", "a=1"), ("Cookie", "b=2")]
        seen = {}
        seen_ids = set()
        for proto, transport, port in self.each_front():
            with self.subTest(protocol=proto, transport=transport):
                doc = self.wsgi_environ(port, path, pairs)
                # What legitimately differs with the front, and is left out of the comparison:
                # - REMOTE_ADDR: uwsgi/FastCGI/SCGI carry the client's address in REMOTE_ADDR (127.0.0.1 here);
                #   over proxy_pass corgi sees nginx's own connection, which over a unix socket has no IP address.
                # - SERVER_NAME, SERVER_PORT, REMOTE_PORT are not reported at all: behind uwsgi/FastCGI/SCGI they are
                #   nginx's listening port and the client's port (from the vars), behind proxy_pass corgi's own
                #   listener and nginx's ephemeral port. Each front has its own nginx port, so none can match.
                # - CONTENT_LENGTH of a request without a body: SCGI requires CONTENT_LENGTH in every request, so
                #   nginx sends "0" and the app reads "0"; the other fronts carry no length and it is absent
                #   (nginx's uwsgi/fastcgi params send an empty CONTENT_LENGTH). PEP 3333 reads both as "no body".
                remote_addr = doc.pop("REMOTE_ADDR")
                if not (proto == "http" and transport == "unix"):
                    self.assertEqual(remote_addr, "127.0.0.1")
                content_length = doc.pop("CONTENT_LENGTH")
                self.assertEqual(content_length, "0" if proto == "scgi" else None)
                # - HTTP_X_REQUEST_ID: each request has its own (128 random bits, nginx sends none).
                request_id = doc["http"].pop("HTTP_X_REQUEST_ID")
                self.assertRegex(request_id, r"^[0-9a-f]{32}$")
                self.assertNotIn(request_id, seen_ids)
                seen_ids.add(request_id)
                seen[(proto, transport)] = doc
        reference = seen[("http", "tcp")]
        # PEP 3333: SCRIPT_NAME is the mount, PATH_INFO the decoded rest (bytes as latin-1), the query raw.
        self.assertEqual(reference["REQUEST_METHOD"], "GET")
        self.assertEqual(reference["SCRIPT_NAME"], "/py")
        self.assertEqual(reference["PATH_INFO"], "/env/a b/c/d/" + "é".encode().decode("latin-1"))
        self.assertEqual(reference["QUERY_STRING"], "x=1&y=%2F&y=2&e=%C3%A9")
        self.assertEqual(reference["REQUEST_URI"], path)
        self.assertEqual(reference["SERVER_PROTOCOL"], "HTTP/1.1")
        self.assertEqual(reference["wsgi.url_scheme"], "http")
        self.assertIsNone(reference["HTTPS"])
        self.assertEqual(reference["body_length"], 0)
        # Headers: every front passes nginx's $host (proxy_set_header Host $host; Debian's stock *_params send
        # HTTP_HOST $host), the client's Host lowercased and without its port. Repeated fields reach the app as one
        # value, joined by ", " (by "; " for Cookie).
        self.assertEqual(reference["http"], {
            "HTTP_HOST": "front.example", "HTTP_X_TEST": "corgi", "HTTP_USER_AGENT": "nginx-test",
            "HTTP_ACCEPT": "application/json", "HTTP_X_MULTI": "one, two", "HTTP_COOKIE": "a=1; b=2"})
        for key, value in seen.items():
            self.assertEqual(value, reference, key)

    def test_wsgi_post_bodies_arrive_intact(self):
        body = os.urandom(1024 * 1024 + 33)
        digest = hashlib.sha256(body).hexdigest()
        pieces = [body[i:i + 65000] for i in range(0, len(body), 65000)]
        for proto, transport, port in self.each_front():
            with self.subTest(protocol=proto, transport=transport):
                status, _, got = request(port, "POST", "/py/upload?k=v", body=body,
                                         headers={"Content-Type": "application/octet-stream"})
                self.assertEqual(status, 200, got)
                doc = json.loads(got)
                self.assertEqual((doc["body_length"], doc["body_sha256"]), (len(body), digest))
                self.assertEqual((doc["CONTENT_LENGTH"], doc["CONTENT_TYPE"]),
                                 (str(len(body)), "application/octet-stream"))
                # CONTENT_* are CGI keys, never HTTP_CONTENT_* (PEP 3333).
                self.assertFalse({"HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"} & set(doc["http"]), doc["http"])
                # Chunked from the client: nginx buffers the body and forwards it with a length; the app reads
                # the same bytes and is not told "chunked" about a body that is no longer chunked.
                status, _, got = request(port, "PUT", "/py/upload", body=iter(pieces), chunked=True,
                                         headers={"Content-Type": "text/plain"})
                self.assertEqual(status, 200, got)
                doc = json.loads(got)
                self.assertEqual((doc["REQUEST_METHOD"], doc["body_length"], doc["body_sha256"]),
                                 ("PUT", len(body), digest))
                self.assertEqual(doc["CONTENT_LENGTH"], str(len(body)))
                self.assertNotIn("HTTP_TRANSFER_ENCODING", doc["http"])
                # An empty body with an explicit Content-Length: 0.
                status, _, got = request(port, "POST", "/py/upload", body=b"")
                doc = json.loads(got)
                self.assertEqual((status, doc["body_length"]), (200, 0))
                self.assertIn(doc["CONTENT_LENGTH"], ("0", None))

    def test_wsgi_streaming_responses(self):
        for proto, transport, port in self.each_front():
            with self.subTest(protocol=proto, transport=transport):
                status, hdrs, body = request(port, "GET", "/py/stream?chunks=3000&size=100")
                self.assertEqual(status, 200)
                lines = body.split(b"\n")
                self.assertEqual(lines.pop(), b"")
                self.assertEqual(len(lines), 3000)
                for i in (0, 1, 1234, 2999):
                    self.assertTrue(lines[i].startswith(f"line {i} ".encode()), lines[i][:20])
                self.assertTrue(all(len(line) == 99 for line in lines))

    def test_wsgi_stream_delivers_chunks_before_the_app_finishes(self):
        # The app yields one line, then parks its fiber until a file exists; the file is created only after that
        # first line has come through nginx. Buffering anywhere (corgi waiting for the iterable to end, a protocol
        # session holding output back) leaves the client waiting and fails the test after the socket timeout.
        for proto, transport, port in self.each_front():
            with self.subTest(protocol=proto, transport=transport):
                gate = os.path.join(self.tmp, f"gate-{proto}-{transport}")
                with socket.create_connection(("127.0.0.1", port), timeout=8) as sock:
                    sock.sendall(f"GET /py/gated?file={gate} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                                 .encode())
                    try:
                        data = read_until(sock, b"before the gate")
                        self.assertIn(b"before the gate", data)
                        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:100])
                    finally:
                        open(gate, "w").close()
                    data = read_until(sock, b"\r\n0\r\n\r\n", data)
                self.assertIn(b"after the gate", data)
                self.assertNotIn(b"gate never opened", data)

    def test_wsgi_head(self):
        for proto, transport, port in self.each_front():
            with self.subTest(protocol=proto, transport=transport):
                status, hdrs, body = request(port, "HEAD", "/py/sized?bytes=54321")
                self.assertEqual((status, hdrs.get("content-length"), body), (200, "54321", b""))
                status, hdrs, body = request(port, "HEAD", "/py/stream?chunks=50")
                self.assertEqual((status, body), (200, b""))
                # The same connection keeps working after a HEAD whose app produced a body (keep-alive upstream).
                status, _, body = request(port, "GET", "/py/sized?bytes=10")
                self.assertEqual((status, body), (200, b"s" * 10))
                doc = self.wsgi_environ(port, "/py/env", method="GET")
                self.assertEqual(doc["REQUEST_METHOD"], "GET")

    def test_wsgi_script_name_param_splits_script_name_and_path_info(self):
        # `uwsgi_param SCRIPT_NAME /app` (fastcgi_param, scgi_param) in `location /app/`: corgi strips the prefix
        # nginx mounted it under, and the WSGI mount at /py adds its own, so the app sees SCRIPT_NAME /app/py.
        # proxy_pass has no such variable (HTTP carries only the URI), so this is for the three CGI-style protocols.
        for proto, transport, port in self.each_front():
            if proto == "http":
                continue
            with self.subTest(protocol=proto, transport=transport):
                doc = self.wsgi_environ(port, "/app/py/env/z%20z?q=1")
                self.assertEqual((doc["SCRIPT_NAME"], doc["PATH_INFO"], doc["QUERY_STRING"]),
                                 ("/app/py", "/env/z z", "q=1"))
                self.assertEqual(doc["REQUEST_URI"], "/app/py/env/z%20z?q=1")
                # `HTTPS on` in that location: the scheme the app builds URLs with.
                self.assertEqual((doc["wsgi.url_scheme"], doc["HTTPS"]), ("https", "on"))
                # The mount point itself: PATH_INFO empty or "/", never a path outside the mount.
                doc = self.wsgi_environ(port, "/app/py/")
                self.assertEqual((doc["SCRIPT_NAME"], doc["PATH_INFO"]), ("/app/py", "/"))
                doc = self.wsgi_environ(port, "/app/py")
                self.assertEqual((doc["SCRIPT_NAME"], doc["PATH_INFO"]), ("/app/py", ""))

    def test_zz_logs_show_no_protocol_errors(self):
        # Named to run after the other tests of the class (unittest orders by name): their traffic is in the logs.
        err = read_log(self.corgi.proc)
        self.assertNotIn("session failed", err)
        self.assertNotIn("wsgi: proxy_wsgi_app", err)  # no traceback from the WSGI app
        # Under CORGI_SANITIZE a report ends the process (halt_on_error), but say what it was.
        self.assertNotIn("Sanitizer", err)
        self.assertNotIn("runtime error:", err)
        with open(os.path.join(self.tmp, "nginx-error.log")) as f:
            nginx_err = f.read()
        self.assertNotIn("upstream prematurely closed", nginx_err)
        self.assertNotIn("upstream sent invalid", nginx_err)


class ResponseFramingBehindNginxTest(NginxFronts):
    """A WSGI app whose body breaks its Content-Length: nginx, as the client behind it, must see exactly the declared
    bytes when the body is longer, and a truncation (never extra bytes, never a hang) when it is shorter."""

    def test_longer_body_reaches_nginx_cut_to_the_declared_length(self):
        for proto, transport, port in self.each_front():
            with self.subTest(protocol=proto, transport=transport):
                status, hdrs, body = request(port, "GET", "/py/lie?long", timeout=8)
                self.assertEqual((status, hdrs.get("content-length"), body), (200, "5", b"01234"))
                # The front keeps working (its upstream connection was closed, not desynchronised).
                status, _, body = request(port, "GET", "/py/sized?bytes=7", timeout=8)
                self.assertEqual((status, body), (200, b"s" * 7))
        with open(os.path.join(self.tmp, "nginx-error.log")) as f:
            nginx_err = f.read()
        self.assertNotIn("upstream sent more data than specified", nginx_err)
        self.assertIn("wsgi app 'proxy_wsgi_app:application' (GET /py/lie?long", read_log(self.corgi.proc))

    def test_shorter_body_reaches_the_client_truncated(self):
        for proto, transport, port in self.each_front():
            with self.subTest(protocol=proto, transport=transport):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=8)
                try:
                    started = time.monotonic()
                    conn.request("GET", "/py/lie?short")
                    resp = conn.getresponse()
                    self.assertEqual(resp.status, 200)
                    with self.assertRaises(http.client.IncompleteRead) as caught:
                        resp.read()
                    self.assertEqual(caught.exception.partial, b"01234")
                    self.assertLess(time.monotonic() - started, 6)  # at once, not at a timeout
                finally:
                    conn.close()


class UpstreamFailoverTest(unittest.TestCase):
    """Two corgi instances behind one nginx upstream: killing one does not fail requests."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="corgi-nginx-pool-")
        cls.procs = Processes()
        try:
            cls._start()
        except BaseException:
            cls.procs.stop_all()
            raise

    @classmethod
    def _start(cls):
        tmp = cls.tmp
        os.symlink(os.path.join(NGINX_CONF_DIR, "uwsgi_params"), os.path.join(tmp, "uwsgi_params"))
        cls.instances = []
        uwsgi_servers, http_servers = [], []
        for n in range(2):
            uwsgi_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
            cls.instances.append(Corgi(cls.procs, tmp, f"corgi{n}", [("uwsgi", uwsgi_addr), ("http", http_addr)]))
            uwsgi_servers.append(f"server {uwsgi_addr} max_fails=1 fail_timeout=30s;")
            http_servers.append(f"server {http_addr} max_fails=1 fail_timeout=30s;")
        upstreams = (f"upstream uwsgi_pool {{ {' '.join(uwsgi_servers)} }}\n"
                     f"upstream http_pool {{ {' '.join(http_servers)} keepalive 4; }}")
        cls.uwsgi_port, cls.http_port = free_port(), free_port()
        servers = (
            f"server {{ listen 127.0.0.1:{cls.uwsgi_port}; location / {{ include uwsgi_params; "
            f"uwsgi_pass uwsgi_pool; uwsgi_next_upstream error timeout; }} }}\n"
            f"server {{ listen 127.0.0.1:{cls.http_port}; location / {{ proxy_pass http://http_pool; "
            f"proxy_http_version 1.1; proxy_set_header Connection \"\"; "
            f"proxy_next_upstream error timeout; }} }}")
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_config(tmp, servers, upstreams))
        cls.nginx = cls.procs.start([NGINX, "-p", tmp, "-e", os.path.join(tmp, "nginx-error.log"), "-c", conf],
                                    "nginx", tmp)
        wait_for_port(cls.uwsgi_port, cls.nginx, "nginx")
        wait_for_port(cls.http_port, cls.nginx, "nginx")

    @classmethod
    def tearDownClass(cls):
        cls.procs.stop_all()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_requests_keep_succeeding_when_one_instance_dies(self):
        ports = (self.uwsgi_port, self.http_port)
        for i in range(20):
            for port in ports:
                status, _, body = request(port, "GET", f"/new?before={i}")
                self.assertEqual((status, body), (200, b"the new place\n"))
        # Both instances took a share (round robin), seen in their access logs.
        time.sleep(0.3)  # the access log is flushed every 100 ms
        for inst in self.instances:
            self.assertIn("/new?before=", read_log(inst.proc, 0))
        victim = self.instances[0].proc
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(5)
        for i in range(40):
            for port in ports:
                status, _, body = request(port, "GET", f"/new?after={i}")
                self.assertEqual((status, body), (200, b"the new place\n"), f"port {port} request {i}")
        time.sleep(0.3)
        self.assertIn("/new?after=39", read_log(self.instances[1].proc, 0))


if __name__ == "__main__":
    if not os.environ.get("CORGI_BINARY"):
        raise SystemExit("CORGI_BINARY must name the corgi binary (ctest sets it)")
    if not os.path.exists(NGINX):
        raise SystemExit(f"{NGINX} is missing: `make test` installs Debian's nginx")
    unittest.main()
