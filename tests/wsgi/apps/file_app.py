"""A WSGI app loaded by file path (tests of corgi::wsgi::load)."""


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"file_app.application"]


def other(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"file_app.other"]
