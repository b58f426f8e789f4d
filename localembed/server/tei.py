"""text-embeddings-inference's routes in its request and response shapes.

``POST /embed``, ``/embed_sparse``, ``/rerank``, ``/tokenize``, ``GET /info``, and
``POST /`` (where ``huggingface_hub.InferenceClient(model=URL).feature_extraction`` and
LangChain's ``HuggingFaceEndpointEmbeddings`` post). They serve the default model of their
kind; a client picks another by putting ``/models/ID`` in front of the path (the base URL
``http://HOST:PORT/models/ID``), which every TEI client supports. Errors have TEI's body,
``{"error": ..., "error_type": ...}``.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from localembed.finish import unit_rows
from localembed.server.embeddings import (
    embed,
    finish,
    json_response,
    served_for,
    state_of,
    texts_of,
)
from localembed.server.errors import EMPTY_INPUT, ApiError, hide_paths, paths_of
from localembed.server.rerank import rerank_documents
from localembed.server.schemas import check_input_shape
from localembed.server.sparse import sparse_weights

if TYPE_CHECKING:
    from localembed.encoder import LocalEncoder
    from localembed.server.state import ServedModel, ServerState


TeiInput = str | list[str] | list[int] | list[list[int]]

router = APIRouter()


class _Parameters(BaseModel):
    """``parameters`` as ``huggingface_hub.InferenceClient`` sends them (TEI ignores them)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    truncate: bool | None = None
    truncation_direction: str | None = None
    prompt_name: str | None = None
    normalize: bool | None = None
    dimensions: int | None = Field(default=None, gt=0, strict=True)
    encoding_format: Literal["float"] | None = None


