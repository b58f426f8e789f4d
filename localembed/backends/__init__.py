"""The engine: a loaded model behind one protocol, chosen in one place (:func:`load_backend`).

- :mod:`localembed.backends.base`: the :class:`~localembed.backends.base.Backend` protocol
  (capabilities, ``encode(items, outputs, options)``, token embeddings) and the shared types;
  read its docstring to write a new backend.
- :mod:`localembed.backends.transformer`: a transformers model on a runtime (torch or ONNX).
- :mod:`localembed.backends.flagembedding`: FlagEmbedding's ``BGEM3FlagModel`` (the reference).
- :mod:`localembed.backends.cross_encoder`: (query, document) pairs -> logits.
- :mod:`localembed.backends.contextual`: a contextual document embedding (CDE) model's two
  stages, given a corpus context.

A backend holds the weights and is shared by every encoder whose settings differ only in
call-time options (batch size, token budget, long-text mode, instructions): those arrive
with each call as :class:`~localembed.backends.base.CallOptions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

from localembed.backends.base import (
    CAPABILITIES,
    Backend,
    CallOptions,
    ModelFiles,
    TokenEmbeddings,
    WindowBackend,
    read_model_files,
)
from localembed.backends.transformer import TransformerBackend
from localembed.corpus_context import is_contextual
from localembed.runtimes import check_speed_options, resolve_device, resolve_dtype

if TYPE_CHECKING:
    from localembed.backends.cross_encoder import CrossEncoderBackend
    from localembed.config import EncoderConfig, RerankerConfig
    from localembed.settings import ResolvedSettings

__all__ = [
    "CAPABILITIES",
    "Backend",
    "CallOptions",
    "ModelFiles",
    "TokenEmbeddings",
    "TransformerBackend",
    "WindowBackend",
    "load_backend",
    "read_model_files",
]


@overload
def load_backend(
    files: ModelFiles, config: EncoderConfig, settings: ResolvedSettings
) -> Backend: ...


@overload
def load_backend(files: ModelFiles, config: RerankerConfig) -> CrossEncoderBackend: ...


def load_backend(
    files: ModelFiles,
    config: EncoderConfig | RerankerConfig,
    settings: ResolvedSettings | None = None,
) -> Backend | CrossEncoderBackend:
    """Load the weights with the backend the settings name: the one place it is chosen.

    A :class:`~localembed.config.RerankerConfig` gets the cross-encoder backend; an
    :class:`~localembed.config.EncoderConfig` gets FlagEmbedding's (``backend="flagembedding"``)
    or the transformers backend (torch or ONNX runtime).

    Raises:
        InputError: a speed option the backend or device cannot honour.
        MissingExtraError: the backend's package is not installed.
    """
    from localembed.config import RerankerConfig

    device = resolve_device(config.device)
    check_speed_options(config, config.backend, device, resolve_dtype(config.dtype, device))
    if isinstance(config, RerankerConfig):
        from localembed.backends.cross_encoder import CrossEncoderBackend

        return CrossEncoderBackend(files, config)
    if config.backend == "flagembedding":
        from localembed.backends.flagembedding import FlagEmbeddingBackend

        assert settings is not None
        return FlagEmbeddingBackend(files, config, settings)
    if is_contextual(files.model_config):
        from localembed.backends.contextual import ContextualBackend

        return ContextualBackend(files, config)
    return TransformerBackend(files, config)
