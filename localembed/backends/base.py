"""The Backend protocol: what a loaded model does, and the types every backend shares.

Writing a new backend (a static-embedding table, a contextual model, another runtime)
------------------------------------------------------------------------------------------
A backend holds loaded weights and turns checked, instructed texts into outputs. It never
calls back into the encoder: everything it needs arrives as data (the texts and
:class:`CallOptions`), everything it gives back is data (:class:`~localembed.heads.Outputs`).
Implement:

- ``files`` (:class:`ModelFiles`, from :func:`read_model_files`), ``device``, ``dtype`` and
  ``dimension`` (the width of a dense vector before any ``truncate_dim`` cut);
- ``capabilities``: a frozenset naming what the backend makes (:data:`CAPABILITIES`):
  ``"dense"``, ``"sparse"``, ``"colbert"``, ``"logits"`` are outputs; ``"token_embeddings"``
  means :meth:`Backend.token_embeddings` works (late chunking, token output);
  ``"windows"`` means it is a :class:`WindowBackend` (tokenize / plan / run merged token
  windows: the micro-batcher runs on these); ``"chunk"`` that it embeds over-long texts as
  overlapping windows (``long_text="chunk"``); ``"token_budget"`` that it honours
  ``max_batch_tokens``. Callers test capabilities, never the backend's class;
- ``tokenize(items, options)``: the :class:`~localembed.windows.Tokenized` windows of the
  texts (the truncation count; an over-long text is warned about here);
- ``encode(items, outputs, options)``: an :class:`~localembed.heads.Outputs` with the
  requested ``outputs`` (a subset of ``capabilities``), item i for ``items[i]``. Dense rows
  are pooled and normalized as ``options`` says and not yet cut or quantized: the encoder
  finishes them (``truncate_dim``, precision, the non-finite check) in one place;
- ``token_embeddings(tokenized, options)``: each window's tokens and last hidden states
  (raise :class:`~localembed.errors.InputError` without the capability);
- ``check_options(options)``: refuse (``InputError``) call options it cannot honour;
- optionally ``unavailable``: capability -> why this backend lacks it, for the error a caller
  gets (without it: "it needs backend='torch' or 'onnx'").

Rows must not depend on batch neighbours (pad on the right, pool under the attention mask),
and one backend may be called from several threads at once (lock the forward pass).
:func:`~localembed.backends.load_backend` is the one place a backend is chosen: add the new
one there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

from localembed.corpus_context import is_contextual
from localembed.fingerprint import LoadedFingerprint
from localembed.loading import ModelSource, locate_model
from localembed.model_errors import UnsupportedModelError
from localembed.st_metadata import SentenceTransformersMetadata, read_sentence_transformers_metadata
from localembed.transformers_files import load_model_config, load_tokenizer
from localembed.windows import WindowTokenizer

if TYPE_CHECKING:
    import numpy as np
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from localembed.config import ModelOptions
    from localembed.corpus_context import CorpusContext
    from localembed.heads import Outputs
    from localembed.windows import Tokenized

__all__ = [
    "CAPABILITIES",
    "Backend",
    "CallOptions",
    "ModelFiles",
    "TokenEmbeddings",
    "UnsupportedModelError",
    "WindowBackend",
    "read_model_files",
    "static_model_files",
    "unavailable_reason",
]

CAPABILITIES = frozenset(
    {"dense", "sparse", "colbert", "logits", "token_embeddings", "windows", "chunk", "token_budget"}
)
"""Every capability a backend may name (see the module docstring)."""


def unavailable_reason(backend: object, capability: str) -> str:
    """Why ``backend`` lacks ``capability``: its ``unavailable`` entry, or the general reason."""
    reasons: dict[str, str] = getattr(backend, "unavailable", {})
    return reasons.get(capability, "it needs backend='torch' or 'onnx'")


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
    """What one call asks of a backend: the resolved settings and the call's own options."""

    batch_size: int
    """Windows per forward pass."""
    max_batch_tokens: int | None
    """Padded tokens per forward pass; None: the device's default."""
    long_text: Literal["truncate", "chunk"]
    """Over-long texts: one truncated window, or overlapping windows."""
    show_progress: bool = False
    """Show a progress bar."""
    pooling: str = "cls"
    """The dense pooling mode (a key of ``localembed.pooling.POOLING_FUNCTIONS``)."""
    normalize: bool = True
    """L2-normalize dense (and ColBERT) vectors."""
    max_length: int = 512
    """Tokens per window, special tokens included."""
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
    loaded: LoadedFingerprint | None = field(default=None, compare=False)
    """The files' fingerprint as they were when read (None: not taken)."""

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the model files' content *as they were read* (the weights loaded).

        Raises:
            ModelError: the files changed on disk since they were read.
        """
        loaded = self.loaded
        if loaded is None:
            loaded = LoadedFingerprint(self.source.path, self.source.name)
            object.__setattr__(self, "loaded", loaded)
        return loaded.value()


def read_model_files(
    config: ModelOptions,
    *,
    source: ModelSource | None = None,
    what: str = "localembed (only Transformer, one Pooling mode, Normalize)",
) -> ModelFiles:
    """Locate the model (unless ``source`` is given); read its metadata, tokenizer, config.

    No weights are read.

    Raises:
        ModelError: the model has sentence-transformers modules ``what`` cannot run.
    """
    if source is None:
        source = locate_model(config.model, allow_pickle_weights=config.allow_pickle_weights)
    from localembed.static import is_static_model

    # The files' state before anything is read: what the loaded weights are keyed by.
    loaded = LoadedFingerprint(source.path, source.name)
    if is_static_model(source.path):  # `localembed distill`'s output (model2vec's format)
        return dataclasses.replace(static_model_files(source), loaded=loaded)
    metadata = read_sentence_transformers_metadata(source.path)
    if metadata.unsupported_modules:
        msg = (
            f"{source.name}: sentence-transformers modules "
            f"{', '.join(metadata.unsupported_modules)} are not supported by {what}"
        )
        raise UnsupportedModelError(msg)
    path = metadata.transformer_path
    model_config = load_model_config(path, trust_remote_code=config.trust_remote_code)
    if is_contextual(model_config):  # a CDE model's tokenizer may be named by its config
        from localembed.corpus_context import contextual_tokenizer

        tokenizer = contextual_tokenizer(path, model_config, config.trust_remote_code)
    else:
        tokenizer = load_tokenizer(path, trust_remote_code=config.trust_remote_code)
    windows = WindowTokenizer(tokenizer)
    return ModelFiles(source, metadata, tokenizer, model_config, windows, loaded)


def static_model_files(source: ModelSource) -> ModelFiles:
    """The :class:`~localembed.backends.base.ModelFiles` of a static model.

    Its sentence-transformers metadata says what a static model does: mean pooling, the
    config's ``normalize`` and ``max_length``, and no instructions (model2vec adds none).
    """
    from transformers import PretrainedConfig, PreTrainedTokenizerFast

    from localembed.static import (
        TOKENIZER_FILE,
        embeddings_shape,
        read_static_config,
        static_max_length,
    )

    path = source.path
    config = read_static_config(path)
    tokens, dimension = embeddings_shape(path)
    max_length = static_max_length(config)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path / TOKENIZER_FILE))  # type: ignore[no-untyped-call]
    model_config = PretrainedConfig(  # type: ignore[call-arg]
        hidden_size=dimension,
        max_position_embeddings=max_length or 1_000_000,
        vocab_size=tokens,
    )
    metadata = SentenceTransformersMetadata(
        transformer_path=path,
        pooling="mean",
        normalize=bool(config.get("normalize", False)),
        max_seq_length=max_length,
        prompts={"query": "", "document": ""},
    )
    return ModelFiles(source, metadata, tokenizer, model_config, WindowTokenizer(tokenizer))


class Backend(Protocol):
    """A loaded model behind one interface (see the module docstring for what to implement)."""

    files: ModelFiles
    device: torch.device
    dtype: torch.dtype
    dimension: int
    capabilities: frozenset[str]

    def check_options(self, options: CallOptions) -> None:
        """Refuse call options this backend cannot honour."""

    def tokenize(self, items: list[str], options: CallOptions) -> Tokenized:
        """Checked, instructed texts -> token windows (counts and warns about truncation)."""

    def encode(self, items: list[str], outputs: Sequence[str], options: CallOptions) -> Outputs:
        """The requested outputs of checked, instructed texts; item i for ``items[i]``."""

    def token_embeddings(self, tokenized: Tokenized, options: CallOptions) -> list[TokenEmbeddings]:
        """Each window's tokens and last hidden states."""


class WindowBackend(Backend, Protocol):
    """A backend that runs token windows (capability ``"windows"``): the micro-batcher's."""

    def plan(self, lengths: Sequence[int], options: CallOptions) -> list[list[int]]:
        """Group windows (by token count) into batches, longest first."""

    def dense_batches(
        self, ids: list[list[int]], normalize: Sequence[bool], options: CallOptions
    ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Run windows in planned batches; yield each batch's indices and dense rows."""
