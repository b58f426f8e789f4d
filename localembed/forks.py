"""Locks that a forked child gets back unlocked.

``os.fork()`` copies a lock in whatever state it was: a child forked while another thread of
the parent held it (a cache write, a fingerprint being computed) would wait forever for a
thread that does not exist in the child. Multiprocessing's default start method on Linux
before Python 3.14 is fork, so a ``Pool`` created while a server or a LangChain app is busy
does exactly that. Each :class:`ForkSafeLock` is replaced by a new, unlocked lock in the child.

torch's intra-op threads (GNU OpenMP on Linux) do not survive a fork either: a child forked
after the parent ran a parallel operator hangs in its first one. So a child of a process that
had imported torch runs torch on one intra-op thread (what PyTorch's own DataLoader workers
do); a pool of forked workers has its parallelism in its processes.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from types import TracebackType

__all__ = ["ForkSafeLock", "torch_thread_count"]

logger = logging.getLogger("localembed")


class ForkSafeLock:
    """A ``threading.Lock`` (as a context manager) that is unlocked again in a forked child.

    Example:
        >>> lock = ForkSafeLock()
        >>> with lock:
        ...     pass
        >>> lock.locked()
        False

    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _locks.add(self)

    def __enter__(self) -> ForkSafeLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock (waits)."""
        self._lock.acquire()

    def release(self) -> None:
        """Give the lock back."""
        self._lock.release()

    def locked(self) -> bool:
        """Whether some thread holds it."""
        return self._lock.locked()

    def _renew(self) -> None:
        self._lock = threading.Lock()


_locks: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


_forked_with_torch = False


def torch_thread_count(count: int) -> int:
    """``count``, or 1 in a child forked from a process that had imported torch.

    Every place that sets torch's intra-op thread count goes through this: more than one
    thread in such a child hangs in the first parallel operator. Asking for more logs a
    warning once (use the ``spawn`` or ``forkserver`` start method for threaded workers).
    """
    global _warned_threads
    if not _forked_with_torch or count <= 1:
        return count
    if not _warned_threads:
        _warned_threads = True
        logger.warning(
            "this process was forked after torch was imported, so torch runs on 1 thread here, "
            "not %d (GNU OpenMP's threads do not survive a fork: more would hang); start "
            "workers with the 'spawn' or 'forkserver' method for more",
            count,
        )
    return 1


_warned_threads = False


def _renew_in_child() -> None:
    global _forked_with_torch, _warned_threads
    for lock in list(_locks):
        lock._renew()
    torch = sys.modules.get("torch")
    set_num_threads = getattr(torch, "set_num_threads", None)
    if set_num_threads is not None:  # a torch half imported at the fork has none yet
        set_num_threads(1)
        _forked_with_torch, _warned_threads = True, False


os.register_at_fork(after_in_child=_renew_in_child)
