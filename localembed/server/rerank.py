"""``POST /v1/rerank``: rank documents for a query (Cohere's and TEI's rerank shape).

The reranker is ``--reranker MODEL`` (a cross-encoder, or bge-m3), loaded on the first
request with the served model's device and dtype; without it a served bge-m3 reranks by its
dense + sparse + ColBERT mix (the same shared encoder), and any other model answers 404.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from localembed.faults import NonFiniteEmbeddingError
from localembed.server.errors import ApiError, non_finite_error

if TYPE_CHECKING:
    from fastapi import FastAPI

    from localembed.reranker import LocalReranker
    from localembed.server.app import _State


class RerankRequest(BaseModel):
    """``POST /v1/rerank``: Cohere's rerank request."""

    model_config = ConfigDict(
        extra="forbid", protected_namespaces=(), use_attribute_docstrings=True
    )

    query: str
    """The query."""
    documents: list[str]
    """The candidate documents (at most the server's --max-client-batch); [] gives []."""
    top_n: int | None = Field(default=None, gt=0, strict=True)
    """Return the best N; None: all, best first."""
    return_documents: bool = False
    """Include each document's text in its result."""
    model: str | None = None
    """The reranker's id (see GET /info); None: the served reranker."""


class RerankDocument(BaseModel):
    """A returned document (``return_documents``)."""

    text: str


class RerankResult(BaseModel):
    """One ranked document; ``index`` is its position in ``documents``."""

    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    """``POST /v1/rerank`` response: the documents best first (ties keep input order)."""

    model: str
    results: list[RerankResult]


def add_rerank_route(
    app: FastAPI, state: _State, admit: Callable[[], None], release: Callable[[], None]
) -> None:
    """Register ``POST /v1/rerank`` on ``app`` (called by ``create_app``)."""
    lock = threading.Lock()
    loaded: dict[str, LocalReranker] = {}

    def reranker() -> LocalReranker:
        encoder = state.ready()
        with lock:
            if "reranker" in loaded:
                return loaded["reranker"]
            from localembed.config import ModelOptions
            from localembed.reranker import get_reranker

            config = state.config
            # The served model's device, dtype, batching and safety options.
            options: dict[str, Any] = {
                name: getattr(config, name)
                for name in config.model_fields_set & set(ModelOptions.model_fields)
            }
            name = state.settings.reranker
            if name is not None:
                options.pop("max_length", None)  # the served model's limit, not the reranker's
            elif state.sparse_error is None:  # a served bge-m3 reranks by its own heads
                name, options["scoring"] = str(encoder.source.path), "bge-m3"
            else:
                message = (
                    f"no reranker is served: {state.model_id!r} is not bge-m3; start the "
                    "server with --reranker MODEL (a cross-encoder such as "
                    "BAAI/bge-reranker-v2-m3)"
                )
                raise ApiError(404, message, code="reranker_not_served", param="model")
            try:
                loaded["reranker"] = get_reranker(**{**options, "model": name})
            except Exception as error:
                message = f"the reranker failed to load: {type(error).__name__}: {error}"
                raise ApiError(503, message, code="reranker_load_failed") from error
            return loaded["reranker"]

    @app.post(
        "/v1/rerank",
        response_model=RerankResponse,
        response_model_exclude_none=True,
        summary="Rank documents by relevance to a query (Cohere / TEI rerank)",
    )
    async def rerank(body: RerankRequest) -> dict[str, Any]:
        model = await asyncio.to_thread(reranker)
        names = {model.source.name, str(model.source.path), model.source.path.name}
        if state.settings.reranker is None:
            names |= state.names
        if body.model is not None and body.model not in names:
            message = (
                f"reranker {body.model!r} is not served here; this server reranks with "
                f"{model.source.name!r}"
            )
            raise ApiError(404, message, code="model_not_found", param="model")
        if len(body.documents) > state.settings.max_client_batch:
            message = (
                f"{len(body.documents)} documents in one request; this server takes at most "
                f"{state.settings.max_client_batch} (--max-client-batch)"
            )
            raise ApiError(413, message, code="too_many_inputs", param="documents")
        admit()
        try:
            if not state.settings.truncate:
                await asyncio.to_thread(_refuse_over_long, model, body.query, body.documents)
            ranked = await asyncio.to_thread(model.rerank, body.query, body.documents, body.top_n)
        except NonFiniteEmbeddingError as error:
            raise non_finite_error(error, "documents") from error
        except (TypeError, ValueError) as error:
            raise ApiError(400, str(error), code="invalid_input", param="documents") from error
        finally:
            release()
        results: list[dict[str, Any]] = []
        for index, score in ranked:
            result: dict[str, Any] = {"index": index, "relevance_score": score}
            if body.return_documents:
                result["document"] = {"text": body.documents[index]}
            results.append(result)
        return {"model": model.source.name, "results": results}


def _refuse_over_long(model: LocalReranker, query: str, documents: list[str]) -> None:
    """--no-truncate: a 400 naming the first pair (document) over the reranker's limit."""
    from localembed.texts import check_text, check_texts

    query = check_texts([check_text(query)])[0]
    documents = check_texts(documents)
    if model.encoder is not None:  # bge-m3 encodes the query and each document alone
        over = [row - 1 for row in model.encoder.tokenize([query, *documents]).truncated_rows]
        limit = model.encoder.settings.max_length
    else:
        over = list(model.tokenize([query] * len(documents), documents).truncated_rows)
        limit = model.max_length
    if not over:
        return
    if over[0] < 0:
        message = (
            f"the query is over the reranker's limit of {limit} tokens; shorten it, or start "
            "the server with --truncate"
        )
        raise ApiError(400, message, code="input_too_long", param="query")
    index = over[0]
    message = (
        f"documents[{index}] with the query is over the reranker's limit of {limit} tokens; "
        "shorten it, or start the server with --truncate"
    )
    raise ApiError(400, message, code="input_too_long", param=f"documents[{index}]")
