"""ServerSettings: the HTTP server's own knobs (each model's: EncoderConfig, RerankerConfig)."""

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
    """Bearer key every endpoint but /health and /metrics requires; None: no key needed
    (models with their own ``api_keys`` in a --config file still need one of those)."""

    model_name: str | None = None
    """The id clients send and /v1/models lists for the one --model; None: the name as given
    (a local directory: its name, never its path)."""

    max_client_batch: int = Field(default=2048, gt=0)
    """Most inputs in one request (more: 413)."""

    max_queue: int = Field(default=256, gt=0)
    """Most requests admitted at once per model, running, waiting for the model to load or
    queued (more: 429)."""

    max_request_bytes: int = Field(default=16 * 2**20, gt=0)
    """Largest request body in bytes (larger: 413)."""

    truncate: bool = True
    """Over-long inputs: cut to the model's max_length and counted in the X-Truncated-Inputs
    header (True), or refused with a 400 naming the input (False)."""

    reranker: str | None = None
    """A cross-encoder (or bge-m3) served for POST /v1/rerank and /rerank; None: a served
    bge-m3 reranks by its own dense + sparse + ColBERT mix, other models answer 404."""

    max_wait_ms: float = Field(default=0.0, ge=0.0)
    """Deprecated and ignored (a warning says so): holding a lone request to gather more
    only delayed it, and under load requests already merge (measured: docs/server.md)."""

    preload: bool = True
    """Load every served model when the server starts (up to the caps below); False: each
    on its first request."""

    load_timeout_s: float = Field(default=60.0, ge=0.0)
    """How long a request waits for its model to load before a 503 with Retry-After."""

    max_loaded_models: int | None = Field(default=None, gt=0)
    """Most models loaded at once; loading one more unloads the least recently used first
    (after its requests in progress finish). None: no limit."""

    max_loaded_mb: float | None = Field(default=None, gt=0)
    """Most resident memory (MiB) the loaded models may hold, measured as each model's
    growth of the process's RSS when it loaded (before: its weight files' size); loading one
    more unloads the least recently used first. None: no limit."""

    idle_unload_s: float | None = Field(default=None, gt=0)
    """Unload a model no request has used for this many seconds (it loads again on its next
    request). None: never."""

    keep_alive_s: float = Field(default=65.0, gt=0)
    """Seconds an idle HTTP keep-alive connection stays open. Above the clients' own pool
    idle timeout (httpx: 5 s, aiohttp: 15 s), so that the client, not the server, closes
    an idle connection: a server close racing a client's reuse is a ReadError."""
