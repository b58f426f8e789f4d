"""How long an asyncio event loop goes without running a coroutine (tests and benchmarks).

:func:`loop_lag` runs a ticker coroutine (sleep ``interval``, record the real time between
ticks) beside the code under test and records every garbage-collector pass meanwhile
(``gc.callbacks``), so that a long gap can be told apart from a collector pass.
:func:`cpu_thread_lag` measures the same probe beside a plain Python thread busy for a given
time: the lag any thread holding the GIL in ordinary steps causes on this machine, now. A
loaded machine inflates both alike; the tests compare the two (``benchmarks/loop_lag.py``
reports both, and the absolute numbers).

This module imports nothing from the package: ``benchmarks/loop_lag.py --compare`` loads
it before another checkout's ``localembed``.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LagComparison",
    "LoopLag",
    "cpu_thread_lag",
    "instant_llamaindex_embedding",
    "lag_against_cpu_thread",
    "loop_lag",
]


@dataclass
class LoopLag:
    """What one :func:`loop_lag` probe saw."""

    gaps: list[float] = field(default_factory=list)
    """Seconds between consecutive ticks (the interval plus the stall)."""
    ends: list[float] = field(default_factory=list)
    """When each gap ended (``time.perf_counter``)."""
    collections: list[tuple[int, float, float]] = field(default_factory=list)
    """Every garbage-collector pass meanwhile, in any thread: (generation, start, seconds)."""
    seconds: float = 0.0
    """How long the probe ran."""

    @property
    def worst(self) -> float:
        """The longest gap (0 without ticks)."""
        return max(self.gaps, default=0.0)

    @property
    def p99(self) -> float:
        """The 99th percentile gap."""
        if not self.gaps:
            return 0.0
        ordered = sorted(self.gaps)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    @property
    def median(self) -> float:
        """The median gap."""
        return statistics.median(self.gaps) if self.gaps else 0.0

    @property
    def worst_collection(self) -> tuple[int, float]:
        """The longest collector pass: (generation, seconds); (-1, 0) if none ran."""
        generation, _, seconds = max(
            self.collections, key=lambda item: item[2], default=(-1, 0.0, 0.0)
        )
        return generation, seconds

    @property
    def collected_in_worst(self) -> float:
        """Seconds of collector passes within the worst gap."""
        if not self.gaps:
            return 0.0
        index = self.gaps.index(self.worst)
        end = self.ends[index]
        begin = end - self.gaps[index]
        return sum(
            max(0.0, min(end, start + seconds) - max(begin, start))
            for _, start, seconds in self.collections
        )

    def summary(self) -> str:
        """Worst (and its collector share), p99, median gap and the longest pass, in ms."""
        generation, seconds = self.worst_collection
        return (
            f"worst {self.worst * 1000:.0f} ms ({self.collected_in_worst * 1000:.0f} ms of it "
            f"in gc), p99 {self.p99 * 1000:.0f} ms, median {self.median * 1000:.1f} ms over "
            f"{len(self.gaps)} ticks; longest gc pass {seconds * 1000:.0f} ms (generation "
            f"{generation})"
        )


@asynccontextmanager
async def loop_lag(interval: float = 0.005, *, freeze: bool = True) -> AsyncIterator[LoopLag]:
    """Measure the event loop's gaps while the ``async with`` body runs.

    With ``freeze`` (the default) the objects already alive are moved out of the collector's
    reach first (``gc.freeze``, undone at the end): a full collection over a test suite's or
    an application's import heap (~500,000 objects with torch, transformers, LangChain and
    LlamaIndex imported: 0.2-1 s) is a property of that heap, not of the code under test.
    Applications can do the same after their imports; the probe records every pass anyway.
    """
    gc.collect()
    if freeze:
        gc.freeze()
    lag = LoopLag()
    started: list[float] = []

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            start = started.pop()
            lag.collections.append((info["generation"], start, time.perf_counter() - start))

    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(interval)
            now = time.perf_counter()
            lag.gaps.append(now - last)
            lag.ends.append(now)
            last = now

    gc.callbacks.append(on_collection)
    begin = time.perf_counter()
    tick = asyncio.create_task(ticker())
    try:
        yield lag
    finally:
        done.set()
        await tick
        lag.seconds = time.perf_counter() - begin
        gc.callbacks.remove(on_collection)
        if freeze:
            gc.unfreeze()


def _busy(seconds: float) -> None:
    """Ordinary Python work for ``seconds`` (it yields the GIL every switch interval)."""
    end = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < end:
        total += sum(range(200))


async def cpu_thread_lag(seconds: float, interval: float = 0.005) -> LoopLag:
    """:func:`loop_lag` beside a thread doing plain Python work for ``seconds``.

    The baseline for a call that runs in worker threads: what the loop suffers from any
    thread holding the GIL in ordinary steps on this machine at this moment (its load).
    """
    async with loop_lag(interval) as lag:
        thread = threading.Thread(target=_busy, args=(seconds,), daemon=True)
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(interval)
    return lag


LAG_FLOOR = 0.1
"""Seconds of stall always allowed (the documented promise on an idle machine)."""
LAG_FACTOR = 3.0
"""How many times a plain CPU thread's worst stall a call may cause on a loaded machine."""


