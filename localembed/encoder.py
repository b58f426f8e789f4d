"""LocalEncoder: a thin facade over the stages; ``get_encoder`` shares loaded models.

The work is done by stages, each a module owning one idea:

- :mod:`localembed.texts`: input checks and instructions;
- :mod:`localembed.settings`: one precedence (argument > sentence-transformers metadata >
  preset > fallback) for every setting, with sources;
- :mod:`localembed.windows`: texts -> token windows (truncate / chunk) and back;
- :mod:`localembed.batching`: length-sorted token-budget batches, padding, out-of-memory split;
- :mod:`localembed.runtimes`: torch / ONNX, device and dtype;
- heads: :mod:`localembed.pooling` (dense), :mod:`localembed.m3` (bge-m3 sparse / ColBERT);
- :mod:`localembed.backends`: the loaded model behind one interface (transformers on a
  runtime, or :mod:`localembed.flagembedding`), chosen in one place.

``get_encoder`` returns one shared instance per configuration, and encoders whose settings
differ only in call-time options (``batch_size``, ``max_batch_tokens``, ``long_text``,
instructions) share one loaded model, so adapters with such settings hold one model in memory.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from localembed.backends import (
    Backend,
    CallOptions,
    ModelFiles,
    TokenEmbeddings,
    load_backend,
    read_model_files,
)
from localembed.batching import (
    DEFAULT_BATCH_TOKENS,
    ForwardBatch,
    padding_id,
    plan_batches,
    run_batches,
    token_budget,
)
from localembed.config import EncoderConfig
from localembed.faults import NonFiniteEmbeddingError
from localembed.precision import Precision, check_precision, quantize
from localembed.runtimes import resolve_device, resolve_dtype
from localembed.settings import ResolvedSettings, model_length_limit, resolve_settings
from localembed.sharing import SharedModels
from localembed.texts import (
    apply_instruction,
    check_text,
    check_texts,
    ordered_items,
    repair_text,
)
from localembed.windows import (
    CHARS_PER_TOKEN_BOUND,
    CHUNK_OVERLAP_DIVISOR,
    Tokenized,
    combine_windows,
)

if TYPE_CHECKING:
    import torch

    from localembed.m3 import M3Output
    from localembed.microbatch import MicroBatcher

__all__ = [
    "CHARS_PER_TOKEN_BOUND",
    "CHUNK_OVERLAP_DIVISOR",
    "DEFAULT_BATCH_TOKENS",
    "OUTPUTS",
    "CallOptions",
    "ForwardBatch",
    "LocalEncoder",
    "NonFiniteEmbeddingError",
    "ResolvedSettings",
    "TokenEmbeddings",
    "Tokenized",
    "check_text",
    "check_texts",
    "clear_encoder_cache",
    "get_encoder",
    "model_length_limit",
    "padding_id",
    "resolve_device",
    "resolve_dtype",
]

logger = logging.getLogger("localembed")

Output = Literal["sentence_embedding", "token_embeddings"]
OUTPUTS: tuple[str, ...] = ("sentence_embedding", "token_embeddings")

TRUNCATED_ROWS_NAMED = 5
"""The truncation warning names the first this many truncated rows."""

CALL_TIME_OPTIONS = frozenset(
    {
        "batch_size",
        "max_batch_tokens",
        "long_text",
        "query_instruction",
        "document_instruction",
        "truncate_dim",
    }
)
"""Settings an encoder applies per call: encoders differing only in these share one model."""


class LocalEncoder:
    """A loaded model that turns texts into float32 vectors, row i for text i.

    Use :func:`get_encoder` rather than this constructor, so that equal settings share
    one model.

    Args:
        config: the settings.
        backend: a loaded model to share (from an encoder whose settings differ only in
            :data:`CALL_TIME_OPTIONS`); None: load one.

    Example:
        >>> from localembed import get_encoder
        >>> encoder = get_encoder()
        >>> vectors = encoder.encode(["a cat", "a dog"])
        >>> vectors.shape, vectors.dtype
        ((2, 384), dtype('float32'))

    """

    def __init__(self, config: EncoderConfig, backend: Backend | None = None) -> None:
        self.config = config
        files = backend.files if backend is not None else read_model_files(config)
        self.source = files.source
        self.tokenizer = files.tokenizer
        """The model's tokenizer, free to use (the encoder tokenizes with a private copy)."""
        self.model_config = files.model_config
        width = int(files.model_config.hidden_size)
        if config.truncate_dim is not None and config.truncate_dim > width:
            msg = (
                f"truncate_dim {config.truncate_dim} is larger than {self.source.name}'s "
                f"dimension {width}; use at most {width} (or None for all)"
            )
            raise ValueError(msg)
        self.settings = _settings(config, files)
        self._windows = files.windows
        self.backend: Backend = backend or load_backend(files, config, self.settings)
        self.backend.check_options(self._options(None))
        self.device: torch.device = self.backend.device
        self.dtype: torch.dtype = self.backend.dtype
        self.dimension: int = config.truncate_dim or self.backend.dimension
        """Output dimension: ``truncate_dim`` when set, else the model's."""
        self._batcher: MicroBatcher | None = None
        self._batcher_lock = threading.Lock()

    # -- what is loaded -------------------------------------------------------------------

    @property
    def model(self) -> Any:
        """The transformers model (None for the ONNX and FlagEmbedding backends)."""
        return self.backend.model

    @property
    def runtime(self) -> Any:
        """The runtime that runs the forward pass (None for the FlagEmbedding backend)."""
        return self.backend.runtime

    @property
    def reference_backend(self) -> Any:
        """The FlagEmbedding backend when ``backend="flagembedding"``, else None."""
        return None if self.backend.runtime is not None else self.backend

    def load_head(self, name: str) -> torch.nn.Linear | None:
        """The bge-m3 ``"sparse"`` or ``"colbert"`` head, loaded now (None: the backend's own).

        Raises:
            FileNotFoundError: the model has no such head (it is not a bge-m3 model).
        """
        return self.backend.load_head(name)

    def describe(self, *, paths: bool = False) -> dict[str, Any]:
        """The resolved settings, as ``localembed info`` prints them.

        ``path`` is the model folder as the user named it (a hub id, the embedded default
        model, a directory as given), never the absolute file-system path unless ``paths``
        (``localembed info --paths``): a server's ``/info`` does not disclose its files.
        """
        from localembed.loading import display_path

        settings = self.settings
        return {
            "model": self.source.name,
            "path": str(self.source.path) if paths else display_path(self.source.path),
            "architecture": self.model_config.model_type,
            "dimension": self.dimension,
            "pooling": settings.pooling,
            "normalize": settings.normalize,
            "max_length": settings.max_length,
            "query_instruction": settings.query_instruction,
            "document_instruction": settings.document_instruction,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "sources": dict(settings.sources),
        }

    # -- encoding -------------------------------------------------------------------------

    @overload
    def encode(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        output: Literal["sentence_embedding"] = "sentence_embedding",
        batch_size: int | None = None,
        show_progress: bool = False,
        precision: Precision = "float32",
        ranges: np.ndarray | None = None,
    ) -> np.ndarray: ...

    @overload
    def encode(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        output: Literal["token_embeddings"],
        batch_size: int | None = None,
        show_progress: bool = False,
        precision: Precision = "float32",
        ranges: np.ndarray | None = None,
    ) -> list[TokenEmbeddings]: ...

    def encode(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        output: Output = "sentence_embedding",
        batch_size: int | None = None,
        show_progress: bool = False,
        precision: Precision = "float32",
        ranges: np.ndarray | None = None,
    ) -> np.ndarray | list[TokenEmbeddings]:
        """Embed ``texts`` as they are (or through ``instruction``); row i belongs to texts[i].

        Args:
            texts: the texts; an empty list gives a (0, dimension) array without a model call.
            instruction: a prefix, or a template containing ``{text}``, applied to every text.
            output: ``"sentence_embedding"`` (one pooled vector per text) or
                ``"token_embeddings"`` (per text: its tokens and their hidden states, see
                :class:`TokenEmbeddings`; for analysis and plots).
            batch_size: texts per forward pass; default: the configured ``batch_size``.
            show_progress: show a tqdm progress bar over the texts.
            precision: ``"float32"`` (default), ``"float16"``, ``"int8"``, ``"uint8"``,
                ``"binary"`` or ``"ubinary"``: sentence-transformers' ``quantize_embeddings``
                (see :mod:`localembed.precision`).
            ranges: int8/uint8 calibration ranges, (2, dimension), from
                :func:`localembed.precision.calibration_ranges` over a corpus; None: from
                these texts' vectors (at least two).

        Returns:
            An array of shape (len(texts), dimension) in ``precision`` (binary: dimension / 8
            bytes), or with ``output="token_embeddings"`` a list with one
            :class:`TokenEmbeddings` per text.

        Raises:
            TypeError: ``texts`` is not a list of str; the message names the first bad index.
            ValueError: an unknown ``output`` or ``precision``, token output where it is not
                defined, or int8/uint8 for a single text without ``ranges``.

        Example:
            >>> from localembed import get_encoder
            >>> tokens, vectors = get_encoder().encode(["Cats purr"], output="token_embeddings")[0]
            >>> tokens, vectors.shape
            (['[CLS]', 'cats', 'pu', '##rr', '[SEP]'], (5, 384))

        """
        if output not in OUTPUTS:
            msg = f"output must be one of {', '.join(map(repr, OUTPUTS))}, got {output!r}"
            raise ValueError(msg)
        check_precision(precision)
        options = self._options(batch_size, show_progress)
        if output == "token_embeddings":
            if self.config.long_text == "chunk":
                # Overlapping windows have no single token sequence to return.
                msg = (
                    "output='token_embeddings' returns one window per text: "
                    "use long_text='truncate'"
                )
                raise ValueError(msg)
            if self.backend.runtime is None:
                msg = "output='token_embeddings' needs backend='torch' or 'onnx'"
                raise ValueError(msg)
            tokenized = self.tokenize(texts, instruction)
            return self.backend.token_embeddings(tokenized, self.settings, options, self.forward)
        result = self.backend.encode_m3(
            self._instructed(texts, instruction),
            self.settings,
            options,
            dense=True,
            tokenize=self._tokenize_items,
            forward=self.forward,
        )
        return self.finish(result.dense_array(), precision, ranges)

    def encode_m3(
        self,
        texts: Sequence[str],
        *,
        dense: bool = True,
        sparse: bool = False,
        colbert: bool = False,
        instruction: str | None = None,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> M3Output:
        """bge-m3's dense, sparse (lexical weights) and multi-vector (ColBERT) outputs.

        One forward pass per batch computes every requested output; those not requested are
        None. See :mod:`localembed.m3`.

        Raises:
            ValueError: no output was requested.
            TypeError: ``texts`` is not a list of str.
            FileNotFoundError: sparse or ColBERT was requested and the model has no such head.
            NonFiniteEmbeddingError: some output is NaN or infinite (names the rows).
        """
        if not (dense or sparse or colbert):
            msg = "request at least one output: dense=True, sparse=True or colbert=True"
            raise ValueError(msg)
        result = self.backend.encode_m3(
            self._instructed(texts, instruction),
            self.settings,
            self._options(batch_size, show_progress),
            dense=dense,
            sparse=sparse,
            colbert=colbert,
            tokenize=self._tokenize_items,
            forward=self.forward,
        )
        result = self._checked(result)
        if result.dense is not None and self.config.truncate_dim is not None:
            result = dataclasses.replace(result, dense=self.finish(result.dense))
        return result

    def encode_queries(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
        precision: Precision = "float32",
        ranges: np.ndarray | None = None,
    ) -> np.ndarray:
        """Embed search queries with the query instruction (see :meth:`encode`).

        Without ``batch_size`` and progress bar, concurrent calls share forward passes
        (see :attr:`batcher`).
        """
        if batch_size is None and not show_progress and self.runtime is not None:
            check_precision(precision)
            vectors = self.batcher.encode(texts, self.settings.query_instruction)
            return self.finish(vectors, precision, ranges)
        return self.encode(
            texts,
            self.settings.query_instruction,
            batch_size=batch_size,
            show_progress=show_progress,
            precision=precision,
            ranges=ranges,
        )

    def encode_documents(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
        precision: Precision = "float32",
        ranges: np.ndarray | None = None,
    ) -> np.ndarray:
        """Embed documents with the document instruction (see :meth:`encode`).

        Without ``batch_size`` and progress bar, concurrent calls share forward passes
        (see :attr:`batcher`).
        """
        if batch_size is None and not show_progress and self.runtime is not None:
            check_precision(precision)
            vectors = self.batcher.encode(texts, self.settings.document_instruction)
            return self.finish(vectors, precision, ranges)
        return self.encode(
            texts,
            self.settings.document_instruction,
            batch_size=batch_size,
            show_progress=show_progress,
            precision=precision,
            ranges=ranges,
        )

    async def aencode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Async :meth:`encode_queries`: merged with concurrent calls, the event loop stays free."""
        return await self._aencode(texts, self.settings.query_instruction)

    async def aencode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Async :meth:`encode_documents`: merged with concurrent calls, the loop stays free."""
        return await self._aencode(texts, self.settings.document_instruction)

    async def _aencode(self, texts: Sequence[str], instruction: str) -> np.ndarray:
        if self.runtime is None:  # backend="flagembedding" runs its own batches
            import asyncio

            return await asyncio.to_thread(self.encode, texts, instruction)
        return self.finish(await self.batcher.aencode(texts, instruction))

    @property
    def batcher(self) -> MicroBatcher:
        """The micro-batcher of this encoder (one worker merging concurrent calls).

        ``encode_queries``, ``encode_documents``, their async forms and the server go
        through it; see :mod:`localembed.microbatch`.
        """
        if self._batcher is None:
            from localembed.microbatch import MicroBatcher

            with self._batcher_lock:
                if self._batcher is None:
                    self._batcher = MicroBatcher(self)
        return self._batcher

    def finish(
        self,
        vectors: np.ndarray,
        precision: Precision = "float32",
        ranges: np.ndarray | None = None,
        *,
        dimensions: int | None = None,
    ) -> np.ndarray:
        """Pooled float vectors -> the output: the one place both steps happen.

        The ``truncate_dim`` cut (then normalized again when normalizing), then ``precision``.
        Vectors already cut pass through unchanged (the micro-batcher finishes its results).
        ``dimensions`` cuts to that many instead of ``truncate_dim`` (the server's per-request
        ``dimensions``); None: the configured ``truncate_dim``.

        Raises:
            NonFiniteEmbeddingError: some row is NaN or infinite (names the rows).
        """
        vectors = self._finite(vectors)
        cut = self.config.truncate_dim if dimensions is None else dimensions
        if cut is not None and cut < vectors.shape[1]:
            vectors = vectors[:, :cut]
            if self.settings.normalize:
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = vectors / np.maximum(norms, 1e-12)
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if precision == "float32":
            return vectors
        return quantize(vectors, precision, ranges)

    def _checked(self, result: M3Output) -> M3Output:
        bad = result.non_finite_rows()
        if bad:
            raise NonFiniteEmbeddingError(bad, count=len(result), dtype=self._dtype_name())
        return result

    def _finite(self, vectors: np.ndarray) -> np.ndarray:
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite).tolist()
            raise NonFiniteEmbeddingError(bad, count=len(vectors), dtype=self._dtype_name())
        return vectors

    def _dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def _options(self, batch_size: int | None, show_progress: bool = False) -> CallOptions:
        return CallOptions(
            batch_size=batch_size or self.config.batch_size,
            max_batch_tokens=self.config.max_batch_tokens,
            long_text=self.config.long_text,
            show_progress=show_progress,
        )

    # -- the stages, for callers that compose them (CLI, server, tests) -------------------

    def tokenize(self, texts: Sequence[str], instruction: str | None = None) -> Tokenized:
        """Check, instruct and tokenize ``texts`` into model-ready windows (no padding).

        With ``long_text="truncate"`` each text gives one window (its first ``max_length``
        tokens) and over-long texts are counted and warned about; with ``"chunk"`` an
        over-long text gives several overlapping windows.
        """
        return self._tokenize_items(self._instructed(texts, instruction))

    @staticmethod
    def _instructed(texts: Sequence[str], instruction: str | None) -> list[str]:
        items = check_texts(texts)
        if instruction:
            items = [apply_instruction(instruction, text) for text in items]
        return items

    def _tokenize_items(self, items: list[str]) -> Tokenized:
        tokenized = self._windows(
            items, max_length=self.settings.max_length, long_text=self.config.long_text
        )
        if tokenized.truncated:
            rows = tokenized.truncated_rows
            named = ", ".join(map(str, rows[:TRUNCATED_ROWS_NAMED]))
            more = ", ..." if len(rows) > TRUNCATED_ROWS_NAMED else ""
            logger.warning(
                "%d of %d texts were longer than %d tokens and were truncated (rows %s%s); "
                "split documents into chunks that fit with LocalEmbeddings.text_splitter() "
                "(LangChain) or LocalEmbedding.node_parser() (LlamaIndex), or embed them "
                "whole with long_text='chunk'",
                tokenized.truncated,
                tokenized.count,
                self.settings.max_length,
                named,
                more,
            )
        return tokenized

    # -- chunks that fit, late chunking ---------------------------------------------------

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

    def chunk_size(self, kind: Literal["document", "query"] = "document") -> int:
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
            raise ValueError(msg)
        return size

    def chunk_overflow(self, chunk: str, kind: Literal["document", "query"] = "document") -> int:
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

    def chunk_instruction(self, kind: Literal["document", "query"] = "document") -> str:
        """The instruction a chunk of ``kind`` is embedded with ("" when none)."""
        if kind not in ("document", "query"):
            msg = f"kind must be 'document' or 'query', got {kind!r}"
            raise ValueError(msg)
        instruction: str = getattr(self.settings, f"{kind}_instruction")
        return instruction

    def encode_late_chunks(self, text: str, chunks: Sequence[str]) -> np.ndarray:
        """Late chunking: one vector per chunk, pooled from one pass over the whole ``text``.

        Each chunk's vector is the model's pooling over its own tokens, whose vectors have
        attended to the rest of the document (with the document instruction); a document
        longer than ``max_length`` runs in overlapping windows, each token taking its vector
        from the window where it has the most context. See :mod:`localembed.late_chunks`.

        Args:
            text: the whole document.
            chunks: consecutive substrings of ``text`` (e.g. from a text splitter); they may
                overlap or skip whitespace between them.

        Returns:
            A float32 (len(chunks), dimension) array, normalized when ``normalize`` is on and
            cut to ``truncate_dim``.

        Raises:
            ValueError: a chunk not found in the text in order (named), or a backend without
                token vectors (``backend="flagembedding"``).

        Example:
            >>> from localembed import get_encoder
            >>> text = "Berlin is in Germany. It has 3.8 million people."
            >>> get_encoder().encode_late_chunks(text, ["Berlin is in Germany.", "It has"]).shape
            (2, 384)

        """
        import torch

        from localembed.late_chunks import (
            DocumentTokens,
            chunk_char_spans,
            gather_token_vectors,
            plan_late_chunks,
        )
        from localembed.pooling import dense_head

        text = repair_text(check_text(text, "text"))
        # The same repair as the text's, so a chunk with a lone surrogate is still found.
        items = ordered_items(chunks, "str (chunks)")
        spans = chunk_char_spans(text, [repair_text(c) if isinstance(c, str) else c for c in items])
        if self.backend.runtime is None:
            msg = "encode_late_chunks needs token vectors: backend='torch' or 'onnx'"
            raise ValueError(msg)
        instruction = self.settings.document_instruction
        instructed = apply_instruction(instruction, text) if instruction else text
        # Where the text starts in the instructed string: after a prefix, or at "{text}".
        text_start = instruction.find("{text}") if "{text}" in instruction else len(instruction)
        try:
            ids, offsets, special = self._windows.encode_whole(instructed)
        except NotImplementedError as error:
            msg = "late chunking needs a fast tokenizer (character offsets)"
            raise ValueError(msg) from error
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
        outputs = self.backend.token_embeddings(
            windows, self.settings, self._options(None), self.forward
        )
        tokens = torch.from_numpy(gather_token_vectors(plan, [o.vectors for o in outputs]))
        rows = np.empty((len(plan.spans), self.backend.dimension), dtype=np.float32)
        for row, (start, stop) in enumerate(plan.spans):
            span = tokens[start:stop].unsqueeze(0)
            mask = torch.ones((1, stop - start), dtype=torch.long)
            pooled = dense_head(self.settings.pooling, span, mask, self.settings.normalize)
            rows[row] = pooled[0].numpy()
        return self.finish(rows)

    def batches(self, ids: list[list[int]], batch_size: int | None = None) -> list[list[int]]:
        """Group window indices into batches (see :func:`localembed.batching.plan_batches`)."""
        budget = token_budget(self.config.max_batch_tokens, self.device)
        return plan_batches([len(w) for w in ids], batch_size or self.config.batch_size, budget)

    def run_batches(
        self,
        tokenized: Tokenized,
        consume: Callable[[list[int], ForwardBatch], None],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> None:
        """Run the model over ``tokenized`` in batches (see :mod:`localembed.batching`).

        ``consume(indices, batch)`` gets the window indices of the batch and the forward
        result; it must write its results by index (an out-of-memory batch is split and run
        again).
        """

        def step(indices: list[int]) -> None:
            consume(indices, self.forward([tokenized.ids[i] for i in indices]))

        run_batches(
            [len(ids) for ids in tokenized.ids],
            step,
            batch_size=batch_size or self.config.batch_size,
            max_batch_tokens=self.config.max_batch_tokens,
            device=self.device,
            max_length=self.settings.max_length,
            show_progress=show_progress,
        )

    def forward(self, windows: list[list[int]]) -> ForwardBatch:
        """Pad ``windows`` on the right and run the transformer once (no gradients)."""
        result: ForwardBatch = self.backend.forward(windows)
        return result

    def combine_windows(self, rows: np.ndarray, tokenized: Tokenized) -> np.ndarray:
        """One vector per text from per-window vectors (see :mod:`localembed.windows`)."""
        return combine_windows(rows, tokenized, normalize=self.settings.normalize)


def _settings(config: EncoderConfig, files: ModelFiles) -> ResolvedSettings:
    from localembed.loading import identity_names

    return resolve_settings(
        config,
        names=[files.source.name, str(files.source.path)],
        identity=identity_names(files.source.path),
        metadata=files.metadata,
        tokenizer=files.tokenizer,
        model_config=files.model_config,
    )


_encoders: SharedModels[LocalEncoder] = SharedModels()
_backends: SharedModels[Backend] = SharedModels()


def get_encoder(config: EncoderConfig | None = None, /, **options: Any) -> LocalEncoder:
    """The shared encoder for these settings: loaded on first use, then the same instance.

    Takes an :class:`EncoderConfig` (or an adapter, which is one), keyword options (the
    same names), or both (options override the config). Thread-safe: concurrent first calls
    load the model once. Encoders whose settings differ only in call-time options
    (``batch_size``, ``max_batch_tokens``, ``long_text``, instructions) share one loaded model.

    Example:
        >>> from localembed import get_encoder
        >>> get_encoder(pooling="mean") is get_encoder(pooling="mean")
        True
        >>> get_encoder(batch_size=8).model is get_encoder(batch_size=16).model
        True

    """
    return _encoders.for_config(EncoderConfig, config, options, _load)


def _load(config: EncoderConfig) -> LocalEncoder:
    loaded = {k: v for k, v in config.encoder_options().items() if k not in CALL_TIME_OPTIONS}
    backend = _backends.for_settings(loaded, lambda: _load_backend(config))
    return LocalEncoder(config, backend)


def _load_backend(config: EncoderConfig) -> Backend:
    files = read_model_files(config)
    return load_backend(files, config, _settings(config, files))


def clear_encoder_cache() -> None:
    """Forget every shared encoder (their memory is freed once nothing else holds them)."""
    _encoders.clear()
    _backends.clear()
