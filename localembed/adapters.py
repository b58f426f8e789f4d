"""The framework-free base of the four adapters (LangChain and LlamaIndex, dense and sparse).

:class:`EncoderAdapter` is every :class:`~localembed.EncoderConfig` option, mutable and
validated on assignment, with the shared encoder behind an ``encoder`` property, loaded
when the adapter is built (a bad setting fails there, not on first use). The adapter
packages add the framework's base class and convert the encoder's arrays to the framework's
types; they hold no model maths.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ConfigDict, model_validator

from localembed.config import EncoderConfig
from localembed.encoder import get_encoder
from localembed.errors import InputError
from localembed.forks import ForkSafeLock
from localembed.texts import check_text, check_texts

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np

    from localembed.contextual import CorpusContext
    from localembed.encoder import LocalEncoder

__all__ = [
    "LIST_CHUNK_VALUES",
    "EncoderAdapter",
    "ato_lists",
    "check_text",
    "check_texts",
    "collect_young_rows",
    "refit_chunks",
    "to_lists",
]

LIST_CHUNK_VALUES = 1 << 15
"""Floats converted to Python per step of :func:`to_lists` (about a millisecond of GIL each)."""


def refit_chunks(
    chunks: list[str],
    size: int,
    overflow: Callable[[str], int],
    split: Callable[[str, int], list[str]],
) -> list[str]:
    """``chunks``, each that overflows the window split again smaller until every one fits.

    A splitter counts a chunk's own tokens; the encoder tokenizes the instruction and the
    chunk together, which can take more (a sentencepiece tokenizer joins ``"passage:"`` to the
    first word). Each chunk is measured as the encoder will tokenize it (``overflow``: tokens
    beyond the window), and one that overflows is split by ``split(chunk, smaller_size)``.

    Args:
        chunks: a splitter's chunks, in order.
        size: the splitter's chunk size (tokens).
        overflow: tokens a chunk exceeds the window by (``encoder.chunk_overflow``).
        split: the same splitter with another chunk size and no overlap, on one chunk.

    Raises:
        InputError: a chunk that no smaller size splits (a single token that overflows).

    Example:
        >>> refit_chunks(["ab", "abcd"], 3, lambda c: len(c) - 3, lambda c, n: [c[:n], c[n:]])
        ['ab', 'ab', 'cd']

    """
    from localembed.errors import InputError

    fitted: list[str] = []
    pending = [(chunk, size) for chunk in reversed(chunks)]
    while pending:
        chunk, limit = pending.pop()
        excess = overflow(chunk)
        if excess <= 0:
            fitted.append(chunk)
            continue
        smaller = max(1, limit - excess)
        pieces = [piece for piece in split(chunk, smaller) if piece.strip()]
        if pieces == [chunk] or not pieces:
            if limit <= 1:
                msg = f"chunk {chunk[:40]!r} overflows the window by {excess} tokens, unsplittable"
                raise InputError(msg)
            pending.append((chunk, smaller))  # measured again against a smaller size
            continue
        pending.extend((piece, smaller) for piece in reversed(pieces))
    return fitted


def to_lists(vectors: np.ndarray) -> list[list[float]]:
    """``vectors.tolist()`` in steps, letting other threads (an event loop) run between them.

    One ``tolist`` of 20,000 x 384 floats holds the GIL for ~100 ms in a worker thread, which
    stalls an asyncio loop waiting on it; so does the garbage collector's pass over the new
    row lists (see :func:`collect_young_rows`), which this bounds too.

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
        step = vectors[start : start + rows]
        result.extend(step.tolist())
        collect_young_rows(step.size)
    return result


GC_PASS_VALUES = 1 << 16
"""Floats in new row lists between two young collections (:func:`collect_young_rows`):
a collector pass over them takes a few milliseconds."""

_young_values = 0
_young_lock = ForkSafeLock()


def collect_young_rows(values: int) -> None:
    """Count ``values`` floats just put in new row lists; collect young objects per 2^16.

    Every :data:`GC_PASS_VALUES` of them, the young generations are collected
    (``gc.collect(1)``). CPython's collector traverses every list in a generation it
    collects, item by item, with the GIL held, and collects generation 1 after ten passes
    over generation 0 (7,000 new tracked objects by default): row lists of 384 floats make
    that one pass over ~2.7 million items, 50-250 ms (more on a loaded machine), in
    whichever thread allocates next, the event loop's often. Collected per bounded amount,
    each pass takes a few milliseconds and moves the rows to the old generation, where only
    full collections (rare: CPython waits until the objects added since the last one are a
    quarter of the heap) visit them. The collector's settings are untouched, and nothing is
    collected while the application has disabled it (``gc.disable()``).
    """
    global _young_values
    with _young_lock:
        _young_values += values
        if _young_values < GC_PASS_VALUES:
            return
        _young_values = 0
    if gc.isenabled():
        gc.collect(1)


LOOP_LIST_VALUES = 4096
"""Arrays of at most this many floats are converted on the event loop (a few rows: the
thread hop would cost more than the conversion); larger ones in a worker thread."""


async def ato_lists(vectors: np.ndarray) -> list[list[float]]:
    """:func:`to_lists` off the event loop; the caller resumes in a loop iteration of its own.

    Converting is Python-object work that holds the GIL (~100 ms for 20,000 x 384 floats,
    ~0.5 ms for 64 rows); done on the loop it adds up when many coroutines wake at once
    (LlamaIndex splits a batch into concurrent calls, which the micro-batcher finishes in
    the same round). In a worker thread, in steps, the loop gets the GIL between them; and
    each caller then waits its turn (:func:`~localembed.microbatch.take_turn`), so that the
    callers' own work after the conversion (LlamaIndex validating and reporting the rows)
    runs one caller per loop iteration, not all of them in one.
    """
    from localembed.microbatch import take_turn

    if vectors.size <= LOOP_LIST_VALUES:
        lists = to_lists(vectors)
    else:
        lists = await asyncio.to_thread(to_lists, vectors)
    await take_turn()
    return lists


def _rows_per_step(vectors: np.ndarray) -> int:
    return max(1, LIST_CHUNK_VALUES // max(1, vectors.shape[1] if vectors.ndim > 1 else 1))


class EncoderAdapter(EncoderConfig):
    """Every encoder option, mutable and validated on assignment, plus the shared encoder."""

    model_config = ConfigDict(frozen=False, validate_assignment=True)

    required_heads: ClassVar[tuple[str, ...]] = ()
    """bge-m3 heads the adapter needs, loaded with the model (e.g. ``("sparse",)``)."""

    show_progress: bool = False
    """Show a tqdm progress bar over the texts of each embedding call."""

    caches_output: ClassVar[bool] = True
    """Whether the embedding cache (``cache=``) holds this adapter's output (dense vectors)."""

    def model_post_init(self, context: Any, /) -> None:
        """Load the model (and its heads) now, so that a bad setting fails here."""
        if self.cache is not None and not self.caches_output:
            msg = (
                f"{type(self).__name__} does not take cache={self.cache!r}: the embedding "
                "cache holds dense vectors, not sparse weights; use cache= on the dense "
                "adapter (both share one loaded model)"
            )
            raise InputError(msg)
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
