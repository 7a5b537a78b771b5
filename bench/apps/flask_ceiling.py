# Flask's own in-process ceiling: the app called directly with a minimal environ, no server at all.
# Prints requests/s; a server can at best approach it.
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from hello_flask import app  # noqa: E402

environ = {
    "REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "", "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.version": (1, 0),
    "wsgi.input": None, "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": False,
    "wsgi.run_once": False, "HTTP_HOST": "127.0.0.1:8000",
}


def start_response(status, headers, exc_info=None):
    return None


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    for _ in range(1000):
        b"".join(app(dict(environ), start_response))
    t0 = time.perf_counter()
    for _ in range(n):
        body = app(dict(environ), start_response)
        b"".join(body)
        if hasattr(body, "close"):
            body.close()
    print(f"{n / (time.perf_counter() - t0):.0f}")


if __name__ == "__main__":
    main()
