"""Models served elsewhere: an app that routes each request to the process holding its model.

With ``create_app(models=..., forward=...)`` the app loads no model. Its routes parse and
check a request as ``localembed serve`` does (the same 400/401/404/413 answers, from the
same code); once a route has found the served model it would use, the request as received
(method, path, query, headers and body) goes to ``forward(model_id, request)``, and its
answer goes back to the client unchanged. The other end runs the same app for that one
model (:func:`call_app`), so both answer alike. :mod:`localembed.ray` uses it for one Ray
Serve deployment per model behind one ingress.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from localembed.server.gate import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    local_path,
    split_model_prefix,
)

logger = logging.getLogger("localembed.server")


@dataclass(frozen=True)
class Forwarded:
    """An HTTP request as the client sent it (picklable: it crosses processes)."""

    method: str
    path: str
    """The path below the app's mount point (``/models/ID/...`` prefix kept)."""
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(frozen=True)
class Answer:
    """An HTTP response: status, headers and the whole body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(frozen=True)
class Remote:
    """Where a forwarding app's models are."""

    forward: Callable[[str, Forwarded], Awaitable[Answer]]
    """Sends a request to the model it names (by id) and returns that model's answer."""
    statuses: Callable[[], Awaitable[dict[str, tuple[str, str | None]]]]
    """Each model's status ("loaded", "unloaded", ...) and load error, as its holder says."""


class ForwardRequest(Exception):
    """Raised by ``ServerState.use`` in a forwarding app: the request goes to ``model_id``."""

    def __init__(self, model_id: str) -> None:
        super().__init__(model_id)
        self.model_id = model_id


class Forwarding:
    """ASGI middleware: records the request body, and forwards when a route asks to.

    It sits outside the ``/models/ID`` prefix rewriting, so the forwarded path is the one
    the client sent.
    """

    def __init__(
        self,
        app: ASGIApp,
        remote: Remote,
        names: Iterable[str] = (),
        tei_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.remote = remote
        self.names = names
        """The served models' names (for the error body of a path ``/models/ID/...``)."""
        self.tei_paths = tei_paths
        """Paths whose errors have text-embeddings-inference's body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; on :class:`ForwardRequest`, send the recorded request on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        started = False

        async def recording() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def watching(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, recording, watching)
        except ForwardRequest as signal:
            if started:  # cannot happen: routes forward before they answer
                raise
            request = Forwarded(
                method=str(scope["method"]),
                path=local_path(scope),
                query_string=bytes(scope.get("query_string", b"")),
                headers=[(bytes(k), bytes(v)) for k, v in scope.get("headers", [])],
                body=b"".join(chunks),
            )
            try:
                answer = await self.remote.forward(signal.model_id, request)
            except Exception as error:  # the model's process failed us, not the caller
                logger.exception("forwarding a request to model %r failed", signal.model_id)
                answer = self._unavailable(request.path, signal.model_id, error)
            await send(
                {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
            )
            await send({"type": "http.response.body", "body": answer.body})

    def _unavailable(self, path: str, model_id: str, error: Exception) -> Answer:
        """A 503 (Retry-After: 1) in the route's error shape: the model's process failed."""
        from localembed.server.errors import error_body, tei_error_body

        message = (
            f"model {model_id!r} is unavailable ({type(error).__name__}: its replica may be "
            "starting, overloaded or gone); retry shortly"
        )
        _, inner = split_model_prefix(path, self.names)
        body = (
            tei_error_body(503, message)
            if inner in self.tei_paths
            else error_body(503, message, code="model_unavailable")
        )
        payload = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"retry-after", b"1"),
        ]
        return Answer(503, headers, payload)


async def call_app(app: ASGIApp, request: Forwarded) -> Answer:
    """Run ``request`` through the ASGI ``app`` in this process and collect its answer."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": "",
        "query_string": request.query_string,
        "headers": list(request.headers),
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 80),
    }
    import asyncio

    sent = False
    answered = asyncio.Event()
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    body: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await answered.wait()  # the client stays until the answer is complete
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            body.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                answered.set()

    try:
        await app(scope, receive, send)
    finally:
        answered.set()
    return Answer(status, headers, b"".join(body))