@dataclass
class LagComparison:
    """A call's loop lag beside its baselines, measured in the same run."""

    ours: LoopLag
    """The probe beside the call."""
    thread: LoopLag
    """The probe beside a plain Python thread busy as long as the call took."""
    floor: LoopLag | None = None
    """The probe beside the framework's own work with an instant model (None: not measured)."""

    @property
    def bound(self) -> float:
        """The worst stall allowed: :data:`LAG_FLOOR` or :data:`LAG_FACTOR` times the thread's,
        whichever is larger, plus the framework's own worst stall (``floor``).

        A loaded machine delays every thread that wants the GIL or a core, the event loop's
        too: the thread's stall measures that share now.
        """
        own = self.floor.worst if self.floor is not None else 0.0
        return max(LAG_FLOOR, LAG_FACTOR * self.thread.worst) + own

    @property
    def holds(self) -> bool:
        """The call's worst stall is within :attr:`bound`."""
        return self.ours.worst <= self.bound

    def __str__(self) -> str:
        floor = f"; framework alone: {self.floor.summary()}" if self.floor is not None else ""
        return (
            f"bound {self.bound * 1000:.0f} ms; call: {self.ours.summary()}; "
            f"cpu thread: {self.thread.summary()}{floor}"
        )


async def lag_against_cpu_thread(
    work: Callable[[], Awaitable[object]],
    *,
    floor: Callable[[], Awaitable[object]] | None = None,
    attempts: int = 3,
) -> LagComparison:
    """``work``'s loop lag, a plain CPU thread's of the same length and ``floor``'s, in one run.

    Up to ``attempts`` rounds (the first that :attr:`~LagComparison.holds` ends it), against
    the noise of a busy machine. Each result is freed after its probe stopped: freeing
    millions of floats is the caller's work, not the call's.
    """
    comparison = LagComparison(LoopLag(), LoopLag())
    for _ in range(attempts):
        async with loop_lag() as ours:
            result = await work()
        del result
        floor_lag = None
        if floor is not None:
            async with loop_lag() as floor_lag:
                result = await floor()
            del result
        comparison = LagComparison(ours, await cpu_thread_lag(ours.seconds), floor_lag)
        if comparison.holds:
            break
    return comparison


def instant_llamaindex_embedding(dimension: int, batch_size: int) -> Any:
    """A LlamaIndex embedding model that answers at once (zeros): LlamaIndex's own work.

    ``aget_text_embedding_batch`` on it is LlamaIndex's per-batch events and result
    validation on the event loop, the floor under any model's call.
    """
    from llama_index.core.base.embeddings.base import BaseEmbedding

    class InstantEmbedding(BaseEmbedding):  # type: ignore[misc]
        def _get_query_embedding(self, query: str) -> list[float]:
            return [0.0] * dimension

        def _get_text_embedding(self, text: str) -> list[float]:
            return [0.0] * dimension

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return [0.0] * dimension

        async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return [[0.0] * dimension for _ in texts]

    return InstantEmbedding(model_name="instant", embed_batch_size=batch_size)
