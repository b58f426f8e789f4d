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
    "PLACEMENT_TRIES",
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
    """``[start, stop)`` of each chunk in ``text``: chunks are substrings of it, in order.

    Each chunk starts after the previous one's end with only whitespace between them (what
    a splitter strips), or overlaps the previous one's end (as a splitter's
    ``chunk_overlap`` makes it: a later start and a later end). Text before the first chunk
    and after the last is allowed (chunks of part of a document), but a placement that
    covers the whole text is preferred; among placements of one chunk, the one right after
    the previous chunk comes first, then the smallest overlap. So a chunk whose words
    repeat earlier in the text is never located inside an earlier chunk.

    Raises:
        TypeError: a chunk that is not a str (named by index).
        ValueError: no chunks, an empty or blank chunk, or a chunk that cannot be placed
            (named by index and first words).

    Example:
        >>> chunk_char_spans("Berlin is big. It has 3.8M people.", ["Berlin is big.", "It has"])
        [(0, 14), (15, 21)]
        >>> chunk_char_spans("a b. a b. a b.", ["a b. a b.", "a b."])
        [(0, 9), (10, 14)]

    """
    if not chunks:
        msg = "chunks is empty; pass the chunks of the text (e.g. from a text splitter)"
        raise ValueError(msg)
    for index, chunk in enumerate(chunks):
        if not isinstance(chunk, str):
            msg = f"chunk {index} is {type(chunk).__name__}, not str"
            raise TypeError(msg)
        if not chunk.strip():
            msg = f"chunk {index} is empty or blank; it has no tokens to pool"
            raise ValueError(msg)
    checked = list(chunks)
    for index, chunk in enumerate(checked):
        if chunk not in text:
            msg = f"chunk {index} ({chunk[:40]!r}) is not found in the text; {_RULE}"
            raise ValueError(msg)
    # The whole text can be covered only if the last chunk can end it.
    tail = len(text.rstrip())
    last = checked[-1]
    covers = any(
        not text[p + len(last) :].strip()
        for p in _occurrences(text, last, max(0, tail - len(last)), len(text))
    )
    for whole in (True, False) if covers else (False,):
        spans, stuck = _place(text, checked, whole=whole)
        if spans is not None:
            return spans
    msg = (
        f"chunk {stuck} ({checked[stuck][:40]!r}) is not found after the previous chunk "
        f"(chunk {stuck - 1}): it must start after that chunk's end with only whitespace "
        f"between them, or overlap that chunk's end; {_RULE}"
    )
    raise ValueError(msg)


_RULE = "chunks must be substrings of the text, in order"
PLACEMENT_TRIES = 20_000
"""Chunk placements tried (beyond one per chunk) before chunks are refused as unplaceable."""


def _occurrences(text: str, chunk: str, start: int, stop: int) -> list[int]:
    """Every position p in ``[start, stop)`` where ``chunk`` occurs in ``text``."""
    found = []
    position = text.find(chunk, start)
    while 0 <= position < stop:
        found.append(position)
        position = text.find(chunk, position + 1)
    return found


def _candidates(
    text: str, chunk: str, previous: tuple[int, int] | None, *, whole: bool
) -> list[int]:
    """Where ``chunk`` may start after ``previous`` (its span), in order of preference."""
    if previous is None:
        lead = len(text) - len(text.lstrip())
        return _occurrences(text, chunk, 0, lead + 1 if whole else len(text))
    start, end = previous
    gap = end + len(text[end:]) - len(text[end:].lstrip())
    following = _occurrences(text, chunk, end, gap + 1)
    overlapping = [
        position
        for position in _occurrences(text, chunk, start + 1, end)
        if position + len(chunk) > end
    ]
    return following + overlapping[::-1]


def _place(
    text: str, chunks: list[str], *, whole: bool
) -> tuple[list[tuple[int, int]] | None, int]:
    """Place every chunk (depth first, dead ends remembered), else name the deepest stuck one.

    With ``whole``, only whitespace may come before the first chunk and after the last.
    """
    dead: set[tuple[int, int]] = set()
    placed: list[tuple[int, int]] = []
    levels = [iter(_candidates(text, chunks[0], None, whole=whole))]
    stuck = 0
    tries = PLACEMENT_TRIES + len(chunks)
    while levels:
        index = len(levels) - 1
        position = next((p for p in levels[-1] if (index, p) not in dead), None)
        tries -= 1
        if position is None or tries < 0:
            if tries < 0:  # every placement tried runs into a chunk that cannot follow
                return None, stuck
            levels.pop()
            stuck = max(stuck, index)
            if placed:
                dead.add((index - 1, placed.pop()[0]))
            continue
        span = (position, position + len(chunks[index]))
        if index + 1 == len(chunks):
            if not whole or not text[span[1] :].strip():
                return [*placed, span], stuck
            dead.add((index, position))
            continue
        placed.append(span)
        levels.append(iter(_candidates(text, chunks[index + 1], span, whole=whole)))
    return None, stuck


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
