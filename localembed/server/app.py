"""The OpenAI-compatible embeddings app: ``create_app(config, settings)`` -> an ASGI app.

Endpoints: ``POST /v1/embeddings`` (and ``/embeddings``), ``POST /v1/embeddings/sparse``
(bge-m3), ``POST /v1/rerank`` (:mod:`localembed.server.rerank`),
``GET /v1/models``, ``GET /health``, ``GET /metrics``, ``GET /info``. Every error
is an OpenAI-style JSON body; request bodies never cause a 500 (the tests fuzz the app's own
OpenAPI document). Embedding requests go through the encoder's micro-batcher, so concurrent
requests share forward passes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from localembed.config import EncoderConfig
from localembed.faults import NonFiniteEmbeddingError
from localembed.precision import check_ranges
from localembed.server.errors import ApiError, error_body, non_finite_error
from localembed.server.gate import Gate
from localembed.server.metrics import Metrics
from localembed.server.schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    Input,
    ModelList,
    SparseRequest,
    SparseResponse,
)
from localembed.server.settings import ServerSettings
from localembed.texts import check_texts

if TYPE_CHECKING:
    from fastapi import FastAPI

    from localembed.encoder import LocalEncoder

logger = logging.getLogger("localembed.server")

TRUNCATED_HEADER = "X-Truncated-Inputs"
"""Response header: how many inputs were cut to the model's max_length (with --truncate)."""

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": description}
    for status, description in {
        400: "Bad input (the message names the input index or parameter)",
        401: "Missing or invalid API key",
        404: "Unknown model",
        413: "Too many inputs or too large a body",
        422: "The model gave NaN or infinite values for the inputs the message names",
        429: "The server's queue is full; retry later",
        503: "The model is loading, or the server is shutting down",
    }.items()
}


@dataclass
class _State:
    """What the app knows at run time (one per app)."""

    config: EncoderConfig
    settings: ServerSettings
    metrics: Metrics
    encoder: LocalEncoder | None = None
    load_error: str | None = None
    sparse_error: str | None = "not checked yet"
    in_flight: int = 0
    draining: bool = False
    names: set[str] = field(default_factory=set)

    @property
    def model_id(self) -> str:
        if self.settings.model_name:
            return self.settings.model_name
        if self.encoder is not None:
            return self.encoder.source.name
        return self.config.model or "sentence-transformers/all-MiniLM-L6-v2"

    def ready(self) -> LocalEncoder:
        """The encoder, or a 503 while it loads (or after it failed to)."""
        if self.encoder is not None:
            return self.encoder
        if self.load_error is not None:
            message = f"the model failed to load: {self.load_error}"
            raise ApiError(503, message, code="model_load_failed")
        raise ApiError(503, "the model is still loading; retry shortly", code="model_loading")


