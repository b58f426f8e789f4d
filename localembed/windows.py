"""Windows stage: texts -> model-ready token windows (truncate or chunk), and back.

Stage API:

- :class:`WindowTokenizer` tokenizes checked texts into :class:`Tokenized` windows with a
  private copy of the model's tokenizer, under a lock: the public ``encoder.tokenizer`` may be
  used (with any truncation settings) by other threads at the same time without changing
  either result. With ``long_text="truncate"`` a text gives one window (its first
  ``max_length`` tokens) and over-long texts are counted; with ``"chunk"`` an over-long text
  gives several overlapping windows. Long inputs are tokenized in slices, so that a worker
  thread lets others (an event loop) run between them.
- :meth:`Tokenized.concat` joins the windows of several callers into one (for a
  micro-batcher: one plan over everyone's texts), :meth:`Tokenized.text_ranges` tells the
  rows of each caller apart again.
- :func:`combine_windows` turns per-window vectors into one vector per text (chunking).
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from localembed.errors import RuntimeFault
from localembed.forks import ForkSafeLock

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "CHARS_PER_TOKEN_BOUND",
    "CHUNK_OVERLAP_DIVISOR",
    "TOKENIZE_SLICE",
    "Tokenized",
    "WindowTokenizer",
    "combine_windows",
]

CHARS_PER_TOKEN_BOUND = 64
"""With long_text="truncate", texts are cut to max_length * 64 characters before tokenizing."""

CHUNK_OVERLAP_DIVISOR = 8
"""With long_text="chunk", consecutive windows share max_length // 8 tokens."""

TOKENIZE_SLICE = 512
"""Texts tokenized per call of the tokenizer; between slices other threads get the GIL."""

LongText = Literal["truncate", "chunk"]


class TokenizerFault(RuntimeFault, RuntimeError):
    """The tokenizer gave no window for some texts."""


@dataclass(frozen=True)
class Tokenized:
    """Texts as model-ready token windows (no padding)."""

    ids: list[list[int]]
    """Token ids of each window, special tokens included."""
    owners: list[int]
    """Index of the text each window belongs to (ascending)."""
    count: int
    """Number of texts."""
    truncated: int
    """Texts cut to max_length (long_text="truncate")."""
    chunked: bool
    """Whether some text was split into several windows (long_text="chunk")."""
    truncated_rows: tuple[int, ...] = ()
    """Indices of the texts cut to max_length (ascending)."""

    @classmethod
    def concat(cls, parts: list[Tokenized]) -> Tokenized:
        """The windows of several tokenizations as one (texts renumbered in order).

        Example:
            >>> a = Tokenized([[1, 2]], [0], 1, 0, False)
            >>> b = Tokenized([[3], [4]], [0, 1], 2, 0, False)
            >>> joined = Tokenized.concat([a, b])
            >>> joined.owners, joined.text_ranges([a, b])
            ([0, 1, 2], [(0, 1), (1, 3)])

        """
        ids: list[list[int]] = []
        owners: list[int] = []
        truncated_rows: list[int] = []
        count = 0
        for part in parts:
            ids.extend(part.ids)
            owners.extend(owner + count for owner in part.owners)
            truncated_rows.extend(row + count for row in part.truncated_rows)
            count += part.count
        return cls(
            ids=ids,
            owners=owners,
            count=count,
            truncated=sum(part.truncated for part in parts),
            chunked=any(part.chunked for part in parts),
            truncated_rows=tuple(truncated_rows),
        )

    def text_tokens(self) -> list[int]:
        """Tokens of each text: the lengths of its windows, summed.

        Example:
            >>> Tokenized([[1, 2], [3], [4, 5, 6]], [0, 0, 1], 2, 0, True).text_tokens()
            [3, 3]

        """
        tokens = [0] * self.count
        for owner, window in zip(self.owners, self.ids, strict=True):
            tokens[owner] += len(window)
        return tokens

    @staticmethod
    def text_ranges(parts: list[Tokenized]) -> list[tuple[int, int]]:
        """``(start, stop)`` of each part's texts in :meth:`concat`'s result."""
        ranges, start = [], 0
        for part in parts:
            ranges.append((start, start + part.count))
            start += part.count
        return ranges


