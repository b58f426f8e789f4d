"""LangChain adapters: ``LocalEmbeddings``, ``LocalCrossEncoder``, ``LocalSparseEmbeddings``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_localembed.cross_encoder import LocalCrossEncoder
from langchain_localembed.embeddings import LocalEmbeddings

if TYPE_CHECKING:
    from langchain_localembed.sparse import LocalSparseEmbeddings, SparseVector

__all__ = ["LocalCrossEncoder", "LocalEmbeddings", "LocalSparseEmbeddings", "SparseVector"]


def __getattr__(name: str) -> Any:
    # The sparse module imports langchain-qdrant when installed (slow); load it on first use.
    if name in {"LocalSparseEmbeddings", "SparseVector"}:
        from langchain_localembed import sparse

        return getattr(sparse, name)
    msg = f"module 'langchain_localembed' has no attribute {name!r}"
    raise AttributeError(msg)
