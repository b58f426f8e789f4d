"""``LocalSparseEmbeddings``: bge-m3 lexical weights for LangChain, as sparse vectors.

The class implements langchain-qdrant's ``SparseEmbeddings`` interface (``embed_documents``
and ``embed_query`` returning ``SparseVector(indices, values)``), so it plugs into
``QdrantVectorStore(sparse_embedding=...)`` for sparse or hybrid retrieval. When
langchain-qdrant is installed the classes derive from its ``SparseEmbeddings`` and
``SparseVector``; without it, from small stand-ins with the same fields and methods.
"""

from __future__ import annotations

import asyncio
import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from localembed.adapters import EncoderAdapter, check_text, check_texts

__all__ = ["LANGCHAIN_QDRANT", "LocalSparseEmbeddings", "SparseVector"]


class _FallbackSparseVector(BaseModel):
    """langchain-qdrant's ``SparseVector`` fields, for when it is not installed."""

    model_config = ConfigDict(extra="forbid")

    indices: list[int] = Field(..., description="indices must be unique")
    values: list[float] = Field(..., description="values and indices must be the same length")


class _FallbackSparseEmbeddings(ABC):
    """langchain-qdrant's ``SparseEmbeddings`` interface, for when it is not installed."""

    @abstractmethod
    def embed_documents(self, texts: list[str]) -> list[Any]:
        """Embed search documents."""

    @abstractmethod
    def embed_query(self, text: str) -> Any:
        """Embed a query."""


def _interface() -> tuple[type, type]:
    try:
        module = importlib.import_module("langchain_qdrant.sparse_embeddings")
    except ImportError:
        return _FallbackSparseVector, _FallbackSparseEmbeddings
    return module.SparseVector, module.SparseEmbeddings


if TYPE_CHECKING:
    _VectorBase = _FallbackSparseVector
    _EmbeddingsBase = _FallbackSparseEmbeddings
else:
    _VectorBase, _EmbeddingsBase = _interface()

LANGCHAIN_QDRANT: bool = _VectorBase is not _FallbackSparseVector
"""Whether the classes derive from langchain-qdrant's (it is installed)."""


class SparseVector(_VectorBase):
    """A sparse vector: token ids (ascending) and their weights.

    A langchain-qdrant ``SparseVector`` when that package is installed.
    """

    tokens: list[str] | None = None
    """Each index's token text (``convert_to_tokens=True``), for reading; else None."""


class LocalSparseEmbeddings(EncoderAdapter, _EmbeddingsBase):
    """bge-m3 sparse vectors for LangChain; takes every :class:`~localembed.EncoderConfig` option.

    The model must be a bge-m3 model (with ``sparse_linear.pt``); the weights are
    FlagEmbedding's ``lexical_weights``. The model loads when the object is built and is
    shared with every adapter of equal settings, dense ones included. Async methods run in
    a worker thread, so the event loop stays responsive.

    Example:
        >>> from langchain_qdrant import QdrantVectorStore, RetrievalMode  # doctest: +SKIP
        >>> from langchain_localembed import LocalEmbeddings, LocalSparseEmbeddings
        >>> store = QdrantVectorStore.from_texts(  # doctest: +SKIP
        ...     ["Paris is in France."],
        ...     embedding=LocalEmbeddings(model="BAAI/bge-m3"),
        ...     sparse_embedding=LocalSparseEmbeddings(model="BAAI/bge-m3"),
        ...     retrieval_mode=RetrievalMode.HYBRID,
        ...     location=":memory:",
        ... )

    """

    required_heads: ClassVar[tuple[str, ...]] = ("sparse",)
    caches_output: ClassVar[bool] = False  # sparse weights are not cached (cache= refused)

    convert_to_tokens: bool = False
    """Also give each index's token text (``SparseVector.tokens``), for reading."""

    def _vectors(self, texts: list[str], instruction: str) -> list[SparseVector]:
        encoder = self.encoder
        output = encoder.encode_m3(texts, dense=False, sparse=True, instruction=instruction)
        vectors = []
        for weights in output.sparse or []:
            indices = sorted(weights)
            tokens = None
            if self.convert_to_tokens:
                tokens = [str(encoder.tokenizer.decode([index])) for index in indices]
            vectors.append(
                SparseVector(
                    indices=indices, values=[weights[index] for index in indices], tokens=tokens
                )
            )
        return vectors

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        """Sparse vectors of documents (with the document instruction, if any), one per text."""
        return self._vectors(check_texts(texts), self.encoder.settings.document_instruction)

    def embed_query(self, text: str) -> SparseVector:
        """The sparse vector of one search query (with the query instruction, if any)."""
        return self._vectors([check_text(text)], self.encoder.settings.query_instruction)[0]

    async def aembed_documents(self, texts: list[str]) -> list[SparseVector]:
        """:meth:`embed_documents` in a worker thread."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> SparseVector:
        """:meth:`embed_query` in a worker thread."""
        return await asyncio.to_thread(self.embed_query, text)
