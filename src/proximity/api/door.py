"""The door: what every request meets before FastAPI reads a byte of its body (token, size, time)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from proximity.api.auth import UNAUTHORIZED, bearer_ok

if TYPE_CHECKING:
    from proximity.api.app import Context

STATUS_PATH = "/api/v1/system/network/status"
MAX_BODY = 1024 * 1024  # bytes: the largest request body is a few hundred
BODY_TIMEOUT = 10.0  # seconds for a whole request body: one that never ends holds no connection for long
PROTECTED = ("/api/v1/", "/metrics")  # paths that need the bearer token


async def _problem(send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class Door:
    """ASGI middleware: what every request meets before FastAPI reads a byte of its body.

    1. The token, for /api/v1 and /metrics: a missing or wrong one gets 401 at once, however
       large the body (FastAPI reads and parses the body before it runs dependencies).
    2. The body size: over :data:`MAX_BODY` gets 413, from ``Content-Length`` before reading,
       or while counting a chunked body; at most that much is ever held in memory. A body not
       whole within :data:`BODY_TIMEOUT` gets 408 and the connection is closed.
    3. The status fast lane: an authorized ``GET`` of the status is answered straight from its
       encoded body. The status is the API's hottest read (dashboards, monitoring), and
       FastAPI's routing and dependency resolution cost more than the answer: this lane serves
       about three times the requests/s through the same single process. FastAPI's route of
       the same path gives the schema, the errors and the very same body.
    """

    def __init__(self, app, context: Context, max_body: int = MAX_BODY):
        self.app, self.context, self.max_body = app, context, max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = {key: value for key, value in scope["headers"] if key in (
            b"authorization", b"content-length", b"transfer-encoding")}
        if path.startswith(PROTECTED):
            authorization = headers.get(b"authorization")
            if not bearer_ok(authorization.decode("latin-1") if authorization else None, self.context.tokens):
                await _problem(send, 401, UNAUTHORIZED, ((b"www-authenticate", b"Bearer"),))
                return
            if path == STATUS_PATH and scope["method"] == "GET" and not scope["query_string"]:
                body = self.context.status_json()
                if body is not None:
                    await send({"type": "http.response.start", "status": 200, "headers": [
                        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
        too_large = f"the request body is over {self.max_body // 1024} KiB: nothing was done"
        if not path.startswith(PROTECTED) and (b"content-length" in headers and headers[b"content-length"] != b"0"
                                               or b"transfer-encoding" in headers):
            # The open paths (/healthz, the dashboard, the docs) take no body: none is read for anyone.
            await _problem(send, 413, "this path takes no request body: nothing was read")
            return
        if b"content-length" in headers:
            length = headers[b"content-length"]
            if not length.isdigit():
                await _problem(send, 400, "the Content-Length header is not a number")
                return
            if int(length) > self.max_body:
                await _problem(send, 413, too_large)
                return
        elif b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            await self.app(scope, receive, send)  # no body
            return
        # Read the body here, counting, and hand it on whole (a declared length can also be a lie).
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + BODY_TIMEOUT
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:
                await _problem(send, 408, f"the request body did not arrive within {BODY_TIMEOUT:g} s: nothing "
                               "was done", ((b"connection", b"close"),))
                return
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                await _problem(send, 413, too_large)
                return
            if not message.get("more_body"):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)
