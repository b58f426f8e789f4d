"""LangChain adapter for localembed: ``LocalEmbeddings``."""

from __future__ import annotations

from langchain_localembed.embeddings import LocalEmbeddings

__all__ = ["LocalEmbeddings"]
