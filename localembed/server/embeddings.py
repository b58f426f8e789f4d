"""``POST /v1/embeddings`` (and ``/embeddings``): OpenAI's embeddings API, per served model.

Also the helpers every embedding route shares (the TEI routes use them too): the texts of
a request, the instruction of an ``input_type``, one call through the model's
micro-batcher, the over-long check, and the response's JSON.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Request, Response

from localembed.errors import InputError
from localembed.precision import check_ranges
from localembed.server.errors import EMPTY_INPUT, ApiError, api_error_of
from localembed.server.gate import bearer_token
from localembed.server.schemas import EmbeddingRequest, EmbeddingResponse, Input
from localembed.texts import check_texts

if TYPE_CHECKING:
    from localembed.encoder import LocalEncoder
    from localembed.microbatch import Encoded
    from localembed.server.settings import ServerSettings
    from localembed.server.state import ServedModel, ServerState

logger = logging.getLogger("localembed.server")

TRUNCATED_HEADER = "X-Truncated-Inputs"
"""Response header: how many inputs were cut to the model's max_length (with --truncate)."""

ROUTED_MODEL = "localembed.model"
"""ASGI scope key: the model a ``/models/ID/...`` path names (see localembed.server.app)."""

router = APIRouter()

T = TypeVar("T")


def state_of(request: Request) -> ServerState:
    """The app's :class:`~localembed.server.state.ServerState`."""
    state: ServerState = request.app.state.localembed
    return state


def served_for(request: Request, name: str | None, kind: Any) -> ServedModel:
    """The model a request names (body field, else its ``/models/ID/`` path), authorized."""
    state = state_of(request)
    served = state.lookup(name or request.scope.get(ROUTED_MODEL), kind)
    state.authorize(served, bearer_token(request.headers.get("authorization")))
    return served


def texts_of(value: Input, settings: ServerSettings, what: str = "input") -> list[str]:
    """The texts of an ``input``: one or a non-empty list, at most --max-client-batch."""
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise ApiError(400, f"{what} must not be empty", code=EMPTY_INPUT, param=what)
    if not all(isinstance(text, str) for text in texts):
        message = (
            f"token-id {what} is not supported: send text (the ids of another tokenizer would "
            "embed the wrong words; LangChain: OpenAIEmbeddings(check_embedding_ctx_length="
            "False))"
        )
        raise ApiError(400, message, code="invalid_input", param=what)
    if len(texts) > settings.max_client_batch:
        message = (
            f"{len(texts)} inputs in one request; this server takes at most "
            f"{settings.max_client_batch} (--max-client-batch)"
        )
        raise ApiError(413, message, code="too_many_inputs", param=what)
    return check_texts([str(text) for text in texts])  # the encoder's repair, once, here


CLIENT_GONE = 499
"""The status (nginx's) of a request whose client disconnected before its answer."""


async def while_connected(request: Request | None, work: Awaitable[T]) -> T:
    """``work``'s result, or, if the client disconnects first, ``work`` cancelled and a 499.

    Cancelling a micro-batcher call drops its texts that have not run, so a client that
    gave up (a timeout, a closed connection) does not keep the model busy, or held against
    an eviction, for texts nobody will read.
    """
    if request is None:
        return await work
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():  # the client is gone (or this handler was cancelled)
            task.cancel()
            task.add_done_callback(_retrieve)
    if task.done():
        return task.result()
    message = "the client disconnected; its texts that had not run were dropped"
    raise ApiError(CLIENT_GONE, message, code="client_disconnected")


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Read a dropped task's outcome (no "exception was never retrieved" warning)."""
    if not task.cancelled():
        task.exception()


async def _disconnected(request: Request) -> None:
    """Return when the ASGI server reports the client gone (after the body was read)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # a server that answers at once must not make this spin


def instruction_of(encoder: LocalEncoder, input_type: str | None) -> str:
    """The model's instruction for a "query" or "document" (None: none)."""
    if input_type == "query":
        return encoder.settings.query_instruction
    if input_type == "document":
        return encoder.settings.document_instruction
    return ""


