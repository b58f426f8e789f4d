"""LangChain adapters for localembed: ``LocalEmbeddings`` and bge-m3's ``LocalSparseEmbeddings``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_localembed.embeddings import LocalEmbeddings

if TYPE_CHECKING:
    from langchain_localembed.sparse import LocalSparseEmbeddings, SparseVector

__all__ = ["LocalEmbeddings", "LocalSparseEmbeddings", "SparseVector"]


def __getattr__(name: str) -> Any:
    # The sparse module imports langchain-qdrant when installed (slow); load it on first use.
    if name in {"LocalSparseEmbeddings", "SparseVector"}:
        from langchain_localembed import sparse

        return getattr(sparse, name)
    msg = f"module 'langchain_localembed' has no attribute {name!r}"
    raise AttributeError(msg)
