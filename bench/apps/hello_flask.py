# Flask's hello world, for the Flask rows of the benchmark.
from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello():
    return "Hello, World!"


application = app
