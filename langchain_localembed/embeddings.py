"""``LocalEmbeddings``: LangChain ``Embeddings`` over the shared localembed encoder."""

from __future__ import annotations

try:
    from langchain_core.embeddings import Embeddings
except ImportError as error:  # pragma: no cover - depends on the environment
    msg = "langchain_localembed needs LangChain: pip install 'localembed[langchain]'"
    raise ImportError(msg) from error

from localembed.adapters import EncoderAdapter, ato_lists, check_text, to_lists


class LocalEmbeddings(EncoderAdapter, Embeddings):
    """Local embedding model for LangChain; takes every :class:`~localembed.EncoderConfig` option.

    The model loads when the object is built; adapters with equal settings (LangChain or
    LlamaIndex) share one loaded model. Concurrent calls (threads or coroutines) share forward
    passes through the encoder's micro-batching worker; async calls leave the event loop free.

    Example:
        >>> from langchain_localembed import LocalEmbeddings
        >>> embeddings = LocalEmbeddings()  # the embedded all-MiniLM-L6-v2
        >>> vectors = embeddings.embed_documents(["Paris is in France.", "Cats purr."])
        >>> len(vectors), len(vectors[0])
        (2, 384)
        >>> round(sum(v * v for v in embeddings.embed_query("Where is Paris?")), 4)
        1.0

    """

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (with the document instruction, if any); one vector per text."""
        return to_lists(self.encoder.encode_documents(texts))

    def embed_query(self, text: str) -> list[float]:
        """Embed one search query (with the query instruction, if any)."""
        vector: list[float] = self.encoder.encode_queries([check_text(text)])[0].tolist()
        return vector

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents`, merged with concurrent calls into shared batches."""
        return await ato_lists(await self.encoder.aencode_documents(texts))

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`, merged with concurrent calls into shared batches."""
        vectors = await self.encoder.aencode_queries([check_text(text)])
        vector: list[float] = vectors[0].tolist()
        return vector
