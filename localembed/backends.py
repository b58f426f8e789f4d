"""Backends: a loaded model behind one interface, chosen in one place (:func:`load_backend`).

- :class:`ModelFiles` is what a model directory says about itself (source, sentence-transformers
  metadata, tokenizer, config): read without weights, enough to resolve the settings.
- :class:`TransformerBackend` runs the stages: windows (:mod:`localembed.windows`), batches
  (:mod:`localembed.batching`) and a runtime (:mod:`localembed.runtimes`: torch or ONNX),
  then the heads (dense pooling in :mod:`localembed.pooling`, bge-m3 sparse and ColBERT in
  :mod:`localembed.m3`).
- ``backend="flagembedding"``: :class:`localembed.flagembedding.FlagEmbeddingBackend`, the
  reference, with the same interface.

A backend holds the weights and is shared by every encoder whose settings differ only in
call-time options (batch size, token budget, long-text mode, instructions): those are
passed on each call as :class:`CallOptions`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

import numpy as np

from localembed.batching import ForwardBatch, pad_right, padding_id, run_batches
from localembed.contextual import is_contextual
from localembed.loading import (
    ModelSource,
    SentenceTransformersMetadata,
    load_model_config,
    load_tokenizer,
    locate_model,
    read_sentence_transformers_metadata,
)
from localembed.m3 import HEAD_FILES, M3Output, batch_outputs, not_m3_message, read_head
from localembed.runtimes import check_speed_options, load_runtime, resolve_device, resolve_dtype
from localembed.windows import Tokenized, WindowTokenizer

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from localembed.config import EncoderConfig
    from localembed.contextual import CorpusContext
    from localembed.runtimes import Runtime
    from localembed.settings import ResolvedSettings

__all__ = [
    "Backend",
    "CallOptions",
    "ModelFiles",
    "TokenEmbeddings",
    "TransformerBackend",
    "load_backend",
    "read_model_files",
]


Forward = Callable[[list[list[int]]], ForwardBatch]


class TokenEmbeddings(NamedTuple):
    """One text's tokens and their contextual vectors (``encode(..., output="token_embeddings")``).

    Unpacks as ``tokens, vectors = result``.
    """

    tokens: list[str]
    """The tokenizer's pieces, special tokens (such as ``[CLS]``) and instruction included."""
    vectors: np.ndarray
    """(len(tokens), dimension) float32 last hidden states, not pooled or normalized."""


@dataclass(frozen=True)
class CallOptions:
    """Options of one call (not part of the loaded model)."""

    batch_size: int
    """Windows per forward pass."""
    max_batch_tokens: int | None
    """Padded tokens per forward pass; None: the device's default."""
    long_text: Literal["truncate", "chunk"]
    """Over-long texts: one truncated window, or overlapping windows."""
    show_progress: bool = False
    """Show a progress bar."""
    context: CorpusContext | None = field(default=None, compare=False)
    """A CDE model's corpus context (see :mod:`localembed.contextual`); None for other models."""


@dataclass(frozen=True)
class ModelFiles:
    """What a model directory says about itself, read without loading weights."""

    source: ModelSource
    metadata: SentenceTransformersMetadata
    tokenizer: PreTrainedTokenizerBase
    """The public tokenizer (``encoder.tokenizer``)."""
    model_config: PretrainedConfig
    windows: WindowTokenizer
    """Tokenizes into windows with a private copy of the tokenizer."""


def read_model_files(config: EncoderConfig) -> ModelFiles:
    """Locate the model and read its metadata, tokenizer and config (no weights)."""
    source = locate_model(config.model, allow_pickle_weights=config.allow_pickle_weights)
    metadata = read_sentence_transformers_metadata(source.path)
    if metadata.unsupported_modules:
        msg = (
            f"{source.name}: sentence-transformers modules "
            f"{', '.join(metadata.unsupported_modules)} are not supported by localembed "
            f"(only Transformer, one Pooling mode, Normalize)"
        )
        raise ValueError(msg)
    path = metadata.transformer_path
    model_config = load_model_config(path, trust_remote_code=config.trust_remote_code)
    if is_contextual(model_config):
        from localembed.contextual_backend import contextual_tokenizer

        tokenizer = contextual_tokenizer(path, model_config, config.trust_remote_code)
    else:
        tokenizer = load_tokenizer(path, trust_remote_code=config.trust_remote_code)
    return ModelFiles(source, metadata, tokenizer, model_config, WindowTokenizer(tokenizer))


