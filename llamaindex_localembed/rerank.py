"""``LocalRerank``: a LlamaIndex node postprocessor over the shared localembed reranker."""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError:  # pragma: no cover - depends on the environment
    from localembed.extras import require

    require("llama_index.core", "llamaindex_localembed")
    raise

from pydantic import ConfigDict, Field

from localembed.errors import InputError
from localembed.reranker import LocalReranker, RerankerConfig, get_reranker

RETRIEVAL_SCORE_KEY = "retrieval_score"
"""Metadata key that keeps a node's retrieval score (``keep_retrieval_score=True``)."""


class LocalRerank(RerankerConfig, BaseNodePostprocessor):
    """Rerank retrieved nodes with a local cross-encoder (or bge-m3); keeps the ``top_n`` best.

    Takes every :class:`~localembed.RerankerConfig` option. Use it in a query engine:
    ``index.as_query_engine(node_postprocessors=[LocalRerank(model=..., top_n=5)])``. Each
    kept node's score becomes the reranker's score; ties keep the retrieval order.

    Example:
        >>> from llamaindex_localembed import LocalRerank
        >>> rerank = LocalRerank(model="BAAI/bge-reranker-base", top_n=3)  # doctest: +SKIP

    """

    # LlamaIndex assigns attributes after construction (e.g. callback_manager).
    model_config = ConfigDict(frozen=False, arbitrary_types_allowed=True, validate_assignment=True)

    top_n: int = Field(default=5, gt=0, strict=True)
    """Nodes kept after reranking."""

    keep_retrieval_score: bool = False
    """Keep each node's retrieval score in its metadata under "retrieval_score"."""

    def model_post_init(self, context: Any, /) -> None:
        """Load the model now, so that a bad setting fails here and not on first use."""
        get_reranker(self)

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex stores in ``to_dict`` and looks up in ``from_dict``."""
        return "LocalRerank"

    @property
    def reranker(self) -> LocalReranker:
        """The shared reranker behind this postprocessor."""
        return get_reranker(self)

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            msg = "LocalRerank needs the query: pass query_bundle or query_str"
            raise InputError(msg)
        if not nodes:
            return []
        documents = [node.node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            ranked = self.reranker.rerank(query_bundle.query_str, documents, top_n=self.top_n)
            kept = []
            for index, score in ranked:
                node = nodes[index]
                if self.keep_retrieval_score:
                    node.node.metadata[RETRIEVAL_SCORE_KEY] = node.score
                kept.append(NodeWithScore(node=node.node, score=score))
            event.on_end(payload={EventPayload.NODES: kept})
        return kept
