"""localembed: local text-embedding models behind one shared encoder.

The framework adapters live in ``langchain_localembed`` and ``llamaindex_localembed``.
Importing this package loads no model and touches no network.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localembed.config import EncoderConfig, RerankerConfig
    from localembed.contextual import CorpusContext, load_context
    from localembed.encoder import (
        LocalEncoder,
        TokenEmbeddings,
        clear_encoder_cache,
        get_encoder,
    )
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


_HOMES = {
    "config": ("EncoderConfig", "RerankerConfig"),
    "errors": (
        "InputError",
        "InputTypeError",
        "LocalEmbedError",
        "MissingExtraError",
        "ModelError",
        "RuntimeFault",
    ),
    "faults": ("EncoderOutOfMemoryError", "NonFiniteEmbeddingError"),
    "model_errors": ("ModelFileError", "ModelNotFoundError"),
    "pooling": ("POOLING_MODES",),
    "registry": ("available_adapters", "load_adapter"),
    "encoder": ("LocalEncoder", "TokenEmbeddings", "get_encoder", "clear_encoder_cache"),
    "contextual": ("CorpusContext", "load_context"),
    "reranker": ("LocalReranker", "get_reranker", "clear_reranker_cache"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    # Every public name is imported on first use: `import localembed` loads no pydantic,
    # numpy or torch (the `localembed` command takes Ctrl-C before it imports them).
    module = _HOME.get(name)
    if module is None:
        msg = f"module 'localembed' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f"localembed.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
