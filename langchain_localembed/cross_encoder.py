"""``LocalCrossEncoder``: LangChain ``BaseCrossEncoder`` over the shared localembed reranker."""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from langchain_core.cross_encoders import BaseCrossEncoder
except ImportError:  # pragma: no cover - depends on the environment
    from localembed.extras import require

    require("langchain_core.cross_encoders", "langchain_localembed")
    raise

from pydantic import ConfigDict

from localembed.reranker import LocalReranker, RerankerConfig, get_reranker


class LocalCrossEncoder(RerankerConfig, BaseCrossEncoder):
    """Local cross-encoder for LangChain; takes every :class:`~localembed.RerankerConfig` option.

    Use it in ``CrossEncoderReranker(model=LocalCrossEncoder(model=...), top_n=5)`` inside a
    ``ContextualCompressionRetriever``. The model loads when the object is built; adapters
    with equal settings (LangChain or LlamaIndex) share one loaded model.

    Example:
        >>> from langchain_localembed import LocalCrossEncoder
        >>> encoder = LocalCrossEncoder(model="BAAI/bge-reranker-base")  # doctest: +SKIP
        >>> pairs = [("Where is Paris?", "Paris is in France."), ("Where is Paris?", "Cats.")]
        >>> encoder.score(pairs)  # doctest: +SKIP
        [0.99, 0.0001]

    """

    model_config = ConfigDict(frozen=False, validate_assignment=True)

    def model_post_init(self, context: Any, /) -> None:
        """Load the model now, so that a bad setting fails here and not on first use."""
        get_reranker(self)

    @property
    def reranker(self) -> LocalReranker:
        """The shared reranker behind this adapter."""
        return get_reranker(self)

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """Relevance of each (query, document) pair; item i belongs to text_pairs[i]."""
        scores: list[float] = self.reranker.score(text_pairs).tolist()
        return scores

    async def ascore(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """Async :meth:`score`, computed in a worker thread (the event loop stays free)."""
        return await asyncio.to_thread(self.score, text_pairs)
