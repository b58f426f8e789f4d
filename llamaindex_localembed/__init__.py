"""LlamaIndex adapters for localembed: ``LocalEmbedding`` and bge-m3's ``LocalSparseEmbedding``."""

from __future__ import annotations

from llamaindex_localembed.embedding import LocalEmbedding
from llamaindex_localembed.sparse import LocalSparseEmbedding

__all__ = ["LocalEmbedding", "LocalSparseEmbedding"]
