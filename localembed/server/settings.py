"""ServerSettings: the HTTP server's own knobs (the model's are an EncoderConfig)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServerSettings(BaseModel):
    """Limits and behaviour of ``localembed serve``; validated once.

    Example:
        >>> ServerSettings(max_queue=8).max_queue
        8

    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, protected_namespaces=(), use_attribute_docstrings=True
    )

    api_key: str | None = Field(default=None, repr=False)
    """Bearer key every endpoint but /health and /metrics requires; None: no key needed."""

    model_name: str | None = None
    """The model id clients send and /v1/models lists; None: the model's own name."""

    max_client_batch: int = Field(default=2048, gt=0)
    """Most inputs in one request (more: 413)."""

    max_queue: int = Field(default=256, gt=0)
    """Most embedding requests admitted at once, running or waiting (more: 429)."""

    max_request_bytes: int = Field(default=16 * 2**20, gt=0)
    """Largest request body in bytes (larger: 413)."""

    truncate: bool = True
    """Over-long inputs: cut to the model's max_length and counted in the X-Truncated-Inputs
    header (True), or refused with a 400 naming the input (False)."""

    reranker: str | None = None
    """A cross-encoder (or bge-m3) for POST /v1/rerank, loaded on its first request; None: a
    served bge-m3 reranks by its own dense + sparse + ColBERT mix, other models answer 404."""

    max_wait_ms: float = Field(default=0.0, ge=0.0)
    """How long the micro-batcher holds a lone request to gather more (0: never)."""
