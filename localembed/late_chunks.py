"""Late chunking: embed a document once, then pool each chunk's span of token vectors.

A chunk embedded alone loses its document (a chunk saying "It was founded in 1871" no longer
says what "it" is); a late chunk's tokens have attended to the whole document (or to the
larger window around them), so its vector carries that context.

Stage API (pure: token ids, offsets and arrays in, no model):

- :func:`chunk_char_spans`: where each chunk lies in the text (chunks are substrings, in
  order; the first one that is not is an error naming it).
- :func:`plan_late_chunks`: the document's tokens as model windows (each with the special
  tokens and the instruction's tokens; overlapping when the document is longer than one
  window) and each chunk's token span; every token takes its vector from the window where it
  has the most context on both sides.
- :func:`gather_token_vectors`: the document's token vectors from the windows' outputs.

The encoder runs the windows through its token-embeddings path and pools each span with the
model's pooling (:mod:`localembed.pooling`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "LATE_CHUNK_OVERLAP_DIVISOR",
    "DocumentTokens",
    "LateChunkPlan",
    "chunk_char_spans",
    "gather_token_vectors",
    "plan_late_chunks",
]

LATE_CHUNK_OVERLAP_DIVISOR = 4
"""Consecutive windows of a long document share a quarter of their text tokens."""


@dataclass(frozen=True)
class DocumentTokens:
    """A whole document tokenized once, without truncation."""

    ids: list[int]
    """Token ids, special tokens included."""
    offsets: list[tuple[int, int]]
    """Character span of each token in the tokenized string ((0, 0) for special tokens)."""
    special: list[int]
    """1 for a special token ([CLS], [SEP], <s>, </s>...), else 0."""


@dataclass(frozen=True)
class LateChunkPlan:
    """The model windows of one document and each chunk's token span in its text tokens."""

    windows: list[list[int]]
    """Token ids of each window: leading specials + instruction + text tokens + trailing."""
    sources: list[tuple[int, int]]
    """For each text token: (window, position in that window) its vector comes from."""
    spans: list[tuple[int, int]]
    """For each chunk: [start, stop) in the text tokens."""


def chunk_char_spans(text: str, chunks: Sequence[str]) -> list[tuple[int, int]]:
    """``[start, stop)`` of each chunk in ``text``; chunks are substrings of it, in order.

    Chunk i is searched from one character after chunk i-1's start, so chunks may overlap
    (as a splitter's ``chunk_overlap`` makes them) and may skip text between them
    (whitespace a splitter strips); a repeated chunk is found at its next occurrence.

    Raises:
        TypeError: a chunk that is not a str (named by index).
        ValueError: no chunks, an empty or blank chunk, or a chunk not found in order.

    Example:
        >>> chunk_char_spans("Berlin is big. It has 3.8M people.", ["Berlin is big.", "It has"])
        [(0, 14), (15, 21)]

    """
    if not chunks:
        msg = "chunks is empty; pass the chunks of the text (e.g. from a text splitter)"
        raise ValueError(msg)
    spans: list[tuple[int, int]] = []
    search_from = 0
    for index, chunk in enumerate(chunks):
        if not isinstance(chunk, str):
            msg = f"chunk {index} is {type(chunk).__name__}, not str"
            raise TypeError(msg)
        if not chunk.strip():
            msg = f"chunk {index} is empty or blank; it has no tokens to pool"
            raise ValueError(msg)
        start = text.find(chunk, search_from)
        if start < 0:
            where = "in the text" if chunk not in text else "after the previous chunk"
            msg = (
                f"chunk {index} ({chunk[:40]!r}) is not found {where}; chunks must be "
                f"substrings of the text, in order"
            )
            raise ValueError(msg)
        spans.append((start, start + len(chunk)))
        search_from = start + 1
    return spans


def _edges(special: list[int]) -> tuple[int, int]:
    """The number of leading and trailing special tokens."""
    lead = 0
    while lead < len(special) and special[lead]:
        lead += 1
    trail = 0
    while trail < len(special) - lead and special[len(special) - 1 - trail]:
        trail += 1
    return lead, trail


