"""LlamaIndex adapter for localembed: ``LocalEmbedding``."""

from __future__ import annotations

from llamaindex_localembed.embedding import LocalEmbedding

__all__ = ["LocalEmbedding"]
