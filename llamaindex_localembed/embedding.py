"""``LocalEmbedding``: LlamaIndex ``BaseEmbedding`` over the shared localembed encoder."""

from __future__ import annotations

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
except ImportError:  # pragma: no cover - depends on the environment
    from localembed.extras import require

    require("llama_index.core", "llamaindex_localembed")
    raise

import asyncio
import functools
from typing import TYPE_CHECKING, Any, ClassVar

from llamaindex_localembed.settings import CheckedInputs, LlamaIndexEncoderConfig
from localembed.adapters import ato_lists, check_text, check_texts, refit_chunks, to_lists
from localembed.late_chunks import chunk_char_spans
from localembed.texts import repair_text

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from llama_index.core.node_parser import NodeParser, SentenceSplitter
    from llama_index.core.schema import BaseNode, Document


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

    huggingface_anchor: ClassVar[str | None] = "llamaindex"

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
        vectors = self.encoder.encode_documents(
            check_texts(texts), show_progress=self.show_progress
        )
        return to_lists(vectors)

    def node_parser(self, chunk_overlap: int = 0, **kwargs: Any) -> SentenceSplitter:
        """A LlamaIndex node parser whose nodes this model embeds whole (never truncated).

        A ``SentenceSplitter`` counting tokens with this model's tokenizer, sized to its
        window minus the special and document-instruction tokens (``encoder.chunk_size()``);
        it also leaves room for the metadata LlamaIndex embeds with each node. Each chunk is
        then measured as the encoder tokenizes it (instruction and chunk together,
        ``encoder.chunk_overflow``) and split again when it would overflow; text with
        invalid unicode (lone surrogates) is repaired as the encoder repairs it.

        Args:
            chunk_overlap: tokens shared by consecutive nodes.
            **kwargs: other ``SentenceSplitter`` arguments (``paragraph_separator``...).
        """
        encoder = self.encoder
        parser: SentenceSplitter = _fitted_parser_class()(
            chunk_size=encoder.chunk_size("document"),
            chunk_overlap=chunk_overlap,
            tokenizer=encoder.token_ids,
            **kwargs,
        )
        parser._overflow = encoder.chunk_overflow  # type: ignore[attr-defined]
        return parser

    def late_chunk_nodes(
        self, document: Document, node_parser: NodeParser | None = None
    ) -> list[BaseNode]:
        """``document``'s nodes, each embedded by late chunking (pooled from the whole text).

        The nodes come from ``node_parser`` (default: :meth:`node_parser`) and carry their
        ``embedding``, so ``VectorStoreIndex(nodes)`` stores them without embedding again.
        See :meth:`localembed.LocalEncoder.encode_late_chunks`.
        """
        from llama_index.core.schema import TextNode

        parser = node_parser or self.node_parser()
        nodes = parser.get_nodes_from_documents([document])
        text = repair_text(document.get_content())
        contents = [node.get_content() for node in nodes]
        vectors = self.encoder.encode_late_chunks(text, contents)
        # LlamaIndex finds each node from just after the previous one's start, which puts a
        # node whose words repeat inside an earlier one: keep the placement the vectors used.
        spans = chunk_char_spans(text, contents)
        for node, vector, (start, stop) in zip(nodes, to_lists(vectors), spans, strict=True):
            node.embedding = vector
            if isinstance(node, TextNode):
                node.start_char_idx, node.end_char_idx = start, stop
        return nodes

    GROUP_BATCHES: ClassVar[int] = 1
    """LlamaIndex batches (of ``embed_batch_size`` texts) per LlamaIndex call of a large
    :meth:`aget_text_embedding_batch` (each call's end validates them on the loop at once)."""

    GROUPS_IN_FLIGHT: ClassVar[int] = 16
    """LlamaIndex calls of a large :meth:`aget_text_embedding_batch` running at once (their
    batches are merged by the micro-batcher)."""

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> Any:
        """Async :meth:`get_text_embedding_batch`: LlamaIndex's, called once per batch.

        LlamaIndex validates and reports every batch's vectors on the event loop once all the
        batches of its call are done, in one piece: for 8,000 texts of 384 floats, 0.2 s on an
        idle 2-core machine, 1 s on a loaded one, whatever the model. Called over groups of
        :attr:`GROUP_BATCHES` batch (:attr:`GROUPS_IN_FLIGHT` at once), each piece is one
        batch's (about a millisecond), and the batches' calls end in loop iterations of their
        own. The events are LlamaIndex's (a start and an end per batch, the same payloads),
        one ``aget_text_embedding_batch`` span per group. With ``show_progress``,
        ``num_workers`` or an ``embeddings_cache``, LlamaIndex's method runs as it is.
        """
        texts = check_texts(texts)
        group = self.embed_batch_size * self.GROUP_BATCHES
        plain = not (show_progress or self.num_workers or getattr(self, "embeddings_cache", None))
        if not plain or len(texts) <= group:
            return await super().aget_text_embedding_batch(
                texts, show_progress=show_progress, **kwargs
            )
        gate = asyncio.Semaphore(self.GROUPS_IN_FLIGHT)

        async def part(start: int) -> Any:
            async with gate:
                return await super(LocalEmbedding, self).aget_text_embedding_batch(
                    texts[start : start + group], **kwargs
                )

        parts = await asyncio.gather(*(part(start) for start in range(0, len(texts), group)))
        return [vector for vectors in parts for vector in vectors]

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


@functools.cache
def _fitted_parser_class() -> type[SentenceSplitter]:
    """``SentenceSplitter`` whose chunks are checked against the encoder, text repaired."""
    from llama_index.core.node_parser import SentenceSplitter
    from pydantic import PrivateAttr

    class FittedSentenceSplitter(SentenceSplitter):
        """Chunks that overflow the window as the encoder tokenizes them are split again."""

        _overflow: Callable[[str], int] = PrivateAttr()

        def _parse_nodes(
            self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any
        ) -> list[BaseNode]:
            # LlamaIndex hashes each node's text as UTF-8: repair lone surrogates first.
            repaired = []
            for node in nodes:
                content = node.get_content()
                fixed = repair_text(content)
                if fixed is not content:
                    node = node.model_copy()
                    node.set_content(fixed)
                repaired.append(node)
            result: list[BaseNode] = super()._parse_nodes(repaired, show_progress, **kwargs)
            return result

        def _split_text(self, text: str, chunk_size: int) -> list[str]:
            # chunk_size is self.chunk_size less the node's metadata tokens.
            reserve = self.chunk_size - chunk_size
            plain = self.model_copy(update={"chunk_overlap": 0})

            def overflow(chunk: str) -> int:
                return self._overflow(chunk) + reserve

            def split(chunk: str, size: int) -> list[str]:
                return SentenceSplitter._split_text(plain, chunk, size)

            chunks = super()._split_text(text, chunk_size)
            return refit_chunks(chunks, chunk_size, overflow, split)

    return FittedSentenceSplitter