async def embed(
    state: ServerState,
    served: ServedModel,
    encoder: LocalEncoder,
    texts: list[str],
    instruction: str,
    *,
    truncate: bool,
    what: str = "input",
    request: Request | None = None,
) -> Encoded:
    """Embed ``texts`` through the model's micro-batcher (rows not finished yet).

    ``what`` is the request field errors name (``input[3]``; TEI's ``inputs``). With
    ``request``, a client that disconnects cancels the call (:func:`while_connected`).

    Raises:
        ApiError: 400 for an over-long input when not ``truncate``; 422 for NaN output;
            503 when out of memory.
    """
    try:
        if "windows" not in encoder.capabilities:  # backend="flagembedding": no micro-batcher
            from localembed.microbatch import Encoded

            vectors = await asyncio.to_thread(encoder.encode, texts, instruction)
            tokenized = await asyncio.to_thread(encoder.tokenize, texts, instruction)
            tokens = sum(len(ids) for ids in tokenized.ids)
            encoded = Encoded(vectors, tokens, tokenized.truncated, queue_seconds=0.0)
        else:
            encoded = await while_connected(
                request, encoder.batcher.aencode_call(texts, instruction)
            )
    except Exception as error:
        mapped = api_error_of(error, what)
        if mapped is None:
            raise
        raise mapped from error
    if encoded.truncated and not truncate:
        await refuse_over_long(encoder, texts, instruction, what)
    metrics = state.metrics
    metrics.queue_time.labels(served.id).observe(encoded.queue_seconds)
    metrics.texts.labels(served.id).inc(len(texts))
    metrics.tokens.labels(served.id).inc(encoded.tokens)
    metrics.truncated.labels(served.id).inc(encoded.truncated)
    return encoded


def finish(
    encoder: LocalEncoder,
    vectors: np.ndarray,
    precision: Any = "float32",
    ranges: np.ndarray | None = None,
    dimensions: int | None = None,
) -> np.ndarray:
    """The encoder's own finish (cut, normalize, precision), its errors mapped."""
    try:
        return encoder.finish(vectors, precision, ranges, dimensions=dimensions)
    except Exception as error:
        mapped = api_error_of(error)
        if mapped is None:
            raise
        raise mapped from error


async def refuse_over_long(
    encoder: LocalEncoder, texts: list[str], instruction: str, what: str = "input"
) -> None:
    """A 400 naming the first input over the model's limit (its length when known).

    ``what``: the request field (``input``; ``inputs`` on the TEI routes, whose requests
    can ask for ``truncate``).
    """
    limit = encoder.settings.max_length
    try:
        index, length = await asyncio.to_thread(_first_over_long, encoder, texts, instruction)
    except Exception:  # counting failed: still a 400, naming what is known
        logger.exception("counting an over-long input's tokens failed")
        index, length = None, None
    name = "an input" if index is None else f"{what}[{index}]"
    size = "" if length is None else f" has {length} tokens,"
    remedy = "send truncate: true, or start" if what == "inputs" else "or start"
    message = (
        f"{name}{size} over the model's limit of {limit} tokens; shorten it, {remedy} the "
        "server with --truncate"
    )
    param = what if index is None else f"{what}[{index}]"
    raise ApiError(400, message, code="input_too_long", param=param)


def dumps(payload: Any) -> str:
    """The response body; a NaN that got this far is a 422, never invalid JSON."""
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except ValueError as error:
        message = f"the model gave NaN or infinite values: {error}"
        raise ApiError(422, message, code="non_finite_embedding") from error


def json_response(payload: Any, truncated: int | None = None) -> Response:
    """A JSON response (with the X-Truncated-Inputs header when ``truncated`` is given)."""
    headers = None if truncated is None else {TRUNCATED_HEADER: str(truncated)}
    return Response(dumps(payload), media_type="application/json", headers=headers)


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingResponse,
    summary="Embed texts (OpenAI's embeddings API)",
)
@router.post("/embeddings", response_model=EmbeddingResponse, include_in_schema=False)
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    """Embed ``input`` with the model ``model`` names (None: the default embedding model)."""
    state = state_of(request)
    served = served_for(request, body.model, "embedding")
    texts = texts_of(body.input, state.settings)
    async with state.use(served) as encoder:
        if body.dimensions is not None and body.dimensions > encoder.dimension:
            message = f"dimensions={body.dimensions} is more than the model's {encoder.dimension}"
            raise ApiError(400, message, code="invalid_dimensions", param="dimensions")
        ranges = ranges_of(body, body.dimensions or encoder.dimension, len(texts))
        instruction = instruction_of(encoder, body.input_type)
        encoded = await embed(
            state,
            served,
            encoder,
            texts,
            instruction,
            truncate=state.settings.truncate,
            request=request,
        )
    vectors = finish(encoder, encoded.vectors, body.precision, ranges, body.dimensions)
    data: list[dict[str, Any]] = [
        {"object": "embedding", "embedding": value, "index": index}
        for index, value in enumerate(encode_vectors(vectors, body.encoding_format))
    ]
    payload = {
        "object": "list",
        "data": data,
        "model": served.id,
        "usage": {"prompt_tokens": encoded.tokens, "total_tokens": encoded.tokens},
    }
    return json_response(payload, encoded.truncated)


def ranges_of(body: EmbeddingRequest, dimension: int, count: int) -> np.ndarray | None:
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
    except InputError as error:
        raise ApiError(400, str(error), code="invalid_request", param="ranges") from None


def encode_vectors(vectors: np.ndarray, encoding_format: str) -> list[Any]:
    """Rows as JSON lists, or base64 of their little-endian bytes."""
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
    from localembed.texts import apply_instruction, check_texts

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
