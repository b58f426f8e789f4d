"""What :class:`~localembed.encoder.LocalEncoder`'s method groups read from the encoder.

:class:`EncoderBase` declares the loaded state (set by ``LocalEncoder.__init__``) and the
private helpers that the groups of methods in :mod:`localembed.encoder_cde` and
:mod:`localembed.encoder_tokens` call, so that each group type-checks alone. It holds no
code: the encoder in :mod:`localembed.encoder` defines every one of these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from localembed.backends.base import Backend, CallOptions
    from localembed.config import EncoderConfig
    from localembed.corpus_context import CorpusContext
    from localembed.loading import ModelSource
    from localembed.precision import Precision
    from localembed.settings import ResolvedSettings
    from localembed.windows import WindowTokenizer

__all__ = ["EncoderBase"]


class EncoderBase:
    """The state of a loaded encoder, as its method groups see it (declarations only)."""

    config: EncoderConfig
    source: ModelSource
    tokenizer: PreTrainedTokenizerBase
    model_config: PretrainedConfig
    settings: ResolvedSettings
    backend: Backend
    context: CorpusContext | None
    device: torch.device
    dtype: torch.dtype
    dimension: int
    _windows: WindowTokenizer

    if TYPE_CHECKING:  # defined by LocalEncoder

        def _options(self, batch_size: int | None, show_progress: bool = False) -> CallOptions: ...

        def _require(self, capability: str, what: str) -> None: ...

        def finish(
            self,
            vectors: np.ndarray,
            precision: Precision = "float32",
            ranges: np.ndarray | None = None,
            *,
            dimensions: int | None = None,
        ) -> np.ndarray:
            """Pooled float vectors -> the output (see ``LocalEncoder.finish``)."""
