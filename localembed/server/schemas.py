"""Request and response bodies of the OpenAI-compatible endpoints (pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from localembed.precision import Precision  # noqa: TC001 (pydantic needs it at run time)

Input = str | list[str] | list[int] | list[list[int]]
"""OpenAI's ``input``: one text, texts, or token ids (which this server refuses: see below)."""


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
    """One entry of ``GET /v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "localembed"


class ModelList(BaseModel):
    """``GET /v1/models`` response."""

    object: Literal["list"] = "list"
    data: list[Model]
