"""A CPU forward pass split by rows over worker threads of one intra-op thread each.

torch runs a batch on its OpenMP threads, which meet at a barrier after every operator. On
a quiet machine that costs the small operators (LayerNorm, softmax, GELU) their fork and
join; beside another busy process it costs far more, since the threads spin at each
barrier waiting for one the scheduler has put aside, and an application that imported
torch first cannot change OpenMP's wait policy. Running contiguous slices of the batch's
rows in ``threads`` worker threads, each single-threaded, needs no barrier at all: each
slice is an independent forward pass (torch releases the GIL inside its operators).

Each slice also drops the padding columns that none of its rows uses, and the cuts balance
the slices' padded tokens (rows x width), not their row counts: rows of a planned batch are
sorted by length, so equal row counts would give the first slice the longest rows and leave
the other workers idle while it runs. The slices depend only on the batch and the thread
count, never on the machine's load, so repeated calls return identical vectors; they differ
from one unsplit forward pass by float rounding only (the fp32 batch-invariance contract).

``LOCALEMBED_SPLIT_ROWS=0`` turns it off (one forward pass on torch's intra-op threads,
as before).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from localembed.forks import ForkSafeLock
from localembed.hardware import env_switch

if TYPE_CHECKING:
    import torch

SPLIT_ROWS = "LOCALEMBED_SPLIT_ROWS"
"""Environment variable: ``0`` runs CPU batches unsplit; ``1`` or unset splits them."""

Inputs = dict[str, "torch.Tensor"]
"""A forward pass's keyword tensors (``input_ids``, ``attention_mask``, ...), rows first."""


def split_rows_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether CPU batches are split by rows (``LOCALEMBED_SPLIT_ROWS``; default yes).

    Example:
        >>> split_rows_enabled({"LOCALEMBED_SPLIT_ROWS": "0"})
        False
        >>> split_rows_enabled({})
        True

    Raises:
        InputError: the variable is set to something other than 0 or 1.
    """
    return env_switch(SPLIT_ROWS, environ)


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = ForkSafeLock()
os.register_at_fork(after_in_child=_pools.clear)  # a forked child has none of the threads


def _one_intra_op_thread() -> None:
    import torch

    torch.get_num_threads()  # torch's per-thread set-up first: it would undo the next line
    torch.set_num_threads(1)  # this thread's OpenMP and MKL count (and torch's global one)


def worker_pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool of ``workers`` threads with one intra-op thread each (made once)."""
    import torch

    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            restore = torch.get_num_threads()
            pool = ThreadPoolExecutor(
                workers, thread_name_prefix="localembed-rows", initializer=_one_intra_op_thread
            )
            started = threading.Barrier(workers)
            try:
                for future in [pool.submit(started.wait) for _ in range(workers)]:
                    future.result()  # every worker is set up before the global count comes back
            except BaseException:
                # Interrupted (Ctrl-C) between two submissions: a worker left waiting at the
                # barrier would never end, and the interpreter's exit joins every worker.
                started.abort()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            finally:
                torch.set_num_threads(restore)  # new threads start from torch's global count
            _pools[workers] = pool
    return pool


def balanced_cuts(widths: Sequence[int], parts: int, *, packed: bool = False) -> list[int]:
    """Cut rows into at most ``parts`` contiguous slices whose largest size is least.

    A slice's size is its rows times its widest row (``widths``: each row's last attended
    column + 1), or with ``packed`` (slices that run without padding,
    :mod:`localembed.unpadding`) the sum of its rows' widths. Returns the bounds:
    ``[0, ..., len(widths)]``.

    Example:
        >>> balanced_cuts([256, 200, 120, 90, 40, 30], parts=2)
        [0, 2, 6]
        >>> balanced_cuts([60, 50, 40, 30, 20, 10, 10, 10], parts=2)
        [0, 3, 8]
        >>> balanced_cuts([60, 50, 40, 30, 20, 10, 10, 10], parts=2, packed=True)
        [0, 2, 8]
        >>> balanced_cuts([8, 8, 8, 8, 8], parts=2)
        [0, 3, 5]

    """
    widths = [max(int(width), 1) for width in widths]

    def greedy(limit: int) -> list[int]:
        bounds, start, widest, total = [0], 0, 0, 0
        for row, width in enumerate(widths):
            widest, total = max(widest, width), total + width
            if (total if packed else (row - start + 1) * widest) > limit:
                bounds.append(row)
                start, widest, total = row, width, width
        return [*bounds, len(widths)]

    # Extending a slice never lowers its size, so the greedy cut uses the fewest slices
    # for a limit; the least limit that fits in ``parts`` slices is found by bisection.
    low, high = max(widths), len(widths) * max(widths)
    while low < high:
        middle = (low + high) // 2
        if len(greedy(middle)) - 1 <= parts:
            high = middle
        else:
            low = middle + 1
    return greedy(low)


def split_forward(
    forward: Callable[[Inputs], torch.Tensor],
    inputs: Inputs,
    workers: int,
    *,
    packed: bool = False,
) -> torch.Tensor:
    """``forward(inputs)`` run as up to ``workers`` slices of rows in the worker pool.

    The cuts balance the slices' padded tokens (:func:`balanced_cuts`), and a slice is cut
    after its last column that any of its rows attends to (right padding trimmed). Outputs
    of three dimensions (per-token states) are padded back to the batch's width with zeros,
    where the attention mask is 0; others (a head's logits) are joined as they are.

    Args:
        forward: runs one slice (called in a worker thread).
        inputs: the batch's tensors, each ``[rows, width]``; ``attention_mask`` among them.
        workers: the pool's size (at most that many slices).
        packed: ``forward`` runs real tokens only: cut to balance them, not padded sizes.
    """
    import torch

    mask = inputs["attention_mask"]
    width = mask.shape[1]
    columns = torch.arange(1, width + 1, device=mask.device)
    last = (mask.ne(0) * columns).amax(dim=1)  # each row's last attended column + 1
    used: list[int] = torch.where(last > 0, last, width).tolist()  # none attended: whole
    slices = []
    for start, stop in itertools.pairwise(balanced_cuts(used, workers, packed=packed)):
        cut = max(used[start:stop])
        slices.append({name: tensor[start:stop, :cut] for name, tensor in inputs.items()})
    outputs = list(worker_pool(workers).map(forward, slices))
    if outputs[0].dim() == 3:
        outputs = [
            torch.nn.functional.pad(output, (0, 0, 0, width - output.shape[1]))
            for output in outputs
        ]
    return torch.cat(outputs)
