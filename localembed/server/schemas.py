"""Request and response bodies of the OpenAI-compatible endpoints (pydantic only)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from localembed.precision import Precision  # noqa: TC001 (pydantic needs it at run time)

Input = str | list[str] | list[int] | list[list[int]]
"""OpenAI's ``input``: one text, texts, or token ids (which this server refuses: see below)."""

INPUT_SHAPE = "input_shape"
"""The error type of an ``input`` that has none of the forms below."""

INPUT_FORMS = "a string, a list of strings, a list of token ids or a list of lists of token ids"
"""What ``input`` may be (OpenAI's forms), for error messages."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        inner = {_kind(item).split(" (")[0] for item in value}
        if len(inner) == 1:
            return f"a list of {next(iter(inner)).removeprefix('a ').removeprefix('an ')}s"
        return "a list of mixed items"
    return type(value).__name__


def check_input_shape(value: Any, what: str = "input") -> Any:
    """``value`` if it has one of OpenAI's input forms, else an error naming the first bad item.

    A list that mixes strings and token ids is left to the field's own validation (which
    names the item that is not a string).
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        template = "{param}: got {kind}; {param} takes {forms}"
        context = {"param": what, "kind": _kind(value), "forms": INPUT_FORMS}
        raise PydanticCustomError(INPUT_SHAPE, template, context)
    for index, item in enumerate(value):
        if isinstance(item, str) or (isinstance(item, int) and not isinstance(item, bool)):
            continue
        if isinstance(item, list) and all(
            isinstance(token, int) and not isinstance(token, bool) for token in item
        ):
            continue
        template = "{param}: got {kind}; {what} takes {forms}"
        context = {"param": f"{what}[{index}]", "kind": _kind(item), "what": what}
        raise PydanticCustomError(INPUT_SHAPE, template, {**context, "forms": INPUT_FORMS})
    return value


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings`` as OpenAI defines it, plus ``input_type``."""

    model_config = ConfigDict(
        extra="forbid", protected_namespaces=(), use_attribute_docstrings=True
    )

    input: Input
    """A text or a non-empty list of texts (at most the server's --max-client-batch)."""
    model: str | None = None
    """The served model's id (see GET /v1/models); None: the served model."""
    encoding_format: Literal["float", "base64"] = "float"
    """"float": lists of numbers; "base64": little-endian float32 bytes, base64-encoded."""
    dimensions: int | None = Field(default=None, gt=0, strict=True)
    """Keep the first N dimensions, then re-normalize (Matryoshka); at most the model's size."""
    user: str | None = None
    """An end-user id (accepted and ignored, as a local server has no abuse monitoring)."""
    input_type: Literal["query", "document"] | None = None
    """Extension: apply the model's query or document instruction; None: the text as sent."""
    precision: Precision = "float32"
    """Extension: the output precision (sentence-transformers' quantize_embeddings): float32,
    float16, int8, uint8 (ints 0..255 / -128..127 per dimension), binary or ubinary (bits packed
    8 to a byte, ceil(dimensions / 8) ints). base64 gives the raw little-endian bytes in that
    dtype."""
    ranges: list[list[float]] | None = None
    """Extension, int8/uint8 only: the calibration ranges [[min per dimension], [max per
    dimension]] (from a corpus); None: computed from this request's inputs (at least two)."""

    _input_shape = field_validator("input", mode="before")(check_input_shape)


class SparseRequest(BaseModel):
    """``POST /v1/embeddings/sparse``: bge-m3 lexical weights."""

    model_config = ConfigDict(
        extra="forbid", protected_namespaces=(), use_attribute_docstrings=True
    )

    input: Input
    """A text or a non-empty list of texts."""
    model: str | None = None
    """The served model's id; None: the served model."""
    input_type: Literal["query", "document"] | None = None
    """Apply the model's query or document instruction; None: the text as sent."""
    user: str | None = None
    """Accepted and ignored."""

    _input_shape = field_validator("input", mode="before")(check_input_shape)


class Usage(BaseModel):
    """Tokens the request ran through the model."""

    prompt_tokens: int
    total_tokens: int


class Embedding(BaseModel):
    """One vector; ``index`` is its input's position."""

    object: Literal["embedding"] = "embedding"
    embedding: list[float] | list[int] | str
    index: int


class EmbeddingResponse(BaseModel):
    """``POST /v1/embeddings`` response (``data[i]`` belongs to ``input[i]``)."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class SparseEmbedding(BaseModel):
    """One text's lexical weights: token ids of the model's vocabulary and their weights."""

    object: Literal["sparse_embedding"] = "sparse_embedding"
    index: int
    indices: list[int]
    values: list[float]


class SparseResponse(BaseModel):
    """``POST /v1/embeddings/sparse`` response."""

    object: Literal["list"] = "list"
    data: list[SparseEmbedding]
    model: str
    usage: Usage


class Model(BaseModel):
    """One entry of ``GET /v1/models``: OpenAI's fields plus the model's kind and state."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "localembed"
    kind: Literal["embedding", "reranker"] = "embedding"
    """"embedding" (POST /v1/embeddings, /embed) or "reranker" (POST /v1/rerank, /rerank)."""
    loaded: bool = False
    """Whether the model is in memory now (else it loads on its first request)."""
    status: str = "unloaded"
    """unloaded, loading, loaded, unloading or failed."""
    default: bool = False
    """Whether requests that name no model (and the TEI routes) use it."""


class ModelList(BaseModel):
    """``GET /v1/models`` response."""

    object: Literal["list"] = "list"
    data: list[Model]
