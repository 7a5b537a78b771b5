# A WSGI app whose requests wait on their fiber (corgi.sleep) for the seconds in the query string
# (60 by default): what bench/memory.sh holds 10,000 of.
import corgi


def application(environ, start_response):
    corgi.sleep(float(environ.get("QUERY_STRING") or 60))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]
