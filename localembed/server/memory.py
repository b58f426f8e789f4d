"""The process's resident memory, a model's size on disk, and giving freed memory back."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
from pathlib import Path

from localembed.errors import ModelError


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
    """Bytes of the weight files a load of ``model`` reads (0 when it is not on this machine).

    ``model`` as a model option takes it: None (the embedded default), a local directory or
    a hub id (looked up in the hub cache only, never downloaded). Counted like the loader
    picks them: the top-level ``*.safetensors``, else ``*.bin`` (not other formats' copies
    such as ``onnx/`` or ``openvino/``), plus a sentence-transformers model's transformer
    folder.
    """
    directory = _local_directory(model)
    if directory is None:
        return 0
    try:
        from localembed.st_metadata import read_sentence_transformers_metadata

        directory = read_sentence_transformers_metadata(directory).transformer_path
    except Exception:  # the load reports what is wrong; an estimate stays an estimate
        pass
    from localembed.weights import weight_files

    try:  # pickle weights count too: the estimate is about memory, not about loading them
        files = weight_files(directory, allow_pickle_weights=True)
        return sum(path.stat().st_size for path in files)
    except (OSError, ModelError):  # no weights, or unreadable: unknown until it loads
        return 0


def _local_directory(model: str | None) -> Path | None:
    from localembed.default_model import DEFAULT_MODEL_NAMES, default_model_dir

    if model is None or model in DEFAULT_MODEL_NAMES:
        return default_model_dir()
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not in the hub cache (or not a hub id): unknown until it loads
        return None


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


HEAP_POLICY = "LOCALEMBED_HEAP"
"""How a server process keeps its heap from creeping: ``trim`` (default), ``mmap`` or ``off``."""

HEAP_POLICIES = ("trim", "mmap", "off")
"""``trim``: malloc_trim every few seconds; ``mmap``: a fixed 128 KiB mmap threshold; ``off``."""

TRIM_INTERVAL_S = 2.0
"""Seconds between two returns of freed heap pages under ``trim``."""


class HeapTrimmer:
    """Return freed heap pages to the system every ``interval`` seconds, from a daemon thread.

    glibc keeps the pages of freed blocks inside its heaps; batches of ever new shapes
    leave such holes, and the RSS keeps them. ``malloc_trim(0)`` hands every free page
    back (``madvise``); the next batch touches again only the pages it needs. Unlike a
    fixed mmap threshold, allocations stay on the heap, so a batch's tensors do not each
    cost a fresh mapping and its page faults.
    """

    def __init__(self, interval: float = TRIM_INTERVAL_S) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Start trimming; False where there is no glibc."""
        if _libc() is None:
            return False
        self._thread = threading.Thread(target=self._run, name="localembed-heap-trim", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            trim()

    def stop(self) -> None:
        """Stop the thread (it ends within one interval)."""
        self._stop.set()


_trimmer: HeapTrimmer | None = None
_trimmer_lock = threading.Lock()


def bound_heap(environ: dict[str, str] | None = None) -> str:
    """Apply ``LOCALEMBED_HEAP`` (default ``trim``) to this process; return the policy applied.

    Raises:
        InputError: the variable names no policy.
    """
    from localembed.errors import InputError

    environ = dict(os.environ) if environ is None else environ
    policy = environ.get(HEAP_POLICY, "trim").strip().lower() or "trim"
    if policy not in HEAP_POLICIES:
        msg = f"{HEAP_POLICY}={policy!r} is not one of {', '.join(HEAP_POLICIES)}"
        raise InputError(msg)
    if policy == "mmap":
        return "mmap" if fix_mmap_threshold() else "off"
    if policy == "trim":
        global _trimmer  # one trimmer per process, however many servers start
        with _trimmer_lock:
            if _trimmer is None:
                trimmer = HeapTrimmer()
                if not trimmer.start():
                    return "off"
                _trimmer = trimmer
        return "trim"
    return "off"
