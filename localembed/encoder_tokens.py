"""The encoder's token methods: tokenize, count tokens, size chunks, late chunking.

:class:`TokenMethods` is the part of :class:`~localembed.encoder.LocalEncoder` that works on
a model's tokens rather than its vectors: the windows a text becomes, how many tokens a text
or chunk has against ``max_length`` (the text splitters' rule), the batches windows are
planned in, and late chunking (chunk vectors pooled from one pass over the whole text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from localembed.encoder_base import EncoderBase
from localembed.errors import InputError
from localembed.texts import (
    KINDS,
    Kind,
    apply_instruction,
    check_text,
    instructed,
    ordered_items,
    repair_text,
)
from localembed.windows import Tokenized

if TYPE_CHECKING:
    import numpy as np

    from localembed.backends.base import WindowBackend

__all__ = ["TokenMethods"]


class TokenMethods(EncoderBase):
    """Tokens of texts and chunks for this model: windows, counts, chunk sizes, late chunks."""

    def tokenize(self, texts: Sequence[str], instruction: str | None = None) -> Tokenized:
        """Check, instruct and tokenize ``texts`` into model-ready windows (no padding).

        With ``long_text="truncate"`` each text gives one window (its first ``max_length``
        tokens) and over-long texts are counted and warned about; with ``"chunk"`` an
        over-long text gives several overlapping windows.
        """
        return self.backend.tokenize(instructed(texts, instruction), self._options(None))

    def token_ids(self, text: str) -> list[int]:
        """The ids of ``text``'s own tokens (no special tokens, no instruction, no cut).

        Example:
            >>> from localembed import get_encoder
            >>> get_encoder().token_ids("Cats purr")
            [8870, 16405, 12171]

        """
        return self._windows.token_ids(repair_text(check_text(text, "text")))

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` has for this model (a text splitter's length function).

        Example:
            >>> from localembed import get_encoder
            >>> get_encoder().count_tokens("Cats purr")
            3

        """
        return len(self.token_ids(text))

    def chunk_size(self, kind: Kind = "document") -> int:
        """The most tokens a chunk may have and be embedded whole as a ``kind``.

        ``max_length`` minus the special tokens minus the instruction's tokens: a chunk of at
        most this many tokens (by :meth:`count_tokens`) fits, unless the instruction and the
        chunk tokenize differently together (see :meth:`chunk_overflow`, which the splitters
        ``LocalEmbeddings.text_splitter()`` and ``LocalEmbedding.node_parser()`` also check).

        Example:
            >>> from localembed import get_encoder
            >>> get_encoder().chunk_size()  # 256 tokens - [CLS] - [SEP]
            254

        """
        instruction = self.chunk_instruction(kind)
        used = self._windows.special_tokens + self.count_tokens(
            apply_instruction(instruction, "") if instruction else ""
        )
        size = self.settings.max_length - used
        if size < 1:
            msg = (
                f"max_length {self.settings.max_length} leaves no room for text after "
                f"{used} special and instruction tokens"
            )
            raise InputError(msg)
        return size

    def chunk_overflow(self, chunk: str, kind: Kind = "document") -> int:
        """How many tokens ``chunk`` exceeds the window by, as the encoder will tokenize it.

        Counts the instructed text (instruction and chunk tokenized together, as
        :meth:`encode_documents` does: with an instruction such as ``"passage:"`` a
        sentencepiece tokenizer joins its end to the chunk's first word) plus the special
        tokens; zero or less: the chunk is embedded whole. The splitters of both adapters
        split again any chunk with a positive overflow.

        Example:
            >>> from localembed import get_encoder
            >>> get_encoder().chunk_overflow("Cats purr")  # 5 of 256 tokens
            -251

        """
        instruction = self.chunk_instruction(kind)
        text = repair_text(check_text(chunk, "chunk"))
        instructed = apply_instruction(instruction, text) if instruction else text
        used = len(self._windows.token_ids(instructed)) + self._windows.special_tokens
        return used - self.settings.max_length

    def chunk_instruction(self, kind: Kind = "document") -> str:
        """The instruction a chunk of ``kind`` is embedded with ("" when none)."""
        if kind not in KINDS:
            msg = f"kind must be 'document' or 'query', got {kind!r}"
            raise InputError(msg)
        return self.settings.instruction(kind)

    def encode_late_chunks(self, text: str, chunks: Sequence[str]) -> np.ndarray:
        """Late chunking: one vector per chunk, pooled from one pass over the whole ``text``.

        Each chunk's vector pools its own tokens, which attended to the whole document (with
        the document instruction); see :mod:`localembed.late_chunks`.

        Args:
            text: the whole document.
            chunks: consecutive substrings of ``text`` (e.g. from a text splitter); they may
                overlap or skip whitespace between them.

        Returns:
            A float32 (len(chunks), dimension) array, normalized when ``normalize`` is on and
            cut to ``truncate_dim``.

        Raises:
            InputError: a chunk not found in the text in order (named), or a backend without
                token vectors (``backend="flagembedding"``).

        Example:
            >>> from localembed import get_encoder
            >>> text = "Berlin is in Germany. It has 3.8 million people."
            >>> get_encoder().encode_late_chunks(text, ["Berlin is in Germany.", "It has"]).shape
            (2, 384)

        """
        from localembed.late_chunks import (
            DocumentTokens,
            chunk_char_spans,
            gather_token_vectors,
            plan_late_chunks,
        )
        from localembed.pooling import pool_spans

        text = repair_text(check_text(text, "text"))
        # The same repair as the text's, so a chunk with a lone surrogate is still found.
        items = ordered_items(chunks, "str (chunks)")
        spans = chunk_char_spans(text, [repair_text(c) if isinstance(c, str) else c for c in items])
        self._require("token_embeddings", "encode_late_chunks (token_embeddings)")
        instruction = self.settings.document_instruction
        instructed = apply_instruction(instruction, text) if instruction else text
        # Where the text starts in the instructed string: after a prefix, or at "{text}".
        text_start = instruction.find("{text}") if "{text}" in instruction else len(instruction)
        try:
            ids, offsets, special = self._windows.encode_whole(instructed)
        except NotImplementedError as error:
            msg = "late chunking needs a fast tokenizer (character offsets)"
            raise InputError(msg) from error
        plan = plan_late_chunks(
            DocumentTokens(ids, offsets, special),
            spans,
            text_start=text_start,
            max_length=self.settings.max_length,
        )
        windows = Tokenized(
            ids=plan.windows,
            owners=list(range(len(plan.windows))),
            count=len(plan.windows),
            truncated=0,
            chunked=False,
        )
        outputs = self.backend.token_embeddings(windows, self._options(None))
        tokens = gather_token_vectors(plan, [o.vectors for o in outputs])
        rows = pool_spans(tokens, plan.spans, self.settings.pooling, self.settings.normalize)
        return self.finish(rows)

    def batches(self, ids: list[list[int]], batch_size: int | None = None) -> list[list[int]]:
        """Group window indices into batches (see :func:`localembed.batching.plan_batches`)."""
        self._require("windows", "planning batches")
        backend: WindowBackend = self.backend  # type: ignore[assignment]
        options = self._options(batch_size)
        return backend.plan([len(w) for w in ids], options)
