"""The ASGI layer in front of the app: API key, request size, JSON bodies, and draining."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from localembed.server.errors import TEI_PATHS, error_body, tei_error

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/health", "/metrics"})
"""Paths that need no API key (probes and scrapers)."""


def local_path(scope: Scope) -> str:
    """The request's path below the app's mount point (``root_path``: Ray Serve's prefix).

    Example:
        >>> local_path({"path": "/several/health", "root_path": "/several"})
        '/health'

    """
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "") or "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def split_model_prefix(path: str, names: Iterable[str]) -> tuple[str | None, str]:
    """The served model a ``/models/ID/PATH`` path names, and ``/PATH`` (else None, ``path``).

    Example:
        >>> split_model_prefix("/models/BAAI/bge-m3/embed", ["BAAI/bge-m3", "BAAI"])
        ('BAAI/bge-m3', '/embed')

    """
    if path.startswith("/models/"):
        rest = path.removeprefix("/models/")
        for name in sorted(names, key=len, reverse=True):
            if rest == name or rest.startswith(f"{name}/"):
                return name, rest[len(name) :] or "/"
    return None, path


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header (None without one).

    Example:
        >>> bearer_token("Bearer s3cret"), bearer_token("Basic abc"), bearer_token(None)
        ('s3cret', None, None)

    """
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def bearer_matches(authorization: str | None, api_key: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <api_key>`` (constant-time compare).

    Example:
        >>> bearer_matches("Bearer s3cret", "s3cret"), bearer_matches("s3cret", "s3cret")
        (True, False)

    """
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), api_key.encode())


class Gate:
    """Answers 401 (no valid key), 413 (body too large) and 503 (draining) before the app.

    The body is read here, up to ``max_bytes`` (chunked uploads included), and handed to the
    app whole, so an oversized upload is refused without being parsed. A body that is JSON
    is read as JSON whatever its ``Content-Type`` says, or without one (``curl -d`` sends
    ``application/x-www-form-urlencoded``, ``requests.post(data=...)`` none), as OpenAI's
    API does.

    With ``api_key`` set, a request needs it or one of ``model_keys`` (a model's own keys:
    the routes check which models a key may use).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_bytes: int,
        model_keys: frozenset[str] = frozenset(),
        is_draining: Callable[[], bool],
        on_refused: Callable[[str, int, str], None],
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.model_keys = model_keys
        self.max_bytes = max_bytes
        self.is_draining = is_draining
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then pass it on (with its body buffered) or refuse it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = local_path(scope)
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope.get("headers", [])
        }
        if self.is_draining():
            refusal = "the server is shutting down; retry on another instance"
            await self._refuse(send, path, 503, refusal, "shutting_down")
            return
        if (
            self.api_key
            and path not in PUBLIC_PATHS
            and not any(
                bearer_matches(headers.get("authorization"), key)
                for key in (self.api_key, *self.model_keys)
            )
        ):
            refusal = "missing or invalid API key: send the header 'Authorization: Bearer KEY'"
            await self._refuse(send, path, 401, refusal, "invalid_api_key")
            return
        declared = headers.get("content-length", "")
        too_large = f"the request body is larger than the server's limit of {self.max_bytes} bytes"
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, path, 413, too_large, "request_too_large")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, path, 413, too_large, "request_too_large")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and "json" not in headers.get("content-type", ""):
            scope = _as_json(scope, body)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, path: str, status: int, message: str, code: str) -> None:
        self.on_refused(path, status, code)
        if path in TEI_PATHS:  # TEI's body (the path is below any /models/ID/ prefix)
            status, body = tei_error(status, code, message)
        else:
            body = error_body(status, message, code=code)
        payload = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        if status == 503:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _as_json(scope: Scope, body: bytes) -> Scope:
    """``scope`` with ``Content-Type: application/json`` when ``body`` parses as JSON."""
    try:
        json.loads(body)
    except ValueError:
        return scope  # the app answers 400, saying to send JSON with that header
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
    headers.append((b"content-type", b"application/json"))
    return {**scope, "headers": headers}
