"""localembed: local text-embedding models behind one shared encoder.

The framework adapters live in ``langchain_localembed`` and ``llamaindex_localembed``.
Importing this package loads no model and touches no network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localembed.config import EncoderConfig, RerankerConfig
from localembed.errors import (
    InputError,
    InputTypeError,
    LocalEmbedError,
    MissingExtraError,
    ModelError,
    RuntimeFault,
)
from localembed.faults import EncoderOutOfMemoryError, NonFiniteEmbeddingError
from localembed.model_errors import ModelFileError, ModelNotFoundError
from localembed.pooling import POOLING_MODES
from localembed.registry import available_adapters, load_adapter

if TYPE_CHECKING:
    from localembed.contextual import CorpusContext, load_context
    from localembed.encoder import (
        LocalEncoder,
        TokenEmbeddings,
        clear_encoder_cache,
        get_encoder,
    )
    from localembed.reranker import LocalReranker, clear_reranker_cache, get_reranker

__all__ = [
    "POOLING_MODES",
    "CorpusContext",
    "EncoderConfig",
    "EncoderOutOfMemoryError",
    "InputError",
    "InputTypeError",
    "LocalEmbedError",
    "MissingExtraError",
    "ModelError",
    "RuntimeFault",
    "LocalEncoder",
    "LocalReranker",
    "ModelFileError",
    "ModelNotFoundError",
    "NonFiniteEmbeddingError",
    "RerankerConfig",
    "TokenEmbeddings",
    "available_adapters",
    "clear_encoder_cache",
    "clear_reranker_cache",
    "get_encoder",
    "get_reranker",
    "load_adapter",
    "load_context",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The encoder module imports numpy; keep `import localembed` light until it is used.
    if name in {"LocalEncoder", "TokenEmbeddings", "get_encoder", "clear_encoder_cache"}:
        from localembed import encoder

        return getattr(encoder, name)
    if name in {"CorpusContext", "load_context"}:
        from localembed import contextual

        return getattr(contextual, name)
    if name in {"LocalReranker", "get_reranker", "clear_reranker_cache"}:
        from localembed import reranker

        return getattr(reranker, name)
    msg = f"module 'localembed' has no attribute {name!r}"
    raise AttributeError(msg)