class WindowTokenizer:
    """Tokenizes texts into windows with a private copy of ``tokenizer``.

    A fast tokenizer keeps its truncation and padding settings as state, which every call
    sets; the copy (used under a lock) keeps the encoder's calls and any user's calls of the
    public tokenizer from changing each other's results.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = copy.deepcopy(tokenizer)
        self._lock = ForkSafeLock()
        self.filler_id = next(
            (
                int(candidate)
                for candidate in (
                    tokenizer.unk_token_id,
                    tokenizer.eos_token_id,
                    tokenizer.bos_token_id,
                    tokenizer.pad_token_id,
                )
                if candidate is not None
            ),
            0,
        )
        """The one token of a text that tokenizes to nothing (an empty text, with a tokenizer
        that adds no special tokens), so that every text gets a real vector."""

    def encode_whole(self, text: str) -> tuple[list[int], list[tuple[int, int]], list[int]]:
        """``text`` tokenized whole (no truncation), with character offsets.

        Returns the ids (special tokens included), each token's character offsets ((0, 0)
        for special tokens) and the special-tokens mask.
        """
        encoded = self._whole(text, special=True)
        offsets = [(int(start), int(stop)) for start, stop in encoded["offset_mapping"]]
        return list(encoded["input_ids"]), offsets, list(encoded["special_tokens_mask"])

    def token_ids(self, text: str) -> list[int]:
        """The ids of ``text``'s own tokens: no special tokens, no truncation."""
        return list(self._whole(text, special=False)["input_ids"])

    def _whole(self, text: str, *, special: bool) -> Any:
        with self._lock:
            return self._tokenizer(
                text,
                truncation=False,
                padding=False,
                add_special_tokens=special,
                return_offsets_mapping=special,
                return_special_tokens_mask=special,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,  # no "longer than the maximum" warning: the text is not cut
            )

    @property
    def special_tokens(self) -> int:
        """Special tokens added to one text ([CLS] and [SEP]: 2)."""
        return int(self._tokenizer.num_special_tokens_to_add(pair=False))

    def __call__(self, items: list[str], *, max_length: int, long_text: LongText) -> Tokenized:
        """Tokenize checked (and instructed) ``items`` into windows.

        Args:
            items: the texts, already checked and instructed.
            max_length: tokens per window, special tokens included.
            long_text: "truncate" (one window per text, over-long texts counted) or "chunk".

        Returns:
            The windows, their owners and counts.
        """
        if not items:
            return Tokenized(ids=[], owners=[], count=0, truncated=0, chunked=False)
        chunked = long_text == "chunk"
        if chunked:
            windows, owners = self._windows(items, max_length, chunked=True)
        else:
            # Tokenizing a 5 MB string only to keep its first max_length tokens takes seconds:
            # cut very long texts first, and re-read them whole in the rare case the cut
            # text no longer overflows (extremely long "words").
            limit = max_length * CHARS_PER_TOKEN_BOUND
            windows, owners = self._windows([t[:limit] for t in items], max_length, chunked=False)
            counts = Counter(owners)
            if any(len(text) > limit and counts[i] == 1 for i, text in enumerate(items)):
                windows, owners = self._windows(items, max_length, chunked=False)
        if set(owners) != set(range(len(items))):
            msg = "the tokenizer returned no window for some texts"
            raise TokenizerFault(msg)
        windows = [ids if ids else [self.filler_id] for ids in windows]
        over_long = [owner for owner, count in sorted(Counter(owners).items()) if count > 1]
        if chunked:
            return Tokenized(windows, owners, len(items), truncated=0, chunked=bool(over_long))
        first = [i for i, owner in enumerate(owners) if i == 0 or owners[i - 1] != owner]
        return Tokenized(
            ids=[windows[i] for i in first],
            owners=list(range(len(items))),
            count=len(items),
            truncated=len(over_long),
            chunked=False,
            truncated_rows=tuple(over_long),
        )

    def _windows(
        self, items: list[str], max_length: int, *, chunked: bool
    ) -> tuple[list[list[int]], list[int]]:
        ids: list[list[int]] = []
        owners: list[int] = []
        for start in range(0, len(items), TOKENIZE_SLICE):
            if start:
                time.sleep(0)  # let other threads (an event loop) run between slices
            with self._lock:
                encoded = self._tokenizer(
                    items[start : start + TOKENIZE_SLICE],
                    truncation=True,
                    max_length=max_length,
                    stride=max_length // CHUNK_OVERLAP_DIVISOR if chunked else 0,
                    return_overflowing_tokens=True,
                    return_attention_mask=False,
                    return_token_type_ids=False,
                    padding=False,
                    add_special_tokens=True,
                )
            ids.extend(encoded["input_ids"])
            owners.extend(owner + start for owner in encoded["overflow_to_sample_mapping"])
        return ids, owners


def combine_windows(rows: np.ndarray, tokenized: Tokenized, *, normalize: bool) -> np.ndarray:
    """One vector per text from per-window vectors (long_text="chunk").

    A text's vector is the token-count-weighted mean of its windows' pooled vectors (for
    mean pooling: close to the mean over the whole text), then normalized if asked.
    """
    weights = np.asarray([len(ids) for ids in tokenized.ids], dtype=np.float64)
    owners = np.asarray(tokenized.owners)
    totals = np.zeros((tokenized.count, rows.shape[1]), dtype=np.float64)
    np.add.at(totals, owners, rows * weights[:, None])
    combined = totals / np.bincount(owners, weights=weights)[:, None]
    if normalize:
        combined /= np.maximum(np.linalg.norm(combined, axis=1, keepdims=True), 1e-12)
    return combined.astype(np.float32)
