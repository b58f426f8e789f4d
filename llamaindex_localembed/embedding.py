"""``LocalEmbedding``: LlamaIndex ``BaseEmbedding`` over the shared localembed encoder."""

from __future__ import annotations

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
except ImportError as error:  # pragma: no cover - depends on the environment
    msg = "llamaindex_localembed needs LlamaIndex: pip install 'localembed[llamaindex]'"
    raise ImportError(msg) from error

from llamaindex_localembed.settings import CheckedInputs, LlamaIndexEncoderConfig
from localembed.adapters import ato_lists, check_text, check_texts, to_lists


class LocalEmbedding(LlamaIndexEncoderConfig, CheckedInputs, BaseEmbedding):
    """Local embedding model for LlamaIndex; takes every :class:`~localembed.EncoderConfig` option.

    Use it as ``Settings.embed_model = LocalEmbedding()``. The model loads when the object is
    built; adapters with equal settings (LlamaIndex or LangChain) share one loaded model.

    Example:
        >>> from llamaindex_localembed import LocalEmbedding
        >>> embed_model = LocalEmbedding()  # the embedded all-MiniLM-L6-v2
        >>> embed_model.model_name
        'sentence-transformers/all-MiniLM-L6-v2'
        >>> len(embed_model.get_text_embedding("Cats purr."))
        384

    """

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex stores in ``to_dict`` and looks up in ``from_dict``."""
        return "LocalEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        vector: list[float] = self.encoder.encode_queries([check_text(query)])[0].tolist()
        return vector

    def _get_text_embedding(self, text: str) -> list[float]:
        vector: list[float] = self.encoder.encode_documents([check_text(text, "text")])[0].tolist()
        return vector

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return to_lists(self.encoder.encode_documents(check_texts(texts)))

    # Async calls are merged with concurrent calls into shared batches (localembed.microbatch).
    async def _aget_query_embedding(self, query: str) -> list[float]:
        vectors = await self.encoder.aencode_queries([check_text(query)])
        vector: list[float] = vectors[0].tolist()
        return vector

    async def _aget_text_embedding(self, text: str) -> list[float]:
        vectors = await self.encoder.aencode_documents([check_text(text, "text")])
        vector: list[float] = vectors[0].tolist()
        return vector

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await ato_lists(await self.encoder.aencode_documents(check_texts(texts)))
