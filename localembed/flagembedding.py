"""The FlagEmbedding backend's old import path: see :mod:`localembed.backends.flagembedding`."""

from __future__ import annotations

from localembed.backends.flagembedding import (
    FLAGEMBEDDING_TRANSFORMERS,
    FlagEmbeddingBackend,
    flagembedding_import_message,
)

__all__ = ["FLAGEMBEDDING_TRANSFORMERS", "FlagEmbeddingBackend", "flagembedding_import_message"]
