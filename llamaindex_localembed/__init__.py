"""LlamaIndex adapters: ``LocalEmbedding``, ``LocalRerank``, ``LocalSparseEmbedding``."""

from __future__ import annotations

from llamaindex_localembed.embedding import LocalEmbedding
from llamaindex_localembed.rerank import LocalRerank
from llamaindex_localembed.sparse import LocalSparseEmbedding

__all__ = ["LocalEmbedding", "LocalRerank", "LocalSparseEmbedding"]
