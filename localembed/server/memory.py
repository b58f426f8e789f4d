"""The process's resident memory, a model's size on disk, and giving freed memory back."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".pth")
"""Files whose size estimates a model's resident memory before it has loaded once."""


def resident_bytes() -> int:
    """The process's resident set size (RSS) in bytes; 0 where it cannot be read.

    Example:
        >>> resident_bytes() > 0
        True

    """
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # a bound, not current
        return int(peak) * (1 if os.uname().sysname == "Darwin" else 1024)
    except (ImportError, OSError):
        return 0


def weights_size(model: str | None) -> int:
    """Bytes of weight files in a local model directory (0 for a hub id or no directory)."""
    if model is None:
        return 0
    directory = Path(model).expanduser()
    if not directory.is_dir():
        return 0
    return sum(
        path.stat().st_size
        for path in directory.rglob("*")
        if path.suffix in WEIGHT_SUFFIXES and path.is_file()
    )


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def trim() -> bool:
    """Return freed heap memory to the operating system (glibc's ``malloc_trim(0)``).

    glibc keeps freed memory in its arenas; without this an unloaded model's memory stays
    in the process's RSS. False where there is no glibc (macOS, musl, Windows).
    """
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


MMAP_THRESHOLD = 128 * 1024
"""Bytes from which glibc serves an allocation with its own mmap (glibc's initial value)."""

_M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number for the mmap threshold."""


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Keep glibc's mmap threshold at ``threshold`` bytes (its dynamic raising turned off).

    glibc raises the threshold up to the size of each mmapped block freed (up to 32 MiB on
    64-bit), after which the activations of a forward pass come from the heap, where batches
    of ever new shapes leave holes that the RSS keeps: a server's memory creeps. With a fixed
    threshold each large tensor is mapped and returned to the system when freed
    (``benchmarks/rss_shapes.py``: 548 -> 591 MiB over 44 batch shapes without, 522 -> 523
    MiB with). The arithmetic, and so every vector, is unchanged.

    Returns:
        True when set; False without glibc, or when ``MALLOC_MMAP_THRESHOLD_`` is in the
        environment (the user's setting wins).
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
