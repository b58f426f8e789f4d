"""``POST /v1/rerank``: rank documents for a query (Cohere's rerank shape), per served model.

The reranker is the model the request names (``model``; None: the default reranker): a
served cross-encoder (``--reranker``, ``kind = "reranker"``), or a served bge-m3, which
reranks by its own dense + sparse + ColBERT mix over the same loaded model. The TEI route
``POST /rerank`` (:mod:`localembed.server.tei`) uses :func:`rerank_documents` too.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from localembed.server.embeddings import state_of
from localembed.server.errors import ApiError, api_error_of
from localembed.server.gate import bearer_token

if TYPE_CHECKING:
    from localembed.encoder import LocalEncoder
    from localembed.reranker import LocalReranker
    from localembed.server.state import ServedModel, ServerState

router = APIRouter()


class DocumentObject(BaseModel):
    """A document as an object (Cohere's v1 shape): its ``text`` is ranked.

    Its other fields are ignored.
    """

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    text: str
    """The document's text."""


class RerankRequest(BaseModel):
    """``POST /v1/rerank``: Cohere's rerank request."""

    model_config = ConfigDict(
        extra="forbid", protected_namespaces=(), use_attribute_docstrings=True
    )

    query: str
    """The query."""
    documents: list[str | DocumentObject]
    """The candidate documents, texts or ``{"text": ...}`` objects (at most the server's
    --max-client-batch); [] gives []."""
    top_n: int | None = Field(default=None, gt=0, strict=True)
    """Return the best N; None: all, best first."""
    return_documents: bool = False
    """Include each document's text in its result."""
    model: str | None = None
    """The reranker's id (see GET /v1/models); None: the default reranker (or a served
    bge-m3)."""


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


def reranker_for(request: Request, name: str | None) -> tuple[ServedModel, bool]:
    """The served model that reranks for a request, and whether it is a bge-m3 encoder.

    None names the default reranker, else the default embedding model (which must be
    bge-m3). 404 when nothing served can rerank.
    """
    from localembed.server.embeddings import ROUTED_MODEL

    state = state_of(request)
    name = name or request.scope.get(ROUTED_MODEL)
    if name is None:
        found = state.default("reranker") or state.default("embedding")
    else:
        model_id = state.names.get(name)
        found = None if model_id is None else state.models[model_id]
    # Nothing found: lookup's 404 names the rerankers served.
    served = found or state.lookup(name, "reranker")
    state.authorize(served, bearer_token(request.headers.get("authorization")))
    return served, served.kind == "embedding"


async def m3_reranker(state: ServerState, served: ServedModel, encoder: LocalEncoder) -> Any:
    """The bge-m3 reranker over a served embedding model (made once per load), or 404."""
    from localembed.server.sparse import check_sparse

    if await check_sparse(served, encoder) is not None:
        rerankers = [m.id for m in state.models.values() if m.kind == "reranker"]
        message = f"{served.id!r} is not bge-m3, so it cannot rerank; " + (
            f"this server's rerankers: {', '.join(map(repr, rerankers))}"
            if rerankers
            else "start the server with --reranker MODEL (a cross-encoder such as "
            "BAAI/bge-reranker-v2-m3)"
        )
        raise ApiError(404, message, code="reranker_not_served", param="model")
    if "reranker" not in served.extras:
        from localembed.config import RerankerConfig
        from localembed.reranker import LocalReranker

        # Over the served encoder itself: no second copy of the weights, outside the cap.
        config = RerankerConfig(model=str(encoder.source.path), scoring="bge-m3")
        served.extras["reranker"] = await asyncio.to_thread(
            lambda: LocalReranker(config, encoder=encoder)
        )
    return served.extras["reranker"]


async def rerank_documents(
    request: Request,
    name: str | None,
    query: str,
    documents: list[str],
    top_n: int | None,
    *,
    truncate: bool,
) -> tuple[ServedModel, list[tuple[int, float]]]:
    """Rank ``documents`` for ``query`` with the reranker ``name`` names; best first."""
    state = state_of(request)
    served, via_encoder = reranker_for(request, name)
    if len(documents) > state.settings.max_client_batch:
        message = (
            f"{len(documents)} documents in one request; this server takes at most "
            f"{state.settings.max_client_batch} (--max-client-batch)"
        )
        raise ApiError(413, message, code="too_many_inputs", param="documents")
    async with state.use(served) as loaded:
        model: LocalReranker = await m3_reranker(state, served, loaded) if via_encoder else loaded
        try:
            if not truncate:
                await asyncio.to_thread(_refuse_over_long, model, query, documents)
            if model.encoder is None and model.num_labels == 1:  # a cross-encoder
                batcher = served.extras.setdefault("pair_batcher", PairBatcher(model))
                ranked = await batcher.rerank(query, documents, top_n)
            else:
                ranked = await asyncio.to_thread(model.rerank, query, documents, top_n)
        except ApiError:
            raise
        except Exception as error:
            mapped = api_error_of(error, "documents")
            if mapped is None:
                raise
            raise mapped from error
    state.metrics.texts.labels(served.id).inc(len(documents))
    return served, ranked


@router.post(
    "/v1/rerank",
    response_model=RerankResponse,
    response_model_exclude_none=True,
    summary="Rank documents by relevance to a query (Cohere's rerank API)",
)
async def rerank(body: RerankRequest, request: Request) -> dict[str, Any]:
    """Rank ``documents`` for ``query``; ``results`` best first (ties keep input order)."""
    state = state_of(request)
    documents = [item if isinstance(item, str) else item.text for item in body.documents]
    served, ranked = await rerank_documents(
        request,
        body.model,
        body.query,
        documents,
        body.top_n,
        truncate=state.settings.truncate,
    )
    results: list[dict[str, Any]] = []
    for index, score in ranked:
        result: dict[str, Any] = {"index": index, "relevance_score": score}
        if body.return_documents:
            result["document"] = {"text": documents[index]}
        results.append(result)
    return {"model": served.id, "results": results}


class PairBatcher:
    """Merges the rerank requests of one cross-encoder that arrive while it runs.

    The requests waiting when a forward pass ends are scored together in the next
    ``score`` call (one token-budget batching over all their pairs), then each gets its own
    scores back, ranked as :meth:`LocalReranker.rerank` ranks them. A lone request runs
    exactly as ``rerank`` would. When a merged call fails, each of its requests is scored
    again alone, so that one request's error (say, a NaN score) names its own documents
    and fails only that request.
    """

    def __init__(self, model: LocalReranker) -> None:
        self.model = model
        self._queue: list[tuple[str, list[str], asyncio.Future[Any]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def rerank(
        self, query: str, documents: list[str], top_n: int | None
    ) -> list[tuple[int, float]]:
        """``[(index, score), ...]`` best first, as ``LocalReranker.rerank``."""
        import numpy as np

        if not documents or top_n == 0:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((query, documents, future))
        if not self._running:
            self._running = True
            self._task = loop.create_task(self._work())
        scores = await future
        order = np.argsort(-scores, kind="stable")[:top_n]
        return [(int(index), float(scores[index])) for index in order]

    async def _work(self) -> None:
        try:
            while self._queue:
                taken, self._queue = self._queue, []
                pairs = [
                    (query, document) for query, documents, _ in taken for document in documents
                ]
                try:
                    scores = await asyncio.to_thread(self.model.score, pairs)
                except Exception as error:
                    if len(taken) == 1:
                        _settle(taken[0][2], error=error)
                        continue
                    for query, documents, future in taken:  # alone: its own error
                        try:
                            alone = await asyncio.to_thread(
                                self.model.score, [(query, document) for document in documents]
                            )
                        except Exception as own:
                            _settle(future, error=own)
                        else:
                            _settle(future, alone)
                    continue
                start = 0
                for _, documents, future in taken:
                    _settle(future, scores[start : start + len(documents)])
                    start += len(documents)
        finally:
            self._running = False


def _settle(
    future: asyncio.Future[Any], result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


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
