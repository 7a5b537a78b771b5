"""A Bottle app for the end-to-end tests."""

import bottle

app = bottle.Bottle()


@app.get("/")
def index():
    return "hello from bottle\n"


@app.get("/hello/<name>")
def hello(name):
    return {"hello": name, "script_name": bottle.request.environ["SCRIPT_NAME"]}


@app.post("/form")
def form():
    return {"name": bottle.request.forms.get("name"), "n": int(bottle.request.forms.get("n", "0")) * 2}


@app.get("/gone")
def gone():
    bottle.abort(410, "gone for good")


@app.get("/stream")
def stream():
    bottle.response.content_type = "text/plain"
    for i in range(3):
        yield "part %d\n" % i
