"""The framework-free base of the four adapters (LangChain and LlamaIndex, dense and sparse).

:class:`EncoderAdapter` is every :class:`~localembed.EncoderConfig` option, mutable and
validated on assignment, with the shared encoder behind an ``encoder`` property, loaded
when the adapter is built (a bad setting fails there, not on first use). The adapter
packages add the framework's base class and convert the encoder's arrays to the framework's
types; they hold no model maths.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ConfigDict, model_validator

from localembed.config import EncoderConfig
from localembed.encoder import get_encoder
from localembed.texts import check_text, check_texts

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from localembed.contextual import CorpusContext
    from localembed.encoder import LocalEncoder

__all__ = [
    "LIST_CHUNK_VALUES",
    "EncoderAdapter",
    "ato_lists",
    "check_text",
    "check_texts",
    "to_lists",
]

LIST_CHUNK_VALUES = 1 << 15
"""Floats converted to Python per step of :func:`to_lists` (about a millisecond of GIL each)."""


def to_lists(vectors: np.ndarray) -> list[list[float]]:
    """``vectors.tolist()`` in steps, letting other threads (an event loop) run between them.

    One ``tolist`` of 20,000 x 384 floats holds the GIL for ~100 ms in a worker thread, which
    stalls an asyncio loop waiting on it.

    Example:
        >>> import numpy as np
        >>> to_lists(np.eye(2, dtype=np.float32))
        [[1.0, 0.0], [0.0, 1.0]]

    """
    rows = _rows_per_step(vectors)
    result: list[list[float]] = []
    for start in range(0, len(vectors), rows):
        if start:
            time.sleep(0)
        result.extend(vectors[start : start + rows].tolist())
    return result


async def ato_lists(vectors: np.ndarray) -> list[list[float]]:
    """:func:`to_lists` on the event loop, handing the loop back between steps."""
    rows = _rows_per_step(vectors)
    result: list[list[float]] = []
    for start in range(0, len(vectors), rows):
        if start:
            await asyncio.sleep(0)
        result.extend(vectors[start : start + rows].tolist())
    return result


def _rows_per_step(vectors: np.ndarray) -> int:
    return max(1, LIST_CHUNK_VALUES // max(1, vectors.shape[1] if vectors.ndim > 1 else 1))


class EncoderAdapter(EncoderConfig):
    """Every encoder option, mutable and validated on assignment, plus the shared encoder."""

    model_config = ConfigDict(frozen=False, validate_assignment=True)

    required_heads: ClassVar[tuple[str, ...]] = ()
    """bge-m3 heads the adapter needs, loaded with the model (e.g. ``("sparse",)``)."""

    show_progress: bool = False
    """Show a tqdm progress bar over the texts of each embedding call."""

    def model_post_init(self, context: Any, /) -> None:
        """Load the model (and its heads) now, so that a bad setting fails here."""
        encoder = get_encoder(self)
        for name in self.required_heads:
            encoder.load_head(name)

    @property
    def encoder(self) -> LocalEncoder:
        """The shared encoder behind this adapter."""
        return get_encoder(self)

    def fit_context(
        self,
        corpus: Sequence[str],
        size: int | None = None,
        seed: int = 0,
        *,
        oversample: bool = False,
    ) -> CorpusContext:
        """CDE models: build the corpus context from ``corpus`` and use it from now on.

        The same as ``adapter.context = adapter.encoder.build_context(corpus, size, seed)``
        (see :meth:`localembed.LocalEncoder.build_context`); returns the context, to
        ``.save(path)`` and pass as ``context=path`` next time.
        """
        context = self.encoder.build_context(corpus, size, seed, oversample=oversample)
        self.context = context
        return context

    huggingface_anchor: ClassVar[str | None] = None
    """Whose arguments this adapter also accepts (``"langchain"``: langchain-huggingface's
    ``HuggingFaceEmbeddings``, ``"llamaindex"``: llama-index's ``HuggingFaceEmbedding``),
    translated by :mod:`localembed.migration`; None: none."""

    @model_validator(mode="before")
    @classmethod
    def _from_huggingface(cls, data: Any) -> Any:
        if cls.huggingface_anchor is None or not isinstance(data, dict):
            return data
        from localembed.migration import HUGGINGFACE_ANCHORS

        return HUGGINGFACE_ANCHORS[cls.huggingface_anchor](data)