class _TextsRequest(BaseModel):
    """The texts of a text-embeddings-inference request, and how to cut and instruct them."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    inputs: TeiInput
    """A text or a list of texts (token ids are refused: another tokenizer's ids)."""
    truncate: bool | None = None
    """Cut over-long inputs (True) or refuse them (False); None: the server's --truncate."""
    truncation_direction: str = "right"
    """Only "right" (TEI's default): the end of an over-long input is cut."""
    prompt_name: str | None = None
    """"query" or "document": apply the model's instruction for it; None: none."""

    _input_shape = field_validator("inputs", mode="before")(
        lambda value: check_input_shape(value, "inputs")
    )


class EmbedRequest(_TextsRequest):
    """``POST /embed`` (and ``POST /``) as text-embeddings-inference takes it."""

    normalize: bool = True
    """True (TEI's default): unit-length vectors, whatever the model's own ``normalize``;
    False only for a model served with ``normalize = false`` (its raw vectors)."""
    dimensions: int | None = Field(default=None, gt=0, strict=True)
    """Keep the first N dimensions (Matryoshka), normalized after the cut."""
    encoding_format: Literal["float"] | None = None
    """Only "float" (what ``InferenceClient.feature_extraction`` 1.x may send): TEI's
    routes answer lists of numbers; base64 is ``POST /v1/embeddings``'s."""
    model: str | None = None
    """A served embedding model's id (a client that names it in the body); None: the
    ``/models/ID/`` prefix's model, else the default embedding model."""
    parameters: _Parameters | None = None
    """The same options nested, as ``InferenceClient.feature_extraction`` 0.x sends them."""

    def merged(self) -> EmbedRequest:
        """The request with ``parameters`` folded in (top-level fields win)."""
        if self.parameters is None:
            return self
        nested = self.parameters.model_dump(exclude_none=True)
        own = self.model_dump(exclude_unset=True, exclude={"parameters"})
        return EmbedRequest(**{**nested, **own})


class EmbedSparseRequest(_TextsRequest):
    """``POST /embed_sparse``."""


class RerankRequest(BaseModel):
    """``POST /rerank`` as text-embeddings-inference takes it."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    query: str
    """The query."""
    texts: list[str]
    """The candidate documents."""
    truncate: bool | None = None
    """Cut over-long pairs (True) or refuse them (False); None: the server's --truncate."""
    truncation_direction: str = "right"
    """Only "right"."""
    raw_scores: bool = False
    """True: the model's logits (only for a reranker served with activation "none")."""
    return_text: bool = False
    """Include each text in its result."""


class TokenizeRequest(BaseModel):
    """``POST /tokenize``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    inputs: str | list[str]
    """A text or a list of texts."""
    add_special_tokens: bool = True
    """Include the model's special tokens ([CLS], [SEP], <s>...)."""
    prompt_name: str | None = None
    """"query" or "document": tokenize with the model's instruction; None: none."""


class SparseValue(BaseModel):
    """One token's weight."""

    index: int
    value: float


class Rank(BaseModel):
    """One ranked text; ``index`` is its position in ``texts``."""

    index: int
    score: float
    text: str | None = None


class SimpleToken(BaseModel):
    """One token: its id, its text, whether it is special, its byte offsets in the input."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


def _instruction(encoder: LocalEncoder, prompt_name: str | None) -> str:
    if prompt_name is None:
        return ""
    if prompt_name == "query":
        return encoder.settings.query_instruction
    if prompt_name in {"document", "passage", "text"}:
        return encoder.settings.document_instruction
    message = (
        f"prompt_name {prompt_name!r} is not one of this model's prompts: 'query' or "
        "'document' (the model's query and document instructions)"
    )
    raise ApiError(400, message, code="invalid_request", param="prompt_name")


def _right_only(direction: str) -> None:
    if direction.lower() != "right":
        message = (
            f"truncation_direction {direction!r}: this server cuts over-long inputs at the "
            "end only ('right')"
        )
        raise ApiError(400, message, code="invalid_request", param="truncation_direction")


def _truncate(state: ServerState, truncate: bool | None) -> bool:
    return state.settings.truncate if truncate is None else truncate


@router.post(
    "/embed",
    response_model=list[list[float]],
    summary="Embed texts (text-embeddings-inference's /embed)",
)
@router.post(
    "/",
    response_model=list[list[float]],
    summary="Embed texts (huggingface_hub InferenceClient.feature_extraction)",
    description="What ``InferenceClient(model=URL).feature_extraction`` posts: as ``/embed``.",
)
async def tei_embed(body: EmbedRequest, request: Request) -> Response:
    """One vector per input: ``[[float, ...], ...]``."""
    state = state_of(request)
    body = body.merged()
    _right_only(body.truncation_direction)
    served = served_for(request, body.model, "embedding")
    texts = texts_of(body.inputs, state.settings, "inputs")
    async with state.use(served) as encoder:
        if not body.normalize and encoder.settings.normalize:
            message = (
                f"model {served.id!r} normalizes its vectors; normalize=false needs a model "
                "served with normalize = false"
            )
            raise ApiError(400, message, code="invalid_request", param="normalize")
        if body.dimensions is not None and body.dimensions > encoder.dimension:
            message = f"dimensions={body.dimensions} is more than the model's {encoder.dimension}"
            raise ApiError(400, message, code="invalid_dimensions", param="dimensions")
        instruction = _instruction(encoder, body.prompt_name)
        encoded = await embed(
            state,
            served,
            encoder,
            texts,
            instruction,
            truncate=_truncate(state, body.truncate),
            what="inputs",
            request=request,
        )
    vectors = finish(encoder, encoded.vectors, dimensions=body.dimensions)
    if body.normalize and not encoder.settings.normalize:  # TEI normalizes unless told not to
        vectors = unit_rows(vectors)
    return json_response(vectors.tolist(), encoded.truncated)


@router.post(
    "/embed_sparse",
    response_model=list[list[SparseValue]],
    summary="bge-m3 lexical weights (text-embeddings-inference's /embed_sparse)",
)
async def tei_embed_sparse(body: EmbedSparseRequest, request: Request) -> Response:
    """Per input, its tokens' weights: ``[[{"index": id, "value": weight}, ...], ...]``."""
    state = state_of(request)
    _right_only(body.truncation_direction)
    served = served_for(request, None, "embedding")
    texts = texts_of(body.inputs, state.settings, "inputs")
    async with state.use(served) as encoder:
        instruction = _instruction(encoder, body.prompt_name)
        weights, _, truncated = await sparse_weights(
            state,
            served,
            encoder,
            texts,
            instruction,
            truncate=_truncate(state, body.truncate),
            param="inputs",
        )
    payload = [[{"index": int(i), "value": float(row[i])} for i in sorted(row)] for row in weights]
    return json_response(payload, truncated)


@router.post(
    "/rerank",
    response_model=list[Rank],
    response_model_exclude_none=True,
    summary="Rank texts for a query (text-embeddings-inference's /rerank)",
)
async def tei_rerank(body: RerankRequest, request: Request) -> Response:
    """``[{"index", "score", "text"?}, ...]``, best first."""
    state = state_of(request)
    _right_only(body.truncation_direction)
    if not body.texts:  # TEI's Empty error
        raise ApiError(400, "texts must not be empty", code=EMPTY_INPUT, param="texts")
    served, ranked = await rerank_documents(
        request, None, body.query, body.texts, None, truncate=_truncate(state, body.truncate)
    )
    if body.raw_scores and _activation(served) != "none":
        message = (
            f"raw_scores: model {served.id!r} applies its {_activation(served)} activation; "
            'serve it with activation = "none" for raw scores'
        )
        raise ApiError(400, message, code="invalid_request", param="raw_scores")
    payload: list[dict[str, Any]] = []
    for index, score in ranked:
        rank: dict[str, Any] = {"index": index, "score": score}
        if body.return_text:
            rank["text"] = body.texts[index]
        payload.append(rank)
    return json_response(payload)


def _activation(served: ServedModel) -> str:
    model = served.extras.get("reranker", served.model)
    return str(getattr(model, "activation", "none"))


@router.post(
    "/tokenize",
    response_model=list[list[SimpleToken]],
    summary="Tokenize texts as the model does (text-embeddings-inference's /tokenize)",
)
async def tei_tokenize(body: TokenizeRequest, request: Request) -> Response:
    """Per input, its tokens (special ones with null offsets); offsets are UTF-8 bytes."""
    state = state_of(request)
    served = served_for(request, None, "embedding")
    texts = texts_of(body.inputs, state.settings, "inputs")
    async with state.use(served) as encoder:
        instruction = _instruction(encoder, body.prompt_name)
        tokens = await asyncio.to_thread(
            _tokenize, encoder, texts, instruction, body.add_special_tokens
        )
    return json_response(tokens)


def _tokenize(
    encoder: LocalEncoder, texts: list[str], instruction: str, special: bool
) -> list[list[dict[str, Any]]]:
    from localembed.texts import apply_instruction, check_texts

    tokenizer = encoder.tokenizer
    result = []
    for text in check_texts(texts):
        full = apply_instruction(instruction, text) if instruction else text
        encoded = tokenizer(
            full,
            add_special_tokens=special,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            truncation=False,
            verbose=False,
        )
        pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
        row = []
        for token_id, piece, mask, (start, stop) in zip(
            encoded["input_ids"],
            pieces,
            encoded["special_tokens_mask"],
            encoded["offset_mapping"],
            strict=True,
        ):
            if mask:
                row.append(
                    {"id": token_id, "text": piece, "special": True, "start": None, "stop": None}
                )
                continue
            byte_start = len(full[:start].encode("utf-8"))
            row.append(
                {
                    "id": token_id,
                    "text": full[start:stop],
                    "special": False,
                    "start": byte_start,
                    "stop": byte_start + len(full[start:stop].encode("utf-8")),
                }
            )
        result.append(row)
    return result


@router.get(
    "/info", summary="The model and the server's limits (text-embeddings-inference's /info)"
)
async def info(request: Request) -> dict[str, Any]:
    """TEI's ``/info`` fields for the default model, and localembed's own details.

    No file-system path appears: a local model shows its directory's name.
    """
    from localembed import __version__
    from localembed.server.embeddings import ROUTED_MODEL

    state = state_of(request)
    name = request.scope.get(ROUTED_MODEL)
    if name is None:
        served = state.default("embedding") or state.default("reranker")
        served = served or state.lookup(None, "embedding")
    else:
        model_id = state.names.get(name)
        served = state.models[model_id] if model_id else state.lookup(name, "embedding")
    state.authorize(served, _token(request))
    settings = state.settings
    async with state.use(served) as model:
        described = model.describe()
        config = served.spec.config
        if served.kind == "embedding":
            from localembed.server.sparse import check_sparse

            sparse = await check_sparse(served, model) is None
            model_type: dict[str, Any] = {"embedding": {"pooling": model.settings.pooling}}
            max_input = model.settings.max_length
        else:
            labels = {str(i): f"LABEL_{i}" for i in range(model.num_labels)}
            model_type = {
                "reranker": {"id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}}
            }
            max_input = model.max_length
            sparse = False
    server = settings.model_dump(exclude={"api_key"})
    server["api_key"] = "set" if settings.api_key else "not set"
    payload = {
        "model_id": served.id,
        "model_sha": None,
        "model_dtype": str(described.get("dtype", "")),
        "model_type": model_type,
        "max_concurrent_requests": served.max_queue,
        "max_input_length": max_input,
        "max_batch_tokens": getattr(config, "max_batch_tokens", None) or 0,
        "max_batch_requests": None,
        "max_client_batch_size": settings.max_client_batch,
        "auto_truncate": settings.truncate,
        "tokenization_workers": 1,
        "version": __version__,
        "sha": None,
        "docker_label": None,
        "kind": served.kind,
        "encoder" if served.kind == "embedding" else "reranker": described,
        "options": config.explicit_options(),
        "server": server,
        "sparse": sparse,
        "process": os.getpid(),
    }
    hidden = paths_of(model, config.model)
    result: dict[str, Any] = hide_paths(payload, hidden, served.id)
    return result


def _token(request: Request) -> str | None:
    from localembed.server.gate import bearer_token

    return bearer_token(request.headers.get("authorization"))