def create_app(
    config: EncoderConfig | None = None,
    settings: ServerSettings | None = None,
    *,
    encoder: LocalEncoder | None = None,
) -> FastAPI:
    """Build the app for one model.

    Args:
        config: the encoder's settings; the model loads in the background when the app
            starts (requests get 503 until it is ready). Ignored when ``encoder`` is given.
        settings: the server's limits and key (see :class:`ServerSettings`).
        encoder: an already loaded encoder to serve.

    Returns:
        A FastAPI app (ASGI): run it with uvicorn, or see :func:`localembed.server.serve`.
    """
    from fastapi import FastAPI, Request, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    settings = settings or ServerSettings()
    config = encoder.config if encoder is not None else (config or EncoderConfig())
    state = _State(config=config, settings=settings, metrics=Metrics())
    metrics = state.metrics

    def on_loaded(loaded: LocalEncoder) -> None:
        state.names = {loaded.source.name, str(loaded.source.path), loaded.source.path.name}
        if config.model:
            state.names.add(config.model)
        if settings.model_name:
            state.names.add(settings.model_name)
        state.sparse_error = _sparse_support(loaded)
        if loaded.runtime is not None:
            if settings.max_wait_ms:
                loaded.batcher.max_wait = settings.max_wait_ms / 1000
            loaded.batcher.observe(metrics.observe_round)
        state.encoder = loaded

    def load() -> None:
        from localembed.encoder import get_encoder

        try:
            on_loaded(get_encoder(config))
        except Exception as error:  # reported by /health and every request (503)
            logger.exception("the model failed to load")
            state.load_error = f"{type(error).__name__}: {error}"

    if encoder is not None:
        on_loaded(encoder)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.draining = False  # a restarted app (a new TestClient) serves again
        if state.encoder is None and state.load_error is None:
            threading.Thread(target=load, name="localembed-load", daemon=True).start()
        yield
        state.draining = True
        if state.encoder is not None and state.encoder.runtime is not None:
            state.encoder.batcher.unobserve(metrics.observe_round)

    app = FastAPI(
        title="localembed",
        summary="OpenAI-compatible embeddings from a local model",
        lifespan=lifespan,
        responses=_ERROR_RESPONSES,
    )
    app.state.localembed = state

    def failure(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
        metrics.failures.labels(code).inc()
        headers = {"Retry-After": "1"} if status in {429, 503} else None
        return JSONResponse(
            error_body(status, message, code=code, param=param), status_code=status, headers=headers
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return failure(error.status, error.message, error.code, error.param)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(error.errors())
        return failure(400, message, "invalid_request", param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return failure(error.status_code, str(error.detail), code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return failure(500, f"internal error: {type(error).__name__}: {error}", "internal_error")

    def check_model(requested: str | None) -> None:
        if requested is not None and requested not in state.names:
            message = (
                f"model {requested!r} is not served here; this server serves {state.model_id!r}"
            )
            raise ApiError(404, message, code="model_not_found", param="model")

    def admit() -> None:
        if state.in_flight >= settings.max_queue:
            message = (
                f"the server's queue is full ({settings.max_queue} requests in progress); "
                "retry shortly"
            )
            raise ApiError(429, message, code="queue_full")
        state.in_flight += 1
        metrics.queue_depth.set(state.in_flight)

    def release() -> None:
        state.in_flight -= 1
        metrics.queue_depth.set(state.in_flight)

    def texts_of(value: Input) -> list[str]:
        texts = [value] if isinstance(value, str) else list(value)
        if not texts:
            raise ApiError(400, "input must not be empty", code="invalid_input", param="input")
        if not all(isinstance(text, str) for text in texts):
            message = (
                "token-id input is not supported: send text (the ids of another tokenizer would "
                "embed the wrong words; LangChain: OpenAIEmbeddings(check_embedding_ctx_length="
                "False))"
            )
            raise ApiError(400, message, code="invalid_input", param="input")
        if len(texts) > settings.max_client_batch:
            message = (
                f"{len(texts)} inputs in one request; this server takes at most "
                f"{settings.max_client_batch} (--max-client-batch)"
            )
            raise ApiError(413, message, code="too_many_inputs", param="input")
        return check_texts(texts)  # the encoder's repair of invalid unicode, once, here

    def instruction_of(encoder: LocalEncoder, input_type: str | None) -> str:
        if input_type == "query":
            return encoder.settings.query_instruction
        if input_type == "document":
            return encoder.settings.document_instruction
        return ""

    async def refuse_over_long(encoder: LocalEncoder, texts: list[str], instruction: str) -> None:
        limit = encoder.settings.max_length
        try:
            index, length = await asyncio.to_thread(_first_over_long, encoder, texts, instruction)
        except Exception:  # counting failed: still a 400, naming what is known
            logger.exception("counting an over-long input's tokens failed")
            index, length = None, None
        name = "an input" if index is None else f"input[{index}]"
        size = "" if length is None else f" has {length} tokens,"
        message = (
            f"{name}{size} over the model's limit of {limit} tokens; shorten it, or start the "
            "server with --truncate"
        )
        param = "input" if index is None else f"input[{index}]"
        raise ApiError(400, message, code="input_too_long", param=param)

    @app.post(
        "/v1/embeddings",
        response_model=EmbeddingResponse,
        summary="Embed texts (OpenAI's embeddings API)",
    )
    @app.post("/embeddings", response_model=EmbeddingResponse, include_in_schema=False)
    async def embeddings(body: EmbeddingRequest) -> Response:
        encoder = state.ready()
        check_model(body.model)
        texts = texts_of(body.input)
        if body.dimensions is not None and body.dimensions > encoder.dimension:
            message = f"dimensions={body.dimensions} is more than the model's {encoder.dimension}"
            raise ApiError(400, message, code="invalid_dimensions", param="dimensions")
        ranges = _ranges_of(body, body.dimensions or encoder.dimension, len(texts))
        instruction = instruction_of(encoder, body.input_type)
        admit()
        try:
            encoded = await _encode(encoder, texts, instruction)
            if encoded.truncated and not settings.truncate:
                await refuse_over_long(encoder, texts, instruction)
        finally:
            release()
        metrics.queue_time.observe(encoded.queue_seconds)
        metrics.texts.inc(len(texts))
        metrics.tokens.inc(encoded.tokens)
        metrics.truncated.inc(encoded.truncated)
        try:
            vectors = encoder.finish(
                encoded.vectors, body.precision, ranges, dimensions=body.dimensions
            )
        except NonFiniteEmbeddingError as error:
            raise non_finite_error(error) from error
        data: list[dict[str, Any]] = [
            {"object": "embedding", "embedding": value, "index": index}
            for index, value in enumerate(_encode_vectors(vectors, body.encoding_format))
        ]
        payload = {
            "object": "list",
            "data": data,
            "model": state.model_id,
            "usage": {"prompt_tokens": encoded.tokens, "total_tokens": encoded.tokens},
        }
        return Response(
            _dumps(payload),
            media_type="application/json",
            headers={TRUNCATED_HEADER: str(encoded.truncated)},
        )

    @app.post(
        "/v1/embeddings/sparse",
        response_model=SparseResponse,
        summary="bge-m3 lexical weights (sparse vectors over the model's vocabulary)",
    )
    async def sparse(body: SparseRequest) -> Response:
        encoder = state.ready()
        check_model(body.model)
        if state.sparse_error is not None:
            raise ApiError(400, state.sparse_error, code="sparse_not_supported", param="model")
        texts = texts_of(body.input)
        instruction = instruction_of(encoder, body.input_type)
        admit()
        try:
            tokenized = await asyncio.to_thread(encoder.tokenize, texts, instruction)
            if tokenized.truncated and not settings.truncate:
                await refuse_over_long(encoder, texts, instruction)
            output = await asyncio.to_thread(
                encoder.encode_m3, texts, dense=False, sparse=True, instruction=instruction
            )
        except NonFiniteEmbeddingError as error:
            raise non_finite_error(error) from error
        except (TypeError, ValueError) as error:
            raise ApiError(400, str(error), code="invalid_input", param="input") from error
        finally:
            release()
        tokens = sum(len(ids) for ids in tokenized.ids)
        weights = output.sparse or []
        data = []
        for index, text_weights in enumerate(weights):
            ids = sorted(text_weights)
            data.append(
                {
                    "object": "sparse_embedding",
                    "index": index,
                    "indices": [int(i) for i in ids],
                    "values": [float(text_weights[i]) for i in ids],
                }
            )
        payload = {
            "object": "list",
            "data": data,
            "model": state.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Response(
            _dumps(payload),
            media_type="application/json",
            headers={TRUNCATED_HEADER: str(tokenized.truncated)},
        )

    from localembed.server.rerank import add_rerank_route

    add_rerank_route(app, state, admit, release)  # POST /v1/rerank (localembed.reranker)

    @app.get("/v1/models", response_model=ModelList, summary="The served model")
    async def models() -> dict[str, Any]:
        state.ready()
        return {
            "object": "list",
            "data": [
                {"id": state.model_id, "object": "model", "created": 0, "owned_by": "localembed"}
            ],
        }

    @app.get(
        "/health",
        summary="Ready (200) or loading / failed / shutting down (503)",
        response_model=None,
    )
    async def health() -> JSONResponse:
        if state.encoder is not None:
            return JSONResponse({"status": "ok", "model": state.model_id})
        status = "failed" if state.load_error else "loading"
        return JSONResponse({"status": status, "error": state.load_error}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, response_model=None)
    async def prometheus() -> Response:
        content, content_type = metrics.exposition()
        return Response(content, media_type=content_type)

    @app.get("/info", summary="Resolved model and server settings")
    async def info() -> dict[str, Any]:
        encoder = state.ready()
        server = settings.model_dump(exclude={"api_key"})
        server["api_key"] = "set" if settings.api_key else "not set"
        return {
            "model_id": state.model_id,
            "encoder": encoder.describe(),
            "options": config.explicit_options(),
            "server": server,
            "sparse": state.sparse_error is None,
            "process": os.getpid(),
        }

    routes = {
        "/v1/embeddings",
        "/embeddings",
        "/v1/embeddings/sparse",
        "/v1/models",
        "/health",
        "/metrics",
        "/info",
        "/v1/rerank",
    }

    def on_refused(path: str, status: int, code: str) -> None:
        metrics.failures.labels(code).inc()

    app.add_middleware(
        Gate,
        api_key=settings.api_key,
        max_bytes=settings.max_request_bytes,
        is_draining=lambda: state.draining,
        on_refused=on_refused,
    )
    app.add_middleware(_Timed, metrics=metrics, routes=routes)  # outermost: times refusals too
    return app


def _dumps(payload: dict[str, Any]) -> str:
    """The response body; a NaN that got this far is a 422, never invalid JSON."""
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except ValueError as error:
        message = f"the model gave NaN or infinite values: {error}"
        raise ApiError(422, message, code="non_finite_embedding") from error


async def _encode(encoder: LocalEncoder, texts: list[str], instruction: str) -> Any:
    from localembed.faults import EncoderOutOfMemoryError

    try:
        if encoder.runtime is None:  # backend="flagembedding": no micro-batcher
            vectors = await asyncio.to_thread(encoder.encode, texts, instruction)
            tokenized = await asyncio.to_thread(encoder.tokenize, texts, instruction)
            from localembed.microbatch import Encoded

            tokens = sum(len(ids) for ids in tokenized.ids)
            return Encoded(vectors, tokens, tokenized.truncated, queue_seconds=0.0)
        return await encoder.batcher.aencode_call(texts, instruction)
    except EncoderOutOfMemoryError as error:
        raise ApiError(503, str(error), code="out_of_memory") from error
    except NonFiniteEmbeddingError as error:
        raise non_finite_error(error) from error
    except (TypeError, ValueError) as error:
        raise ApiError(400, str(error), code="invalid_input", param="input") from error


def _ranges_of(body: EmbeddingRequest, dimension: int, count: int) -> np.ndarray | None:
    """The request's int8/uint8 calibration ranges as a (2, dimension) array, checked.

    None: computed from the request's own vectors (refused here for a single input).
    """
    scalar = body.precision in ("int8", "uint8")
    if body.ranges is None:
        if scalar and count < 2:
            message = (
                f"precision={body.precision!r} needs calibration ranges: send 'ranges' "
                "([[min per dimension], [max per dimension]] from a corpus) or at least two inputs"
            )
            raise ApiError(400, message, code="invalid_request", param="precision")
        return None
    if not scalar:
        message = f"ranges apply only to precision 'int8' or 'uint8', not {body.precision!r}"
        raise ApiError(400, message, code="invalid_request", param="ranges")
    ranges = np.asarray(
        body.ranges if all(len(row) == dimension for row in body.ranges) else [],
        dtype=np.float64,
    )
    if len(body.ranges) != 2 or ranges.shape != (2, dimension):
        shape = [len(row) for row in body.ranges]
        message = (
            f"ranges must be two lists (minima, maxima) of {dimension} numbers each "
            f"(the output's dimensions); got {len(body.ranges)} list(s) of lengths {shape}"
        )
        raise ApiError(400, message, code="invalid_request", param="ranges")
    try:
        return check_ranges(ranges, dimension)
    except ValueError as error:
        raise ApiError(400, str(error), code="invalid_request", param="ranges") from None


def _encode_vectors(vectors: np.ndarray, encoding_format: str) -> list[Any]:
    if encoding_format == "base64":
        little = vectors.astype(vectors.dtype.newbyteorder("<"), copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    rows: list[Any] = vectors.tolist()
    return rows


def _first_over_long(
    encoder: LocalEncoder, texts: list[str], instruction: str
) -> tuple[int | None, int | None]:
    """The first input longer than max_length tokens (instruction included), and its length.

    The encoder's own tokenization (invalid unicode repaired as for embedding) finds it;
    (None, None) when it finds none.
    """
    from localembed.texts import apply_instruction

    over = encoder.tokenize(texts, instruction).truncated_rows
    if not over:
        return None, None
    index = over[0]
    full = check_texts([texts[index]])[0]
    full = apply_instruction(instruction, full) if instruction else full
    try:
        length = len(encoder.tokenizer(full, truncation=False, verbose=False)["input_ids"])
    except Exception:  # the length is only for the message
        length = None
    return index, length


def _sparse_support(encoder: LocalEncoder) -> str | None:
    """None when the model has bge-m3's sparse head, else why not."""
    if encoder.reference_backend is not None:
        return None
    from localembed.m3 import load_head

    try:
        load_head(encoder, "sparse")
    except (ValueError, OSError) as error:
        return f"this model has no sparse (lexical weight) head: {error}"
    return None


def _validation_message(errors: Any) -> tuple[str, str | None]:
    """One line naming the first invalid parameter (``input[3]``), and that parameter.

    Of a union's errors (one per member) the deepest is kept: for ``["a", 3]`` that is the
    list-of-str member's ``input[1]``, not "input is not a str".
    """
    listed = list(errors)
    if not listed:
        return "invalid request", None
    first = max(listed, key=lambda error: len(error.get("loc", ())))
    kind = first.get("type")
    if kind == "json_invalid":
        return "the request body is not valid JSON", None
    param = ""
    for part in first.get("loc", ())[1:]:  # after "body"
        if isinstance(part, int):
            param += f"[{part}]"
        elif "[" not in part and part not in {"str", "int"}:  # union member names
            param += f".{part}" if param else part
    if not param:
        if kind == "missing":
            return "the request needs a JSON body", None
        return "the request body must be a JSON object", None
    return f"{param}: {first.get('msg', 'invalid')}", param


@dataclass
class _Timed:
    """Counts and times every HTTP response by endpoint and status."""

    app: Any
    metrics: Metrics
    routes: set[str]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        path = str(scope.get("path", ""))
        endpoint = path if path in self.routes else "other"

        async def timed_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
