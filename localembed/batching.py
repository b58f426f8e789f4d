"""Length-sorted, token-budget batching with an out-of-memory split.

Used by every model the core runs (the encoder's texts, the reranker's pairs): items are
grouped longest first within a batch size and a padded-token budget, each batch is handed to
a ``run`` callable, and a batch that runs out of memory is split in halves and retried, down
to one item (see :mod:`localembed.faults`).

Stage API: :func:`plan_batches` (the plan), :func:`iter_batches` (run a plan with the
out-of-memory split, yielding each batch's result), :func:`pad_right` (right-padded
``input_ids`` / ``attention_mask``) and :class:`ForwardBatch` (what a transformer pass returns
to the heads). A micro-batcher merges the windows of several callers into one plan (see
:mod:`localembed.microbatch`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("localembed")

T = TypeVar("T")

DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 16384}
"""Token budget per forward pass when max_batch_tokens is None. On the CPU, 1-2k padded tokens
keep a pass in cache and cut padding on mixed lengths (measured 1.3x the docs/s of a plain
32-text batch on all-MiniLM-L6-v2); a GPU wants larger passes."""


@dataclass(frozen=True)
class ForwardBatch:
    """One forward pass: the transformer's last hidden states and what went in."""

    hidden: torch.Tensor
    """(rows, width, hidden) last hidden states; padded positions are meaningless."""
    attention_mask: torch.Tensor
    """(rows, width), 1 for real tokens; padding is on the right."""
    input_ids: torch.Tensor
    """(rows, width) token ids."""


def token_budget(max_batch_tokens: int | None, device: torch.device) -> int | None:
    """The padded tokens allowed per forward pass: the setting, else the device's default."""
    return max_batch_tokens or DEFAULT_BATCH_TOKENS.get(device.type)


def padding_id(tokenizer: Any) -> int:
    """The id to pad with: the tokenizer's pad token, else its end-of-sequence token."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0  # padded positions are masked out, so any id works


def pad_right(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows as one (rows, longest) tensor padded on the right, and its mask.

    Right padding keeps absolute positions (BERT, XLM-RoBERTa) as they are for one text.

    Returns:
        ``(ids, attention_mask)`` on ``device``; the mask is 1 for real tokens.
    """
    import torch

    width = max(len(ids) for ids in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, values in enumerate(rows):
        ids[row, : len(values)] = torch.tensor(values, dtype=torch.long)
        attention_mask[row, : len(values)] = 1
    return ids.to(device), attention_mask.to(device)


def plan_batches(lengths: Sequence[int], batch_size: int, budget: int | None) -> list[list[int]]:
    """Group item indices into batches, longest first, within batch size and token budget.

    Similar lengths share a batch (little padding), and the largest allocation happens
    first. With a ``budget`` a batch's padded size (rows x longest) stays within it; a single
    item longer than the budget forms a batch of its own.

    Example:
        >>> plan_batches([3, 9, 4, 8], batch_size=2, budget=None)
        [[1, 3], [2, 0]]
        >>> plan_batches([3, 9, 4, 8], batch_size=8, budget=16)
        [[1], [3, 2], [0]]

    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for index in order:
        current = groups[-1] if groups else None
        if (
            current is not None
            and len(current) < batch_size
            and (budget is None or (len(current) + 1) * lengths[current[0]] <= budget)
        ):
            current.append(index)
        else:
            groups.append([index])
    return groups


def iter_batches(
    lengths: Sequence[int],
    run: Callable[[list[int]], T],
    *,
    batch_size: int,
    max_batch_tokens: int | None,
    device: torch.device,
    max_length: int,
    show_progress: bool = False,
    description: str = "embedding",
    unit: str = "text",
) -> Iterator[tuple[list[int], T]]:
    """Yield ``(indices, run(indices))`` over batches of items with token counts ``lengths``.

    Batches are planned by :func:`plan_batches`. A batch that runs out of memory is split in
    halves and each half is run again, down to one item, so the indices of one planned batch
    may come back in several smaller groups; every item comes back exactly once.

    Args:
        lengths: tokens of each item (special tokens included).
        run: runs one batch (item indices in batch order) and returns its result.
        batch_size: most items per batch.
        max_batch_tokens: the configured token budget (None: the device's default).
        device: where the model runs (for the default budget and the messages).
        max_length: the tokens kept per item (for the out-of-memory message).
        show_progress: show a tqdm progress bar over the items.
        description: the progress bar's label.
        unit: the progress bar's unit.

    Raises:
        EncoderOutOfMemoryError: one item alone does not fit in memory; the message names
            the batch, its tokens and the fix.
    """
    from localembed.faults import (
        EncoderOutOfMemoryError,
        is_out_of_memory,
        out_of_memory_message,
        release_memory,
    )

    budget = token_budget(max_batch_tokens, device)
    # A stack of (item indices, the batch they were split from); next batch last.
    pending: list[tuple[list[int], tuple[int, int] | None]] = [
        (indices, None) for indices in reversed(plan_batches(lengths, batch_size, budget))
    ]
    progress = None
    if show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(lengths), desc=description, unit=unit)
    splits = 0
    try:
        while pending:
            indices, origin = pending.pop()
            width = max(lengths[i] for i in indices)
            origin = origin or (len(indices), width)
            try:
                result = run(indices)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                if len(indices) == 1:
                    message = out_of_memory_message(
                        rows=1,
                        width=width,
                        first_rows=origin[0],
                        first_width=origin[1],
                        device=str(device),
                        batch_size=batch_size,
                        max_batch_tokens=max_batch_tokens,
                        max_length=max_length,
                    )
                    raise EncoderOutOfMemoryError(
                        message, rows=1, tokens=width, device=str(device)
                    ) from error
            else:
                if progress is not None:
                    progress.update(len(indices))
                yield indices, result
                continue
            # Out of the except block, so that the failed batch's tensors (held by the
            # traceback) are freed before the retry.
            if not splits:
                logger.warning(
                    "out of memory on %s for a batch of %d %ss x %d tokens; splitting it "
                    "and retrying (lower batch_size or set max_batch_tokens to avoid this)",
                    device,
                    len(indices),
                    unit,
                    width,
                )
            splits += 1
            release_memory(device)
            half = (len(indices) + 1) // 2
            pending.append((indices[half:], origin))
            pending.append((indices[:half], origin))
    finally:
        if progress is not None:
            progress.close()