def plan_late_chunks(
    document: DocumentTokens,
    char_spans: list[tuple[int, int]],
    *,
    text_start: int,
    max_length: int,
) -> LateChunkPlan:
    """Windows over ``document`` and each chunk's token span.

    Args:
        document: the instructed text, tokenized once with special tokens and offsets.
        char_spans: each chunk's characters in the text (:func:`chunk_char_spans`).
        text_start: where the text begins in the instructed string (the instruction's length).
        max_length: tokens per window, special tokens included.

    Returns:
        The plan. A token belongs to a chunk when their characters overlap.

    Raises:
        ValueError: a chunk that covers no token, or a window too small for the instruction.

    Example:
        >>> doc = DocumentTokens(
        ...     [101, 7, 8, 9, 10, 102], [(0, 0), (0, 1), (2, 3), (4, 5), (6, 7), (0, 0)],
        ...     [1, 0, 0, 0, 0, 1],
        ... )
        >>> plan = plan_late_chunks(doc, [(0, 3), (4, 7)], text_start=0, max_length=5)
        >>> plan.windows, plan.spans
        ([[101, 7, 8, 9, 102], [101, 8, 9, 10, 102]], [(0, 2), (2, 4)])
        >>> plan.sources
        [(0, 1), (0, 2), (1, 2), (1, 3)]

    """
    lead, trail = _edges(document.special)
    ids = document.ids[lead : len(document.ids) - trail]
    offsets = document.offsets[lead : len(document.offsets) - trail]
    # Instruction tokens (before the text starts) go in front of every window.
    prefix = 0
    while prefix < len(offsets) and offsets[prefix][0] < text_start:
        prefix += 1
    head = document.ids[:lead] + ids[:prefix]
    tail = document.ids[len(document.ids) - trail :]
    body = ids[prefix:]
    starts = np.asarray([start - text_start for start, _ in offsets[prefix:]])
    stops = np.asarray([stop - text_start for _, stop in offsets[prefix:]])
    spans: list[tuple[int, int]] = []
    for index, (char_start, char_stop) in enumerate(char_spans):
        inside = np.flatnonzero((starts < char_stop) & (stops > char_start))
        if inside.size == 0:
            msg = f"chunk {index} covers no token of the text"
            raise ValueError(msg)
        spans.append((int(inside[0]), int(inside[-1]) + 1))
    capacity = max_length - len(head) - len(tail)
    if capacity < 2:
        msg = (
            f"max_length {max_length} leaves {capacity} tokens per window after the special "
            f"and instruction tokens ({len(head) + len(tail)}); late chunking needs more"
        )
        raise ValueError(msg)
    bounds = _window_bounds(len(body), capacity)
    windows = [head + body[start:stop] + tail for start, stop in bounds]
    sources = []
    for token in range(len(body)):
        best = max(
            range(len(bounds)),
            key=lambda w: _context(token, bounds[w], len(body)),
        )
        sources.append((best, len(head) + token - bounds[best][0]))
    return LateChunkPlan(windows=windows, sources=sources, spans=spans)


def _window_bounds(length: int, capacity: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of overlapping windows of ``capacity`` tokens covering ``length``."""
    if length <= capacity:
        return [(0, length)]
    step = max(1, capacity - capacity // LATE_CHUNK_OVERLAP_DIVISOR)
    bounds = []
    start = 0
    while True:
        stop = min(start + capacity, length)
        bounds.append((stop - capacity, stop))
        if stop == length:
            return bounds
        start += step


def _context(token: int, bounds: tuple[int, int], length: int) -> tuple[int, int]:
    """How much context ``token`` has in a window: tokens on its poorer side, then richer.

    A window edge at the document's own start or end costs no context.
    """
    start, stop = bounds
    if not start <= token < stop:
        return (-1, -1)
    before = token - start if start > 0 else length
    after = stop - 1 - token if stop < length else length
    return (min(before, after), max(before, after))


def gather_token_vectors(plan: LateChunkPlan, window_vectors: list[np.ndarray]) -> np.ndarray:
    """(text tokens, hidden) vectors of the document, each from its chosen window.

    Args:
        plan: from :func:`plan_late_chunks`.
        window_vectors: the token vectors of each window (``encode(output="token_embeddings")``).

    Example:
        >>> plan = LateChunkPlan([[1, 2], [1, 2]], [(0, 1), (1, 0)], [(0, 2)])
        >>> gather_token_vectors(plan, [np.eye(2), 2 * np.eye(2)])
        array([[0., 1.],
               [2., 0.]], dtype=float32)

    """
    rows = [window_vectors[window][position] for window, position in plan.sources]
    return np.asarray(rows, dtype=np.float32)
