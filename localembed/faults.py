"""Out-of-memory handling for forward passes: recognise the error, split the batch, retry.

A batch that does not fit (CUDA ``torch.OutOfMemoryError``, the CPU allocator's "can't
allocate memory", MPS "out of memory", or Python's ``MemoryError``) is split in halves and
each half retried, down to a single text. When even one text does not fit, the encoder
raises :class:`EncoderOutOfMemoryError`, which names the batch, its token count and the fix.
Nothing partial is returned: the error propagates out of ``encode``.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

from localembed.errors import RuntimeFault

if TYPE_CHECKING:
    import torch

__all__ = [
    "OUT_OF_MEMORY_MESSAGES",
    "EncoderOutOfMemoryError",
    "NonFiniteEmbeddingError",
    "is_out_of_memory",
]

OUT_OF_MEMORY_MESSAGES = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "failed to allocate memory",
)
"""Lower-case fragments of allocation-failure messages (CUDA, MPS, DefaultCPUAllocator, ONNX
Runtime)."""


class EncoderOutOfMemoryError(RuntimeFault, MemoryError):
    """A forward pass ran out of memory even for one text; the message says what to change."""

    def __init__(self, message: str, *, rows: int, tokens: int, device: str) -> None:
        super().__init__(message)
        self.rows = rows
        """Texts (windows) in the batch that failed last (1: the floor)."""
        self.tokens = tokens
        """Padded tokens of that batch (rows x longest window)."""
        self.device = device
        """The device the model runs on."""


class NonFiniteEmbeddingError(RuntimeFault, ValueError):
    """Some texts came out with NaN or infinite values (overflow in float16, damaged weights).

    Never returned silently: the message names the rows (input indices) and the fix.
    """

    def __init__(self, rows: list[int], *, count: int, dtype: str, what: str = "texts") -> None:
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        advice = (
            "the model overflows in "
            + dtype
            + ": use dtype='float32' (or 'bfloat16', which has float32's range)"
            if dtype in {"float16", "bfloat16"}
            else "the model's weights or inputs give non-finite values; check the model files"
        )
        super().__init__(
            f"{len(rows)} of {count} {what} gave NaN or infinite values (rows {shown}); {advice}"
        )
        self.rows = rows
        """Indices of the texts (pairs, for a reranker) whose output is not finite."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` reports a failed memory allocation (any device).

    Example:
        >>> is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: ..."))
        True
        >>> is_out_of_memory(RuntimeError("index out of range in self"))
        False

    """
    if isinstance(error, MemoryError):
        return True
    # ONNX Runtime's errors derive from Exception, not RuntimeError.
    if not isinstance(error, RuntimeError) and not type(error).__module__.startswith("onnxruntime"):
        return False
    out_of_memory = _torch_out_of_memory_type()
    if out_of_memory is not None and isinstance(error, out_of_memory):
        return True
    message = str(error).lower()
    return any(fragment in message for fragment in OUT_OF_MEMORY_MESSAGES)


def _torch_out_of_memory_type() -> type[BaseException] | None:
    import torch

    found = getattr(torch, "OutOfMemoryError", None) or getattr(
        torch.cuda, "OutOfMemoryError", None
    )
    return found if isinstance(found, type) else None


def release_memory(device: torch.device) -> None:
    """Give cached accelerator memory back after an out-of-memory error, before a retry.

    On the CPU freed tensors go back to the allocator at once; nothing to do.
    """
    import torch

    if device.type == "cuda" and torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
    elif device.type == "mps" and torch.backends.mps.is_available():
        gc.collect()
        torch.mps.empty_cache()


def out_of_memory_message(
    *,
    rows: int,
    width: int,
    first_rows: int,
    first_width: int,
    device: str,
    batch_size: int,
    max_batch_tokens: int | None,
    max_length: int,
) -> str:
    """The message of :class:`EncoderOutOfMemoryError`: what failed, and what to change."""
    budget = "not set" if max_batch_tokens is None else str(max_batch_tokens)
    return (
        f"out of memory on {device}: a batch of {rows} text(s) x {width} tokens "
        f"({rows * width} padded tokens) did not fit, after splitting the batch of "
        f"{first_rows} texts x {first_width} tokens ({first_rows * first_width} padded tokens) "
        f"in halves down to one text. Fix: lower batch_size (now {batch_size}) or set "
        f"max_batch_tokens (now {budget}) to bound each forward pass; one text of {width} "
        f"tokens needs max_length below {max_length} (the tokens kept per text), "
        f"dtype='float16' or 'bfloat16', or a device with more free memory"
    )
