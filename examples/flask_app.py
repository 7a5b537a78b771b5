"""A small Flask app served by corgi (docs/wsgi.md; tested by tests/wsgi/integration).

    corgi --http 127.0.0.1:8000 --wsgi-file examples/flask_app.py --callable app
    corgi --http 127.0.0.1:8000 --pythonpath examples --wsgi flask_app:app
"""

import hashlib

from flask import Flask, Response, abort, jsonify, redirect, request, stream_with_context, url_for

import corgi

app = Flask(__name__)


@app.get("/")
def index():
    return "hello from flask on corgi\n"


@app.get("/user/<int:user_id>")
def user(user_id):
    if user_id == 0:
        abort(404)
    return jsonify(id=user_id, name=f"user{user_id}", script_name=request.script_root)


@app.post("/echo")
def echo():
    """Form or JSON in, JSON out."""
    if request.is_json:
        return jsonify(kind="json", data=request.get_json())
    return jsonify(kind="form", data=request.form.to_dict(flat=True))


@app.post("/upload")
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(filename=f.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest())


@app.get("/old")
def old():
    return redirect(url_for("user", user_id=7))


@app.get("/stream")
def stream():
    count = request.args.get("n", 5, type=int)

    @stream_with_context
    def generate():
        for i in range(count):
            corgi.sleep(0.01)  # lets other requests run between chunks
            yield f"line {i}\n"

    return Response(generate(), mimetype="text/plain")


@app.get("/wait")
def wait():
    seconds = request.args.get("s", 0.1, type=float)
    corgi.sleep(seconds)
    return jsonify(slept=seconds)
