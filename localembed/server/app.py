"""The server app: ``create_app(...)`` -> an ASGI app serving one or several models.

The routes live one family per module, each an ``APIRouter`` that reads the app's
:class:`~localembed.server.state.ServerState` (``app.state.localembed``):

- :mod:`~localembed.server.embeddings`: OpenAI ``POST /v1/embeddings`` (and ``/embeddings``)
- :mod:`~localembed.server.sparse`: ``POST /v1/embeddings/sparse`` (bge-m3 lexical weights)
- :mod:`~localembed.server.rerank`: Cohere-style ``POST /v1/rerank``
- :mod:`~localembed.server.tei`: text-embeddings-inference's ``/embed``, ``/embed_sparse``,
  ``/rerank``, ``/tokenize``, ``/info`` and ``POST /``
- :mod:`~localembed.server.status`: ``GET /v1/models``, ``/health``, ``/metrics``

In front of them: the :class:`~localembed.server.gate.Gate` (API key, body size, JSON
bodies, draining), the per-model path prefix ``/models/ID/...`` and the request timer.
Every error is a JSON body (OpenAI's shape; TEI's on the TEI routes); the server answers
4xx only for the caller's errors and 500 (logged) for anything else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from localembed.config import EncoderConfig
from localembed.server.errors import TEI_PATHS, ApiError, error_body, tei_error
from localembed.server.gate import local_path, split_model_prefix
from localembed.server.settings import ServerSettings

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from localembed.encoder import LocalEncoder
    from localembed.server.models import ModelSpec
    from localembed.server.remote import Remote
    from localembed.server.state import ServerState

logger = logging.getLogger("localembed.server")

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": description}
    for status, description in {
        400: "Bad input (the message names the input index or parameter)",
        401: "Missing or invalid API key (or a key this model does not take)",
        404: "Unknown model",
        413: "Too many inputs or too large a body",
        422: "The model gave NaN or infinite values for the inputs the message names",
        429: "The model's queue is full; retry later",
        503: "The model is loading, failed to load or is unavailable, or the server is "
        "shutting down",
    }.items()
}


def create_app(
    config: EncoderConfig | None = None,
    settings: ServerSettings | None = None,
    *,
    encoder: LocalEncoder | None = None,
    models: list[ModelSpec] | None = None,
    remote: Remote | None = None,
) -> FastAPI:
    """Build the app.

    Args:
        config: one embedding model's settings (``localembed serve --model M``); with
            ``settings.reranker``, a reranker too. Ignored when ``models`` is given.
        settings: the server's limits, key, loading policy (see :class:`ServerSettings`).
        encoder: an already loaded encoder to serve (never unloaded by the server).
        models: the served models (``--config FILE``, repeated ``--model``/``--reranker``).
        remote: the models are served by other processes: this app loads none, checks each
            request as usual and forwards it to its model's process
            (:mod:`localembed.server.remote`; Ray Serve's ingress).

    Returns:
        A FastAPI app (ASGI): run it with uvicorn, or see :func:`localembed.server.run.serve`.
    """
    from fastapi import FastAPI

    from localembed.server import embeddings, rerank, sparse, status, tei
    from localembed.server.gate import Gate
    from localembed.server.models import embedding_spec, reranker_spec
    from localembed.server.state import ServerState

    settings = settings or ServerSettings()
    loaded: dict[str, Any] = {}
    if models is None:
        config = encoder.config if encoder is not None else (config or EncoderConfig())
        first = embedding_spec(config, settings.model_name)
        models = [first]
        if settings.reranker is not None:
            models.append(reranker_spec(settings.reranker, config))
        if encoder is not None:
            loaded[first.id] = encoder
    state = ServerState(list(models), settings, loaded=loaded, remote=remote)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        yield
        await state.stop()

    app = FastAPI(
        title="localembed",
        summary="Embeddings, sparse vectors and reranking from local models "
        "(OpenAI, Cohere and text-embeddings-inference APIs)",
        lifespan=lifespan,
        responses=_ERROR_RESPONSES,
    )
    app.state.localembed = state
    _add_error_handlers(app, state)
    for module in (embeddings, sparse, rerank, tei, status):
        app.include_router(module.router)

    def on_refused(path: str, status: int, code: str) -> None:
        state.metrics.failures.labels(code).inc()

    model_keys = frozenset(
        key for spec in models if spec.api_keys is not None for key in spec.api_keys
    )
    app.add_middleware(
        Gate,
        api_key=settings.api_key,
        max_bytes=settings.max_request_bytes,
        model_keys=model_keys,
        is_draining=lambda: state.draining,
        on_refused=on_refused,
    )
    app.add_middleware(_ModelPrefix, state=state)
    if remote is not None:
        from localembed.server.remote import Forwarding

        # Outside the prefix rewriting: it forwards the path as the client sent it.
        app.add_middleware(Forwarding, remote=remote, names=state.names, tei_paths=TEI_PATHS)
    routes = {
        str(getattr(route, "path", ""))
        for module in (embeddings, sparse, rerank, tei, status)
        for route in module.router.routes
    }
    app.add_middleware(_Timed, state=state, routes=routes)  # outermost: times refusals too
    return app


def _add_error_handlers(app: FastAPI, state: ServerState) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def failure(
        request: Request,
        status: int,
        message: str,
        code: str,
        param: str | None = None,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JSONResponse:
        state.metrics.failures.labels(code).inc()
        headers = dict(headers or {})
        if retry_after:
            headers["Retry-After"] = str(retry_after)
        if local_path(request.scope) in TEI_PATHS:  # TEI's statuses and body
            status, body = tei_error(status, code, message)
        else:
            body = error_body(status, message, code=code, param=param)
        return JSONResponse(body, status_code=status, headers=headers or None)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return failure(
            request, error.status, error.message, error.code, error.param, error.retry_after
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(error.errors(), request.headers.get("content-type"))
        return failure(request, 400, message, "invalid_request", param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return failure(request, error.status_code, str(error.detail), code, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # Not the caller's fault: the model's files (ModelError) or a bug. Logged whole.
        logger.exception("internal error answering %s %s", request.method, request.url.path)
        message = f"internal error ({type(error).__name__}); the server's log has the details"
        return failure(request, 500, message, "internal_error")


def _validation_message(errors: Any, content_type: str | None = None) -> tuple[str, str | None]:
    """One line naming the first invalid parameter (``input[3]``), and that parameter.

    Of a union's errors (one per member) the deepest is kept: for ``["a", 3]`` that is the
    list-of-str member's ``input[1]``, not "input is not a str".
    """
    listed = list(errors)
    if not listed:
        return "invalid request", None
    first = max(listed, key=lambda error: len(error.get("loc", ())))
    kind = first.get("type")
    if kind == "input_shape":
        return str(first.get("msg")), str(first.get("ctx", {}).get("param", "input"))
    if kind == "json_invalid":
        return "the request body is not valid JSON", None
    param = ""
    for part in first.get("loc", ())[1:]:  # after "body"
        if isinstance(part, int):
            param += f"[{part}]"
        elif "[" not in part and part not in {"str", "int"} and not part[:1].isupper():
            # (union members are named by type: list[str], str, DocumentObject)
            param += f".{part}" if param else part
    if not param:
        if kind == "missing":
            return "the request needs a JSON body", None
        hint = ""
        if content_type and "json" not in content_type:
            hint = f" (this body is not JSON; it was sent as {content_type.split(';')[0]!r}: "
            hint += "send JSON with the header 'Content-Type: application/json')"
        return f"the request body must be a JSON object{hint}", None
    return f"{param}: {first.get('msg', 'invalid')}", param


class _ModelPrefix:
    """``/models/ID/PATH`` -> ``/PATH`` for the served model ID (ids may contain '/')."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = local_path(scope) if scope["type"] == "http" else ""
        name, rest = split_model_prefix(path, self.state.names)
        if name is not None:
            from localembed.server.embeddings import ROUTED_MODEL

            inner = str(scope.get("root_path", "") or "") + rest
            scope = {**scope, "path": inner, "raw_path": inner.encode(), ROUTED_MODEL: name}
        await self.app(scope, receive, send)


@dataclass
class _Timed:
    """Counts and times every HTTP response by endpoint and status."""

    app: Any
    state: ServerState
    routes: set[str]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        # A /models/ID/ path counts as its route.
        path = split_model_prefix(local_path(scope), self.state.names)[1]
        endpoint = path if path in self.routes else "other"
        metrics = self.state.metrics

        async def timed_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            metrics.requests.labels(endpoint, str(status)).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
