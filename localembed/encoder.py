"""LocalEncoder: the facade over a backend; ``get_encoder`` shares loaded models.

The encoder resolves the settings (:mod:`localembed.settings`), checks and instructs the
texts (:mod:`localembed.texts`, the instruction for a kind from
:meth:`~localembed.settings.ResolvedSettings.instruction`), hands them to its backend as data
(:mod:`localembed.backends`), and finishes the rows once (:mod:`localembed.finish`).
Concurrent ``encode_queries``/``encode_documents`` calls go through the micro-batcher
(:mod:`localembed.microbatch`). Encoders whose settings differ only in call-time options
share one loaded backend, so adapters with such settings hold one model in memory.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from localembed.backends import Backend, load_backend
from localembed.backends.base import CallOptions, ModelFiles, TokenEmbeddings, read_model_files
from localembed.batching import ForwardBatch
from localembed.config import EncoderConfig
from localembed.errors import InputError
from localembed.faults import NonFiniteEmbeddingError
from localembed.finish import Finish
from localembed.precision import Precision, check_precision
from localembed.settings import ResolvedSettings, resolve_settings
from localembed.sharing import SharedModels
from localembed.texts import (
    KINDS,
    Kind,
    apply_instruction,
    check_text,
    check_texts,
    instructed,
    ordered_items,
    repair_text,
)
from localembed.windows import Tokenized

if TYPE_CHECKING:
    import os

    import numpy as np
    import torch
    from typing_extensions import TypedDict, Unpack

    from localembed.backends.base import WindowBackend
    from localembed.backends.contextual import ContextualBackend
    from localembed.cache import EmbeddingCache, Rows
    from localembed.contextual import CorpusContext
    from localembed.heads import Outputs
    from localembed.microbatch import BatchSpec, MicroBatcher

    class KindOptions(TypedDict, total=False):
        """The keyword options of :meth:`LocalEncoder.encode_kind`."""

        batch_size: int | None
        show_progress: bool
        precision: Precision
        ranges: np.ndarray | None


__all__ = [
    "OUTPUTS",
    "CallOptions",
    "ForwardBatch",
    "LocalEncoder",
    "ResolvedSettings",
    "TokenEmbeddings",
    "clear_encoder_cache",
    "get_encoder",
]

Output = Literal["sentence_embedding", "token_embeddings"]
OUTPUTS: tuple[str, ...] = ("sentence_embedding", "token_embeddings")


class LocalEncoder:
    """A loaded model that turns texts into float32 vectors, row i for text i.

    Use :func:`get_encoder` rather than this constructor, so that equal settings share
    one model.

    Args:
        config: the settings.
        backend: a loaded model to share (from an encoder whose settings differ only in
            :data:`~localembed.config.CALL_TIME_OPTIONS`); None: load one.

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
        width = getattr(files.model_config, "hidden_size", None)
        if isinstance(width, int):  # before loading the weights where the config says it
            self._check_truncate_dim(width)
        self.settings = _settings(config, files)
        self._windows = files.windows
        self.backend: Backend = backend or load_backend(files, config, self.settings)
        self._check_truncate_dim(self.backend.dimension)
        self.context: CorpusContext | None = self._context(config.context)
        """A CDE model's corpus context (None: not a CDE model, or none given yet)."""
        self.backend.check_options(self._options(None))
        self.device: torch.device = self.backend.device
        self.dtype: torch.dtype = self.backend.dtype
        self.dimension: int = config.truncate_dim or self.backend.dimension
        """Output dimension: ``truncate_dim`` when set, else the model's."""
        self._finish = Finish(
            cut=config.truncate_dim,
            normalize=self.settings.normalize,
            dtype=str(self.dtype).removeprefix("torch."),
        )
        self._batcher: MicroBatcher | None = None
        self._batcher_lock = threading.Lock()
        self.cache: EmbeddingCache | None = None
        """The embedding cache (``cache=``; see :mod:`localembed.cache`), or None."""
        if config.cache is not None:
            from localembed.cache import EmbeddingCache

            self.cache = EmbeddingCache.for_encoder(self)

    def _check_truncate_dim(self, width: int) -> None:
        truncate_dim = self.config.truncate_dim
        if truncate_dim is not None and truncate_dim > width:
            msg = (
                f"truncate_dim {truncate_dim} is larger than {self.source.name}'s "
                f"dimension {width}; use at most {width} (or None for all)"
            )
            raise InputError(msg)

    def _context(self, value: Any) -> CorpusContext | None:
        from localembed.contextual import ContextError, as_context, check_context

        if not self.contextual:
            if value is not None:
                msg = (
                    f"context= is for contextual document embedding (CDE) models; "
                    f"{self.source.name} is not one (its config has no transductive_corpus_size)"
                )
                raise ContextError(msg)
            return None
        context = as_context(value)
        if context is not None:
            backend = self._contextual_backend()
            check_context(context, backend.fingerprint, self.source.name)
            if context.dimension != backend.dimension or context.size > backend.corpus_size:
                # Only a hand-made context gets here (the fingerprint matched): the model would
                # fail on the width, or silently drop the documents past its corpus size.
                msg = (
                    f"the context holds {context.size} x {context.dimension} dataset embeddings; "
                    f"{self.source.name} takes at most {backend.corpus_size} of width "
                    f"{backend.dimension}: build it with encoder.build_context(corpus)"
                )
                raise ContextError(msg)
        return context

    @property
    def contextual(self) -> bool:
        """Whether the model is a contextual document embedding (CDE) model."""
        from localembed.contextual import is_contextual

        return is_contextual(self.model_config)

    @property
    def context_size(self) -> int | None:
        """A CDE model's ``transductive_corpus_size`` (documents in a full context); else None."""
        return self._contextual_backend().corpus_size if self.contextual else None

    def _contextual_backend(self) -> ContextualBackend:
        from localembed.backends.contextual import ContextualBackend
        from localembed.contextual import ContextError

        if not isinstance(self.backend, ContextualBackend):
            msg = (
                f"{self.source.name} is not a contextual document embedding (CDE) model: "
                f"build_context needs one (a config with transductive_corpus_size, such as "
                f"jxm/cde-small-v2 with trust_remote_code=True)"
            )
            raise ContextError(msg)
        return self.backend

    def build_context(
        self,
        corpus: Sequence[str],
        size: int | None = None,
        seed: int = 0,
        *,
        oversample: bool = False,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> CorpusContext:
        """A CDE model's corpus context: the first stage over a seeded sample of ``corpus``.

        ``size`` documents are drawn with ``random.Random(seed)`` (see
        :func:`localembed.contextual.sample_indices`), embedded with the document instruction
        (the first ``max_length`` tokens each) by the model's ``first_stage_model``, and kept
        with the model's fingerprint. Save it with ``.save(path)``; use it with
        ``get_encoder(..., context=ctx_or_path)`` or :meth:`with_context`.

        Args:
            corpus: the documents (or a representative sample of them).
            size: documents in the sample; None: the model's ``transductive_corpus_size``
                (512 for the released models). At most that many (the model would ignore
                the rest).
            seed: the sampling seed: the same corpus, size and seed give the same context.
            oversample: a corpus smaller than ``size`` repeats documents (else an error).
            batch_size: documents per forward pass; default: the configured one.
            show_progress: show a progress bar.

        Raises:
            ContextError: not a CDE model, ``size`` out of range, or a corpus smaller than
                ``size`` without ``oversample``.
            TypeError: ``corpus`` is not a list of str.
        """
        from localembed.contextual import ContextError, sample_indices

        backend = self._contextual_backend()
        documents = check_texts(corpus)
        size = backend.corpus_size if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or size > backend.corpus_size:
            msg = (
                f"size must be an int from 1 to {self.source.name}'s transductive_corpus_size "
                f"{backend.corpus_size} (the model reads no more), got {size!r}"
            )
            raise ContextError(msg)
        indices = sample_indices(len(documents), size, seed, oversample=oversample)
        return self.context_of(
            [documents[i] for i in indices],
            seed=seed,
            corpus_size=len(documents),
            indices=indices,
            batch_size=batch_size,
            show_progress=show_progress,
        )

    def context_of(
        self,
        sample: Sequence[str],
        *,
        seed: int | None = None,
        corpus_size: int | None = None,
        indices: Sequence[int] = (),
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> CorpusContext:
        """A CDE context of ``sample`` as given (already drawn; :meth:`build_context` draws).

        For callers that draw the sample themselves (``localembed embed --build-context``
        streams the input): ``seed``, ``corpus_size`` and ``indices`` are recorded as given.
        """
        from localembed.contextual import CorpusContext
        from localembed.finish import check_finite

        backend = self._contextual_backend()
        documents = check_texts(sample)
        instruction = self.settings.document_instruction
        items = (
            [apply_instruction(instruction, text) for text in documents]
            if instruction
            else documents
        )
        # Each sampled document is one window (its first max_length tokens), as in the card.
        tokenized = self._windows(items, max_length=self.settings.max_length, long_text="truncate")
        rows = backend.dataset_embeddings(tokenized, self._options(batch_size, show_progress))
        check_finite(rows, str(self.dtype).removeprefix("torch."), "sampled documents")
        return CorpusContext(
            embeddings=rows,
            model=self.source.name,
            fingerprint=backend.fingerprint,
            seed=seed,
            corpus_size=len(documents) if corpus_size is None else corpus_size,
            indices=tuple(indices),
            document_instruction=instruction,
            max_length=self.settings.max_length,
        )

    def with_context(self, context: CorpusContext | str | os.PathLike[str]) -> LocalEncoder:
        """The shared encoder with these settings and ``context`` (the model is shared)."""
        return get_encoder(self.config, context=context)

    # -- what is loaded -------------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[str]:
        """What the backend makes and supports (see :mod:`localembed.backends.base`)."""
        return self.backend.capabilities

    @property
    def model(self) -> Any:
        """The transformers model (None for the ONNX and FlagEmbedding backends)."""
        return getattr(self.backend, "model", None)

    @property
    def runtime(self) -> Any:
        """The runtime that runs the forward pass (None for the FlagEmbedding backend)."""
        return getattr(self.backend, "runtime", None)

    @property
    def reference_backend(self) -> Any:
        """The FlagEmbedding backend when ``backend="flagembedding"``, else None."""
        return self.backend if self.config.backend == "flagembedding" else None

    def load_head(self, name: str) -> torch.nn.Linear | None:
        """The bge-m3 ``"sparse"`` or ``"colbert"`` head, loaded now (None: the backend's own).

        Raises:
            MissingModelFileError: the model has no such head (it is not a bge-m3 model).
        """
        load = getattr(self.backend, "load_head", None)  # None: the backend keeps its heads
        if load is None and name not in self.capabilities:
            msg = f"unknown head {name!r}; this backend makes {sorted(self.capabilities)}"
            raise InputError(msg)
        return None if load is None else load(name)

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
            "fingerprint": self.fingerprint,
            "sources": dict(settings.sources),
            **({"context": repr(self.context)} if self.contextual else {}),
        }

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the model files' content (see :mod:`localembed.fingerprint`)."""
        from localembed.fingerprint import model_fingerprint

        return model_fingerprint(self.source.path)

    def cache_stats(self) -> dict[str, int]:
        """The embedding cache's counters (see :meth:`localembed.cache.EmbeddingCache.stats`).

        Empty without a cache.
        """
        return self.cache.stats() if self.cache is not None else {}

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
            InputTypeError: ``texts`` is not a list of str; the message names the first bad
                index.
            InputError: an unknown ``output`` or ``precision``, token output where it is not
                defined, or int8/uint8 for a single text without ``ranges``.

        Example:
            >>> from localembed import get_encoder
            >>> tokens, vectors = get_encoder().encode(["Cats purr"], output="token_embeddings")[0]
            >>> tokens, vectors.shape
            (['[CLS]', 'cats', 'pu', '##rr', '[SEP]'], (5, 384))

        """
        if output not in OUTPUTS:
            msg = f"output must be one of {', '.join(map(repr, OUTPUTS))}, got {output!r}"
            raise InputError(msg)
        check_precision(precision)
        options = self._options(batch_size, show_progress)
        items = instructed(texts, instruction)
        if output == "token_embeddings":
            if self.config.long_text == "chunk":
                # Overlapping windows have no single token sequence to return.
                msg = (
                    "output='token_embeddings' returns one window per text: "
                    "use long_text='truncate'"
                )
                raise InputError(msg)
            self._require("token_embeddings", "output='token_embeddings'")
            return self.backend.token_embeddings(self.backend.tokenize(items, options), options)
        if self.cache is not None:  # hits from the cache; misses through _rows
            rows = self.cache.encode(
                check_texts(texts),
                instruction,
                lambda missing: self._rows(instructed(missing, instruction), options),
            )
            return self.finish(rows.vectors, precision, ranges)
        result = self.backend.encode(items, ("dense",), options)
        return self.finish(result.dense_array(), precision, ranges)

    def _rows(self, items: list[str], options: CallOptions) -> Rows:
        """Finished float32 rows of instructed ``items``, with their tokens (cache misses)."""
        import numpy as np

        from localembed.cache import Rows

        vectors = self.finish(self.backend.encode(items, ("dense",), options).dense_array())
        # Tokens and truncation per text, for the entries (the backend warned already).
        tokenized = self._windows(items, max_length=options.max_length, long_text=options.long_text)
        truncated = np.zeros(len(items), bool)
        truncated[list(tokenized.truncated_rows)] = True
        return Rows(vectors, np.asarray(tokenized.text_tokens(), np.int64), truncated)

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
    ) -> Outputs:
        """Dense, sparse (lexical weights) and multi-vector (ColBERT) outputs (bge-m3's).

        One forward pass per batch computes every requested output; those not requested are
        None. See :mod:`localembed.heads` and :mod:`localembed.m3`.

        Raises:
            InputError: no output was requested.
            InputTypeError: ``texts`` is not a list of str.
            MissingModelFileError: sparse or ColBERT was requested and the model has no such
                head.
            NonFiniteEmbeddingError: some output is NaN or infinite (names the rows).
        """
        outputs = [
            name for name, on in (("dense", dense), ("sparse", sparse), ("colbert", colbert)) if on
        ]
        if not outputs:
            msg = "request at least one output: dense=True, sparse=True or colbert=True"
            raise InputError(msg)
        result = self.backend.encode(
            instructed(texts, instruction),
            outputs,
            self._options(batch_size, show_progress),
        )
        bad = result.non_finite_rows()
        if bad:
            raise NonFiniteEmbeddingError(bad, count=len(result), dtype=self._finish.dtype)
        if result.dense is not None and self.config.truncate_dim is not None:
            result = dataclasses.replace(result, dense=self.finish(result.dense))
        return result

    def encode_kind(
        self,
        kind: Kind,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
        precision: Precision = "float32",
        ranges: np.ndarray | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` as ``kind`` (``"query"`` or ``"document"``) with its instruction.

        Without ``batch_size`` and progress bar, concurrent calls share forward passes
        (see :attr:`batcher`).
        """
        instruction = self.settings.instruction(kind)
        if batch_size is None and not show_progress and "windows" in self.capabilities:
            check_precision(precision)
            future = self.batcher.submit(texts, instruction, precision=precision, ranges=ranges)
            return future.result().vectors
        return self.encode(
            texts,
            instruction,
            batch_size=batch_size,
            show_progress=show_progress,
            precision=precision,
            ranges=ranges,
        )

    def encode_queries(self, texts: Sequence[str], **options: Unpack[KindOptions]) -> np.ndarray:
        """Embed search queries with the query instruction: ``encode_kind("query", ...)``."""
        return self.encode_kind("query", texts, **options)

    def encode_documents(self, texts: Sequence[str], **options: Unpack[KindOptions]) -> np.ndarray:
        """Embed documents with the document instruction: ``encode_kind("document", ...)``."""
        return self.encode_kind("document", texts, **options)

    async def aencode_kind(self, kind: Kind, texts: Sequence[str]) -> np.ndarray:
        """Async :meth:`encode_kind`: merged with concurrent calls, the event loop stays free.

        The rows are finished in the micro-batcher's worker, off the event loop.
        """
        instruction = self.settings.instruction(kind)
        if "windows" not in self.capabilities:  # backend="flagembedding" runs its own batches
            import asyncio

            return await asyncio.to_thread(self.encode, texts, instruction)
        return await self.batcher.aencode(texts, instruction)

    async def aencode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Async :meth:`encode_queries` (see :meth:`aencode_kind`)."""
        return await self.aencode_kind("query", texts)

    async def aencode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Async :meth:`encode_documents` (see :meth:`aencode_kind`)."""
        return await self.aencode_kind("document", texts)

    @property
    def batch_spec(self) -> BatchSpec:
        """What this encoder's micro-batched calls run with: backend, options, finish."""
        from localembed.microbatch import BatchSpec

        self._require("windows", "micro-batching")
        backend: WindowBackend = self.backend  # type: ignore[assignment]
        return BatchSpec(backend, self._options(None), self._finish, self.cache)

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
                    batcher = MicroBatcher(self.batch_spec)
                    weakref.finalize(self, batcher.close)
                    self._batcher = batcher
        return self._batcher

    def finish(
        self,
        vectors: np.ndarray,
        precision: Precision = "float32",
        ranges: np.ndarray | None = None,
        *,
        dimensions: int | None = None,
    ) -> np.ndarray:
        """Pooled float vectors -> the output (see :class:`localembed.finish.Finish`).

        The non-finite check, the ``truncate_dim`` cut (then normalized again when
        normalizing), then ``precision``. Vectors already cut pass through unchanged.
        ``dimensions`` cuts to that many instead of ``truncate_dim`` (the server's per-request
        ``dimensions``).

        Raises:
            NonFiniteEmbeddingError: some row is NaN or infinite (names the rows).
        """
        return self._finish(vectors, precision, ranges, dimensions=dimensions)

    def _require(self, capability: str, what: str) -> None:
        if capability not in self.capabilities:
            msg = f"{what} needs backend='torch' or 'onnx'"
            raise InputError(msg)

    def _options(self, batch_size: int | None, show_progress: bool = False) -> CallOptions:
        settings = self.settings
        return CallOptions(
            batch_size=batch_size or self.config.batch_size,
            max_batch_tokens=self.config.max_batch_tokens,
            long_text=self.config.long_text,
            show_progress=show_progress,
            pooling=settings.pooling,
            normalize=settings.normalize,
            max_length=settings.max_length,
            context=self.context,
        )

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
        self._require("token_embeddings", "encode_late_chunks needs token vectors:")
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
    backend = _backends.for_settings(config.load_options(), lambda: _load_backend(config))
    return LocalEncoder(config, backend)


def _load_backend(config: EncoderConfig) -> Backend:
    files = read_model_files(config)
    return load_backend(files, config, _settings(config, files))


def release_encoder(encoder: LocalEncoder) -> None:
    """Forget ``encoder`` and its loaded model in the shared cache (a server unloading it).

    Its memory is freed once nothing else holds it; ``get_encoder`` with its settings loads
    it again.
    """
    _encoders.forget(encoder)
    _backends.forget(encoder.backend)


def clear_encoder_cache() -> None:
    """Forget every shared encoder (their memory is freed once nothing else holds them)."""
    _encoders.clear()
    _backends.clear()
