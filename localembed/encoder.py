"""LocalEncoder: the facade over a backend; ``get_encoder`` shares loaded models.

The encoder resolves the settings (:mod:`localembed.settings`), checks and instructs the
texts (:mod:`localembed.texts`, the instruction for a kind from
:meth:`~localembed.settings.ResolvedSettings.instruction`), hands them to its backend as data
(:mod:`localembed.backends`), and finishes the rows once (:mod:`localembed.finish`).
Concurrent ``encode_queries``/``encode_documents`` calls go through the micro-batcher
(:mod:`localembed.microbatch`). Encoders whose settings differ only in call-time options
share one loaded backend, so adapters with such settings hold one model in memory.

Two groups of the encoder's methods live in their own modules: the CDE corpus context
(:mod:`localembed.encoder_cde`) and the token methods (tokenize, token counts, chunk sizes,
late chunks: :mod:`localembed.encoder_tokens`).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from localembed.backends import Backend, load_backend
from localembed.backends.base import CallOptions, ModelFiles, TokenEmbeddings, read_model_files
from localembed.batching import ForwardBatch
from localembed.config import EncoderConfig
from localembed.encoder_cde import CDEMethods
from localembed.encoder_tokens import TokenMethods
from localembed.errors import InputError
from localembed.faults import NonFiniteEmbeddingError
from localembed.finish import Finish
from localembed.forks import ForkSafeLock
from localembed.precision import Precision, check_precision
from localembed.settings import ResolvedSettings, resolve_settings
from localembed.sharing import SharedModels
from localembed.texts import Kind, check_texts, instructed

if TYPE_CHECKING:
    import os

    import numpy as np
    import torch
    from typing_extensions import TypedDict, Unpack

    from localembed.backends.base import WindowBackend
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


class LocalEncoder(CDEMethods, TokenMethods):
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
        self._files = files
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
        self._batcher_lock = ForkSafeLock()
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
        from localembed.errors import ModelError
        from localembed.model_origins import display_path

        settings = self.settings
        try:
            fingerprint = self.fingerprint
        except ModelError:  # a running server's /info still answers
            fingerprint = "unknown: the model's files changed on disk since it was loaded"
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
            "fingerprint": fingerprint,
            "sources": dict(settings.sources),
            **({"context": repr(self.context)} if self.contextual else {}),
        }

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the model files' content (see :mod:`localembed.fingerprint`).

        The files as they were when the loaded weights were read: encoders sharing a loaded
        model share its fingerprint, computed once.

        Raises:
            ModelError: the files changed on disk since the model was loaded (its vectors
                are the old weights'; ``clear_encoder_cache()`` loads the new ones).
        """
        return self._files.fingerprint

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
        checked = check_texts(texts)  # repaired and warned about once
        items = instructed(checked, instruction)
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
                checked,
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
            from localembed.backends.base import unavailable_reason

            reason = unavailable_reason(self.backend, capability)
            msg = f"{what} is not available for {self.config.model!r}: {reason}"
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
    A CDE context given as a path that was saved again since it was read is read again (a
    new encoder; the model stays shared).

    Example:
        >>> from localembed import get_encoder
        >>> get_encoder(pooling="mean") is get_encoder(pooling="mean")
        True
        >>> get_encoder(batch_size=8).model is get_encoder(batch_size=16).model
        True

    """
    encoder = _encoders.for_config(EncoderConfig, config, options, _load)
    if encoder.context is not None and isinstance(encoder.config.context, str):
        from localembed.corpus_context import replaced_on_disk

        if replaced_on_disk(encoder.context):  # a context file saved again: read it again
            _encoders.forget(encoder)
            encoder = _encoders.for_config(EncoderConfig, config, options, _load)
    return encoder


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
