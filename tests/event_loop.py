"""A ticker that measures how long the event loop goes without running a coroutine."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def loop_gaps(interval: float) -> AsyncIterator[list[float]]:
    """Yield a list that fills with the time between ticks of a coroutine sleeping ``interval``.

    The objects already in this process are frozen first: a full garbage collection over the
    whole suite's heap (~350 ms here for its imports alone; a 526 ms first gap was seen once
    in CI) is not the code under test blocking the loop.
    """
    gc.collect()
    gc.freeze()
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(interval)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        yield gaps
    finally:
        done.set()
        await tick
        gc.unfreeze()
