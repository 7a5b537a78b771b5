# A WSGI app that spends CPU_MS milliseconds of CPU per request (2 by default) in Python: what
# saturates a lane in bench/latency_isolation.sh.
import os
import time

CPU_MS = float(os.environ.get("CPU_MS", "2"))


def application(environ, start_response):
    end = time.thread_time() + CPU_MS / 1000.0
    n = 0
    while time.thread_time() < end:
        n += 1
    body = b"spun %d\n" % n
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
