"""The container example's app: replace it with yours (mount it at /srv/app, or COPY it there)."""


def application(environ, start_response):
    body = b"Hello from corgi in a container\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
