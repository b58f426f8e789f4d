"""``POST /v1/embeddings/sparse``: bge-m3's lexical weights (sparse vectors), per served model."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response

from localembed.server.embeddings import (
    instruction_of,
    json_response,
    refuse_over_long,
    served_for,
    state_of,
    texts_of,
)
from localembed.server.errors import ApiError, api_error_of
from localembed.server.schemas import SparseRequest, SparseResponse

if TYPE_CHECKING:
    from localembed.encoder import LocalEncoder
    from localembed.server.state import ServedModel, ServerState

router = APIRouter()


def sparse_support(encoder: LocalEncoder) -> str | None:
    """None when the model has bge-m3's sparse head, else why not."""
    if encoder.reference_backend is not None:
        return None
    from localembed.errors import LocalEmbedError

    try:
        encoder.load_head("sparse")
    except (LocalEmbedError, ValueError, OSError) as error:
        return f"this model has no sparse (lexical weight) head: {error}"
    return None


async def check_sparse(served: ServedModel, encoder: LocalEncoder) -> str | None:
    """:func:`sparse_support` of a loaded model, worked out once per load."""
    if "sparse_error" not in served.extras:
        served.extras["sparse_error"] = await asyncio.to_thread(sparse_support, encoder)
    error: str | None = served.extras["sparse_error"]
    return error


async def sparse_weights(
    state: ServerState,
    served: ServedModel,
    encoder: LocalEncoder,
    texts: list[str],
    instruction: str,
    *,
    truncate: bool,
    param: str = "model",
) -> tuple[list[dict[int, float]], int, int]:
    """Each text's lexical weights, the tokens run and the inputs truncated.

    Raises:
        ApiError: 400 when the model has no sparse head (naming ``param``) or an input is
            over-long without ``truncate``; 422 for NaN output.
    """
    error = await check_sparse(served, encoder)
    if error is not None:
        raise ApiError(400, error, code="sparse_not_supported", param=param)
    try:
        tokenized = await asyncio.to_thread(encoder.tokenize, texts, instruction)
        if tokenized.truncated and not truncate:
            await refuse_over_long(encoder, texts, instruction)
        output = await asyncio.to_thread(
            encoder.encode_m3, texts, dense=False, sparse=True, instruction=instruction
        )
    except ApiError:
        raise
    except Exception as failure:
        mapped = api_error_of(failure)
        if mapped is None:
            raise
        raise mapped from failure
    tokens = sum(len(ids) for ids in tokenized.ids)
    metrics = state.metrics
    metrics.texts.labels(served.id).inc(len(texts))
    metrics.tokens.labels(served.id).inc(tokens)
    metrics.truncated.labels(served.id).inc(tokenized.truncated)
    return list(output.sparse or []), tokens, tokenized.truncated


@router.post(
    "/v1/embeddings/sparse",
    response_model=SparseResponse,
    summary="bge-m3 lexical weights (sparse vectors over the model's vocabulary)",
)
async def sparse(body: SparseRequest, request: Request) -> Response:
    """Lexical weights of ``input`` from the model ``model`` names (None: the default)."""
    state = state_of(request)
    served = served_for(request, body.model, "embedding")
    texts = texts_of(body.input, state.settings)
    async with state.use(served) as encoder:
        instruction = instruction_of(encoder, body.input_type)
        weights, tokens, truncated = await sparse_weights(
            state, served, encoder, texts, instruction, truncate=state.settings.truncate
        )
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
        "model": served.id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json_response(payload, truncated)