class Backend(Protocol):
    """What the encoder asks of a loaded model."""

    files: ModelFiles
    device: torch.device
    dtype: torch.dtype
    dimension: int
    model: PreTrainedModel | None
    runtime: Runtime | None

    def check_options(self, options: CallOptions) -> None:
        """Refuse call options this backend cannot honour."""

    def forward(self, windows: list[list[int]]) -> ForwardBatch:
        """Pad ``windows`` and run the model once (last hidden states)."""

    def load_head(self, name: str) -> torch.nn.Linear | None:
        """Load the bge-m3 ``"sparse"`` or ``"colbert"`` head (None: the backend has its own)."""

    def encode_m3(
        self,
        items: list[str],
        settings: ResolvedSettings,
        options: CallOptions,
        *,
        dense: bool,
        sparse: bool = False,
        colbert: bool = False,
        tokenize: Callable[[list[str]], Tokenized],
        forward: Forward,
    ) -> M3Output:
        """Dense, sparse and ColBERT outputs of checked, instructed texts."""

    def token_embeddings(
        self,
        tokenized: Tokenized,
        settings: ResolvedSettings,
        options: CallOptions,
        forward: Forward,
    ) -> list[TokenEmbeddings]:
        """Each text's tokens and last hidden states."""


class TransformerBackend:
    """A transformers model on a runtime (torch or ONNX) behind the stages.

    Args:
        files: the model's files.
        config: the settings the weights are loaded with (device, dtype, backend, quantize).
    """

    def __init__(self, files: ModelFiles, config: EncoderConfig) -> None:
        self.files = files
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.dimension: int = int(files.model_config.hidden_size)
        self.pad_id = padding_id(files.tokenizer)
        self._forward_lock = threading.Lock()
        self._heads: dict[str, torch.nn.Linear] = {}
        self._heads_lock = threading.Lock()
        self.runtime: Runtime | None
        self.model: PreTrainedModel | None
        self.runtime, self.model = load_runtime(
            files.metadata.transformer_path,
            files.model_config,
            config,
            backend=config.backend,
            device=self.device,
            dtype=self.dtype,
        )

    def check_options(self, options: CallOptions) -> None:
        """Every option works here."""

    def forward(self, windows: list[list[int]]) -> ForwardBatch:
        """Pad ``windows`` on the right and run the transformer once (no gradients)."""
        input_ids, attention_mask = pad_right(windows, self.pad_id, self.device)
        assert self.runtime is not None
        with self._forward_lock:
            hidden = self.runtime(input_ids, attention_mask)
        return ForwardBatch(hidden=hidden, attention_mask=attention_mask, input_ids=input_ids)

    def run(
        self,
        tokenized: Tokenized,
        consume: Callable[[list[int], ForwardBatch], None],
        settings: ResolvedSettings,
        options: CallOptions,
        forward: Forward | None = None,
    ) -> None:
        """Run the windows of ``tokenized`` in planned batches (see :func:`run_batches`)."""
        run_forward = forward or self.forward

        def step(indices: list[int]) -> None:
            consume(indices, run_forward([tokenized.ids[i] for i in indices]))

        run_batches(
            [len(ids) for ids in tokenized.ids],
            step,
            batch_size=options.batch_size,
            max_batch_tokens=options.max_batch_tokens,
            device=self.device,
            max_length=settings.max_length,
            show_progress=options.show_progress,
        )

    def load_head(self, name: str) -> torch.nn.Linear:
        """The bge-m3 ``"sparse"`` or ``"colbert"`` head, read on first use and kept."""
        if name not in HEAD_FILES:
            msg = f"unknown head {name!r}; valid: {', '.join(HEAD_FILES)}"
            raise ValueError(msg)
        with self._heads_lock:
            head = self._heads.get(name)
            if head is None:
                source = self.files.source
                path = source.path / HEAD_FILES[name]
                if not path.is_file():
                    raise FileNotFoundError(not_m3_message(source, [HEAD_FILES[name]]))
                head = read_head(path, self.dimension, device=self.device, dtype=self.dtype)
                self._heads[name] = head
            return head

    def unused_token_ids(self) -> frozenset[int]:
        """Token ids left out of lexical weights: FlagEmbedding drops cls, eos, pad and unk."""
        tokenizer = self.files.tokenizer
        ids = (
            tokenizer.cls_token_id,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
            tokenizer.unk_token_id,
        )
        return frozenset(int(i) for i in ids if i is not None)

    def encode_m3(
        self,
        items: list[str],
        settings: ResolvedSettings,
        options: CallOptions,
        *,
        dense: bool,
        sparse: bool = False,
        colbert: bool = False,
        tokenize: Callable[[list[str]], Tokenized],
        forward: Forward,
    ) -> M3Output:
        """Dense, sparse and ColBERT outputs from one forward pass per batch.

        Chunked texts are combined as :mod:`localembed.m3` describes.
        """
        sparse_head = self.load_head("sparse") if sparse else None
        colbert_head = self.load_head("colbert") if colbert else None
        tokenized = tokenize(items)
        windows = len(tokenized.ids)
        normalize = settings.normalize
        dense_rows = np.empty((windows, self.dimension), dtype=np.float32) if dense else None
        sparse_rows: list[dict[int, float]] = [{} for _ in range(windows if sparse else 0)]
        colbert_rows: list[np.ndarray] = []
        if colbert:
            colbert_rows = [np.empty((0, 0), dtype=np.float32)] * windows
        unused = self.unused_token_ids() if sparse else frozenset()

        def consume(indices: list[int], batch: ForwardBatch) -> None:
            batch_dense, batch_sparse, batch_colbert = batch_outputs(
                batch,
                pooling=settings.pooling if dense else None,
                normalize=normalize,
                # Chunked texts' dense vectors are normalized after their windows are combined.
                normalize_dense=normalize and not tokenized.chunked,
                sparse_head=sparse_head,
                colbert_head=colbert_head,
                unused_ids=unused,
            )
            if dense_rows is not None and batch_dense is not None:
                dense_rows[indices] = batch_dense
            if batch_sparse is not None:
                for index, weights in zip(indices, batch_sparse, strict=True):
                    sparse_rows[index] = weights
            if batch_colbert is not None:
                for index, vectors in zip(indices, batch_colbert, strict=True):
                    colbert_rows[index] = vectors

        if windows:
            self.run(tokenized, consume, settings, options, forward)
        output = M3Output(
            dense=dense_rows,
            sparse=sparse_rows if sparse else None,
            colbert=colbert_rows if colbert else None,
        )
        return output.combine(tokenized, normalize=normalize) if tokenized.chunked else output

    def token_embeddings(
        self,
        tokenized: Tokenized,
        settings: ResolvedSettings,
        options: CallOptions,
        forward: Forward,
    ) -> list[TokenEmbeddings]:
        """Each text's tokens and last hidden states (one window per text)."""
        results: list[TokenEmbeddings | None] = [None] * tokenized.count
        tokenizer = self.files.tokenizer

        def keep_tokens(indices: list[int], batch: ForwardBatch) -> None:
            hidden = batch.hidden.float().cpu().numpy()
            for row, index in enumerate(indices):
                ids = tokenized.ids[index]
                tokens = tokenizer.convert_ids_to_tokens(ids)
                results[index] = TokenEmbeddings(list(tokens), hidden[row, : len(ids)].copy())

        self.run(tokenized, keep_tokens, settings, options, forward)
        return [result for result in results if result is not None]


def load_backend(files: ModelFiles, config: EncoderConfig, settings: ResolvedSettings) -> Backend:
    """Load the weights with the backend ``config.backend`` names: the one place it is chosen."""
    device = resolve_device(config.device)
    check_speed_options(config, config.backend, device, resolve_dtype(config.dtype, device))
    if config.backend == "flagembedding":
        from localembed.flagembedding import FlagEmbeddingBackend

        return FlagEmbeddingBackend(files, config, settings)
    if is_contextual(files.model_config):
        from localembed.contextual_backend import ContextualBackend

        return ContextualBackend(files, config)
    return TransformerBackend(files, config)
