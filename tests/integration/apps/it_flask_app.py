"""A small Flask app served through the bascule CLI by test_it_frameworks."""

from __future__ import annotations

import hashlib
import time

from flask import Flask, Response, abort, jsonify, request, stream_with_context

app = Flask(__name__)


@app.get("/")
def index():
    return "hello from flask"


@app.get("/json")
def as_json():
    return jsonify(framework="flask", numbers=[1, 2, 3], q=request.args.get("q"))


@app.post("/form")
def form():
    return f"name={request.form['name']} lang={request.form.get('lang', '')}"


@app.post("/upload")
def upload():
    file = request.files["file"]
    data = file.read()
    return jsonify(filename=file.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                   note=request.form.get("note"))


@app.get("/stream")
def stream():
    count = int(request.args.get("n", "3"))

    def generate():
        for i in range(count):
            # request is only reachable here thanks to stream_with_context
            yield f"{request.args.get('prefix', 'chunk')}-{i}\n"
            time.sleep(0.05)

    return Response(stream_with_context(generate()), mimetype="text/plain")


@app.get("/boom")
def boom():
    raise RuntimeError("flask view failed on purpose")


@app.get("/teapot")
def teapot():
    abort(418)
