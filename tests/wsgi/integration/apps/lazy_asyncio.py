"""An app that imports asyncio only when asked to: corgi must not import it for the app (a worker
that never uses asyncio does not carry it), yet once it is imported, inside a request, asyncio's
loop is the lane's."""

import json
import sys

import corgi


async def _plain_coroutine():
    return 42


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/modules":
        result = {"asyncio": "asyncio" in sys.modules, "ssl": "ssl" in sys.modules}
    elif path == "/plain-await":
        # A coroutine that is not asyncio's: corgi.await_ sets up its asyncio bridge on demand.
        result = {"value": corgi.await_(_plain_coroutine()), "asyncio": "asyncio" in sys.modules}
    elif path == "/import-and-sleep":
        import asyncio

        loop = asyncio.get_event_loop()
        corgi.await_(asyncio.sleep(0.01))
        result = {"loop": type(loop).__name__, "same": loop is asyncio.get_event_loop()}
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such path\n"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(result).encode()]
