"""A FastAPI app (lifespan, params, streaming, uploads, background tasks) for test_it_frameworks."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import BackgroundTasks, FastAPI, File, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.greeting = "set by lifespan startup"
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/json")
async def as_json() -> dict[str, object]:
    return {"framework": "fastapi", "ok": True}


@app.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None, limit: int = 10) -> dict[str, object]:
    return {"item_id": item_id, "q": q, "limit": limit}


@app.get("/state")
async def state() -> dict[str, str]:
    return {"greeting": app.state.greeting}


@app.get("/stream")
async def stream(n: int = 4, delay: float = 0.15) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(delay)

    return StreamingResponse(chunks(), media_type="text/plain")


@app.post("/upload")
async def upload(file: Annotated[UploadFile, File()]) -> dict[str, object]:
    digest, size = hashlib.sha256(), 0
    while chunk := await file.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return {"filename": file.filename, "size": size, "sha256": digest.hexdigest()}


def _write_marker(path: str, started: float) -> None:
    time.sleep(0.2)  # clearly after the response went out
    Path(path).write_text(f"{started} {time.time()}")


@app.post("/background")
async def background(marker: str, tasks: BackgroundTasks) -> dict[str, float]:
    now = time.time()
    tasks.add_task(_write_marker, marker, now)
    return {"responded_at": now}


@app.websocket("/ws/{room}")
async def ws_room(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_json()
            await websocket.send_json({"room": room, "echo": data, "greeting": app.state.greeting})
    except WebSocketDisconnect:
        pass
