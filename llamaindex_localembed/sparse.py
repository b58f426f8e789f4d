"""``LocalSparseEmbedding``: LlamaIndex ``BaseSparseEmbedding`` over bge-m3's lexical weights."""

from __future__ import annotations

import asyncio
from typing import ClassVar

try:
    from llama_index.core.base.embeddings.base_sparse import BaseSparseEmbedding
except ImportError:  # pragma: no cover - depends on the environment
    from localembed.extras import require

    require("llama_index.core", "llamaindex_localembed")
    raise

from llamaindex_localembed.settings import CheckedInputs, LlamaIndexEncoderConfig
from localembed.adapters import check_text, check_texts
from localembed.m3 import lexical_tokens


class LocalSparseEmbedding(LlamaIndexEncoderConfig, CheckedInputs, BaseSparseEmbedding):
    """bge-m3 sparse vectors for LlamaIndex: ``{token_id: weight}`` per text.

    Takes every :class:`~localembed.EncoderConfig` option; the model must be a bge-m3 model
    (with ``sparse_linear.pt``). The weights are FlagEmbedding's ``lexical_weights``. The
    model loads when the object is built and is shared with every adapter of equal
    settings, dense ones included. Async methods run in a worker thread.

    Example:
        >>> from llamaindex_localembed import LocalSparseEmbedding
        >>> sparse = LocalSparseEmbedding(model="BAAI/bge-m3")  # doctest: +SKIP
        >>> weights = sparse.get_text_embedding("Paris is in France.")  # doctest: +SKIP

    """

    required_heads: ClassVar[tuple[str, ...]] = ("sparse",)

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex stores when it serializes the component."""
        return "LocalSparseEmbedding"

    def as_tokens(self, embedding: dict[int, float]) -> dict[str, float]:
        """The same weights keyed by token text, for reading.

        LlamaIndex requires token-id keys (its events validate ``dict[int, float]``), so the
        embedding methods always return ids; this converts one result. Each id is decoded on
        its own, as FlagEmbedding's ``convert_id_to_token`` does.

        Args:
            embedding: a ``{token_id: weight}`` result of this model.

        Returns:
            ``{token_text: weight}``; ids that decode to the same text keep the larger weight.
        """
        return lexical_tokens(embedding, self.encoder.tokenizer)

    def _weights(self, texts: list[str], instruction: str) -> list[dict[int, float]]:
        output = self.encoder.encode_m3(texts, dense=False, sparse=True, instruction=instruction)
        return list(output.sparse or [])

    def _get_query_embedding(self, query: str) -> dict[int, float]:
        text = check_text(query)
        return self._weights([text], self.encoder.settings.query_instruction)[0]

    def _get_text_embedding(self, text: str) -> dict[int, float]:
        item = check_text(text, "text")
        return self._weights([item], self.encoder.settings.document_instruction)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[dict[int, float]]:
        items = check_texts(texts)
        return self._weights(items, self.encoder.settings.document_instruction)

    async def _aget_query_embedding(self, query: str) -> dict[int, float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> dict[int, float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[dict[int, float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
