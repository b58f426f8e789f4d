"""``LocalEmbeddings``: LangChain ``Embeddings`` over the shared localembed encoder."""

from __future__ import annotations

try:
    from langchain_core.embeddings import Embeddings
except ImportError:  # pragma: no cover - depends on the environment
    from localembed.extras import require

    require("langchain_core.embeddings", "langchain_localembed")
    raise

import functools
from typing import TYPE_CHECKING, Any, ClassVar

from localembed.adapters import EncoderAdapter, ato_lists, check_text, refit_chunks, to_lists

if TYPE_CHECKING:
    from collections.abc import Callable

    from langchain_text_splitters import TextSplitter


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

    huggingface_anchor: ClassVar[str | None] = "langchain"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (with the document instruction, if any); one vector per text."""
        return to_lists(self.encoder.encode_documents(texts, show_progress=self.show_progress))

    def embed_query(self, text: str) -> list[float]:
        """Embed one search query (with the query instruction, if any)."""
        vector: list[float] = self.encoder.encode_queries([check_text(text)])[0].tolist()
        return vector

    def embed_late_chunks(self, text: str, chunks: list[str]) -> list[list[float]]:
        """Late chunking: each chunk's vector pooled from one pass over the whole ``text``.

        ``chunks`` are consecutive substrings of ``text``, e.g.
        ``self.text_splitter().split_text(text)``; store them with these vectors
        (``vector_store.add_embeddings(zip(chunks, vectors))``). See
        :meth:`localembed.LocalEncoder.encode_late_chunks`.
        """
        return to_lists(self.encoder.encode_late_chunks(text, chunks))

    def text_splitter(self, chunk_overlap: int = 0, **kwargs: Any) -> TextSplitter:
        """A LangChain text splitter whose chunks this model embeds whole (never truncated).

        A ``RecursiveCharacterTextSplitter`` (paragraphs, then lines, then words) counting
        tokens with this model's tokenizer, sized to its window minus the special and
        document-instruction tokens (``encoder.chunk_size()``); each chunk is then measured
        as the encoder tokenizes it (instruction and chunk together,
        ``encoder.chunk_overflow``) and split again when it would overflow.

        Args:
            chunk_overlap: tokens shared by consecutive chunks.
            **kwargs: other ``RecursiveCharacterTextSplitter`` arguments (``separators``...).
        """
        encoder = self.encoder
        splitter: TextSplitter = _fitted_splitter_class()(
            overflow=encoder.chunk_overflow,
            chunk_size=encoder.chunk_size("document"),
            chunk_overlap=chunk_overlap,
            length_function=encoder.count_tokens,
            **kwargs,
        )
        return splitter

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents`, merged with concurrent calls into shared batches."""
        return await ato_lists(await self.encoder.aencode_documents(texts))

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`, merged with concurrent calls into shared batches."""
        vectors = await self.encoder.aencode_queries([check_text(text)])
        vector: list[float] = vectors[0].tolist()
        return vector


@functools.cache
def _fitted_splitter_class() -> Callable[..., TextSplitter]:
    """``RecursiveCharacterTextSplitter`` whose chunks are checked against the encoder."""
    try:
        from langchain_text_splitters import RecursiveCharacterTextSplitter
    except ImportError:  # pragma: no cover - depends on the environment
        from localembed.extras import require

        require("langchain_text_splitters", "text_splitter")
        raise

    class FittedTextSplitter(RecursiveCharacterTextSplitter):
        """Chunks that overflow the window as the encoder tokenizes them are split again."""

        def __init__(self, *, overflow: Callable[[str], int], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._overflow = overflow
            self._options = kwargs

        def split_text(self, text: str) -> list[str]:
            def split(chunk: str, size: int) -> list[str]:
                options = {**self._options, "chunk_size": size, "chunk_overlap": 0}
                return RecursiveCharacterTextSplitter(**options).split_text(chunk)

            chunks = super().split_text(text)
            return refit_chunks(chunks, self._chunk_size, self._overflow, split)

    return FittedTextSplitter
