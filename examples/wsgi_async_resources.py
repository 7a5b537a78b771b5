"""The classic uWSGI + greenlet + asyncio recipe, done the corgi way.

On uWSGI the recipe needs the greenlet and asyncio plugins, a loop engine and a decorator that
parks a greenlet on a future. On corgi nothing of that: the WSGI callable below returns the
coroutine of the matched resource method; corgi runs it on the asyncio loop of the request's lane
(other requests keep running while it awaits), then calls the werkzeug Response it returns as a WSGI
app. The coroutine's steps run on the request's fiber, so it may read the body synchronously
(request.get_data(), request.form): the read waits for the client without stopping the loop. No
greenlet, no monkey-patching; the same code is plain asyncio.

    corgi --http 127.0.0.1:8000 --wsgi-file examples/wsgi_async_resources.py
    curl http://127.0.0.1:8000/hello/corgi
    curl -X POST -d 'name=biscuit' http://127.0.0.1:8000/items
    curl http://127.0.0.1:8000/items/1
    curl --data-binary @some.file http://127.0.0.1:8000/upload
"""

import asyncio
import hashlib
import json
import time

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response


class Resource:
    """A REST resource: one `async def` per HTTP method, called with the request and the rule's
    arguments; returns a werkzeug Response."""

    methods = ("get", "post", "put", "delete")

    async def dispatch(self, request, **args):
        handler = getattr(self, request.method.lower(), None)
        if handler is None:
            allowed = [m.upper() for m in self.methods if hasattr(self, m)]
            return MethodNotAllowed(valid_methods=allowed)  # an HTTPException is a WSGI app too
        try:
            return await handler(request, **args)
        except HTTPException as e:
            return e


class Hello(Resource):
    async def get(self, request, name):
        delay = float(request.args.get("delay", "0.05"))
        started = time.monotonic()
        await asyncio.sleep(delay)  # this request waits; the others of the lane keep running
        return Response(f"hello {name} after {time.monotonic() - started:.2f}s\n", mimetype="text/plain")


class Items(Resource):
    """A tiny in-memory collection; the "database" is simulated with asyncio.sleep."""

    store = {}

    async def get(self, request):
        await asyncio.sleep(0.01)
        return json_response({"items": [{"id": k, "name": v} for k, v in sorted(self.store.items())]})

    async def post(self, request):
        name = request.form.get("name") or (request.get_json(silent=True) or {}).get("name")
        if not name:
            return json_response({"error": "name is required"}, status=400)
        await asyncio.sleep(0.01)
        item_id = max(self.store, default=0) + 1
        self.store[item_id] = name
        return json_response({"id": item_id, "name": name}, status=201)


class Item(Resource):
    async def get(self, request, item_id):
        await asyncio.sleep(0.01)
        if item_id not in Items.store:
            raise NotFound()
        return json_response({"id": item_id, "name": Items.store[item_id]})

    async def delete(self, request, item_id):
        await asyncio.sleep(0.01)
        if Items.store.pop(item_id, None) is None:
            raise NotFound()
        return Response(status=204)


class Upload(Resource):
    async def post(self, request):
        """Reads the whole body in the coroutine, however slowly it arrives."""
        data = request.get_data()
        await asyncio.sleep(0.01)  # e.g. store it somewhere
        return json_response({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})


class Gather(Resource):
    async def get(self, request):
        """Several awaits at once inside one request."""
        n = int(request.args.get("n", "3"))
        started = time.monotonic()
        results = await asyncio.gather(*(square_later(i) for i in range(n)))
        return json_response({"results": results, "seconds": round(time.monotonic() - started, 3)})


async def square_later(i):
    await asyncio.sleep(0.1)
    return i * i


def json_response(data, status=200):
    return Response(json.dumps(data), status=status, mimetype="application/json")


url_map = Map(
    [
        Rule("/hello/<name>", endpoint=Hello),
        Rule("/items", endpoint=Items),
        Rule("/items/<int:item_id>", endpoint=Item),
        Rule("/upload", endpoint=Upload),
        Rule("/gather", endpoint=Gather),
    ]
)


def application(environ, start_response):
    """The WSGI callable: routing happens here; the resource method runs as a coroutine that corgi
    awaits (on the lane's loop, its steps on this request's fiber)."""
    request = Request(environ)
    try:
        resource_class, args = url_map.bind_to_environ(environ).match()
    except HTTPException as e:
        return e(environ, start_response)
    return resource_class().dispatch(request, **args)
