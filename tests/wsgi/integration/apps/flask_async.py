"""Flask async views, unchanged from what one would write for any WSGI server (served by the
async-views tests). Flask runs them through asgiref's async_to_sync."""

import asyncio
import hashlib

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/sleep")
async def sleep():
    seconds = request.args.get("s", 1.0, type=float)
    await asyncio.sleep(seconds)
    return jsonify(slept=seconds)


@app.post("/upload")
async def upload():
    await asyncio.sleep(0.01)
    data = request.get_data()  # the body arrives while this view waits for it
    await asyncio.sleep(0.01)
    return jsonify(size=len(data), sha256=hashlib.sha256(data).hexdigest())


@app.get("/where")
async def where():
    loop = asyncio.get_running_loop()
    return jsonify(loop=type(loop).__name__, task=type(asyncio.current_task()).__name__)
