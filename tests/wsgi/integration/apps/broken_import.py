"""Fails at import time: corgi must exit non-zero with this traceback."""

import corgi_no_such_module_for_the_test  # noqa: F401


def application(environ, start_response):
    start_response("200 OK", [])
    return [b"unreachable"]
