"""Micro-batching: many concurrent single-query callers against one batched call.

Three ways to embed the same N queries with one loaded model:

- batched: one ``encode`` call of all N queries (the ceiling);
- per call (before micro-batching): N coroutines, each running its own ``encode([q])`` in a
  worker thread (what ``aembed_query`` did), one forward pass each under the encoder's lock;
- micro-batched: N coroutines awaiting ``encoder.aencode_queries([q])`` (the adapters'
  ``aembed_query``), merged by the encoder's worker; and N threads calling ``encode_queries``.

Then the lone-caller latency: one query at a time, ``encode`` directly against
``encode_queries`` through the micro-batcher. Prints the ratios the issue sets as goals
(concurrent >= 60% of batched, lone latency <= 1.1x).

    python benchmarks/microbatch.py [--callers 64] [--rounds 5] [--model DIR] [--max-wait-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _queries(count: int) -> list[str]:
    topics = ["cats", "the Eiffel tower", "interest rates", "protein folding", "jazz", "rain"]
    return [
        f"what is the best thing to know about {topics[i % len(topics)]} (question {i})?"
        for i in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory or id (default: embedded)")
    parser.add_argument("--callers", type=int, default=64, help="concurrent single-query callers")
    parser.add_argument("--rounds", type=int, default=5, help="repetitions; the median is kept")
    parser.add_argument("--lone", type=int, default=50, help="lone calls for the latency ratio")
    parser.add_argument("--max-wait-ms", type=float, default=0.0, help="micro-batcher max wait")
    args = parser.parse_args(argv)

    from localembed import get_encoder

    encoder = get_encoder(model=args.model, device="cpu")
    encoder.batcher.max_wait = args.max_wait_ms / 1000
    instruction = encoder.settings.query_instruction
    queries = _queries(args.callers)
    encoder.encode(queries, instruction)  # warm-up

    async def per_call() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(None, encoder.encode, [q], instruction) for q in queries)
        )

    async def micro_batched() -> None:
        await asyncio.gather(*(encoder.aencode_queries([q]) for q in queries))

    with ThreadPoolExecutor(args.callers) as pool:
        paths: dict[str, Callable[[], object]] = {
            "one batched call": lambda: encoder.encode(queries, instruction),
            "per call (before)": lambda: asyncio.run(per_call()),
            "micro-batched coroutines": lambda: asyncio.run(micro_batched()),
            "micro-batched threads": lambda: list(
                pool.map(lambda q: encoder.encode_queries([q]), queries)
            ),
        }
        seconds: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):  # interleaved, so that every path sees the same load
            for name, run in paths.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
    rates = {name: len(queries) / statistics.median(times) for name, times in seconds.items()}
    ceiling = rates["one batched call"]
    print(f"{args.callers} queries, {args.rounds} rounds (median), model {encoder.source.name}")
    print(f"{'path':<26} {'queries/s':>10} {'of batched':>11}")
    for name, rate in rates.items():
        print(f"{name:<26} {rate:>10.0f} {rate / ceiling:>10.0%}")

    def latency(call: Callable[[str], object]) -> float:
        samples = []
        for query in (queries * (args.lone // len(queries) + 1))[: args.lone]:
            start = time.perf_counter()
            call(query)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    direct, batched = [], []
    for _ in range(3):  # interleaved, so that both see the same machine load
        direct.append(latency(lambda q: encoder.encode([q], instruction)))
        batched.append(latency(lambda q: encoder.encode_queries([q])))
    lone_direct, lone_batched = min(direct), min(batched)
    ratio = rates["micro-batched coroutines"] / ceiling
    print(
        f"lone caller latency: direct {lone_direct * 1000:.2f} ms, "
        f"micro-batched {lone_batched * 1000:.2f} ms ({lone_batched / lone_direct:.2f}x; goal <= 1.1x)"
    )
    print(f"concurrent/batched ratio: {ratio:.0%} (goal >= 60%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
