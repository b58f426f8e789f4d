"""How long the asyncio event loop stalls while the async adapters embed a large batch.

The probe (``tests/event_loop.py``: a coroutine sleeping 5 ms, recording the real time
between its ticks and every garbage-collector pass) runs beside each scenario:

- ``langchain``: one ``LocalEmbeddings.aembed_documents`` of 20,000 texts;
- ``llamaindex``: one ``LocalEmbedding.aget_text_embedding_batch`` of 8,000 texts
  (LlamaIndex splits it into concurrent calls of ``embed_batch_size``);
- ``llamaindex-floor``: the same LlamaIndex method on a model that answers at once
  (LlamaIndex's own per-batch events and result checks on the loop: a floor no model beats);
- ``cpu-thread``: a plain Python thread busy for 2 s (what any GIL-holding thread costs the
  loop on this machine now: the load's share).

The worst gap is the longest the loop could not serve anything else. The model is one BERT
layer 384 wide (all-MiniLM-L6-v2's width and tokenizer, random weights) with max_length 16,
so the model's time is small and the threads' Python work shows. Each result is kept until
the probe has stopped (freeing 7.7 million floats is the application's work, not the call's).

Each run is a fresh process. ``--background-load N`` keeps N busy processes running for the
whole benchmark (killed at the end), so that the machine's load is known; the load average
is printed with each run. ``--compare DIR`` runs every scenario on another checkout too (for
instance the commit before a change, ``git archive COMMIT | tar -x -C DIR``), interleaved
with this one, run by run, in the same conditions:

    python benchmarks/loop_lag.py [--runs 3] [--background-load 4] [--compare DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("langchain", "llamaindex", "llamaindex-floor", "cpu-thread")


def measure(package: Path, scenarios: list[str], texts: int, nodes: int) -> list[dict[str, Any]]:
    """One run of ``scenarios`` in this process, with ``package``'s localembed."""
    sys.path.insert(0, str(ROOT))
    from tests.event_loop import LoopLag, cpu_thread_lag, loop_lag
    from tests.model_factory import build_wide_bert

    sys.path.insert(0, str(package))  # before anything of the package is imported
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from localembed.hardware import configure_process

    configure_process()
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from langchain_localembed import LocalEmbeddings
    from llamaindex_localembed import LocalEmbedding

    class Instant(BaseEmbedding):  # type: ignore[misc]
        def _get_query_embedding(self, query: str) -> list[float]:
            return [0.0] * 384

        def _get_text_embedding(self, text: str) -> list[float]:
            return [0.0] * 384

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return [0.0] * 384

        async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return [[0.0] * 384 for _ in texts]

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        model = str(build_wide_bert(Path(folder) / "wide-bert"))
        documents = [f"document number {i} about topic {i % 17}" for i in range(texts)]
        node_texts = [f"node {i} on subject {i % 23} and more" for i in range(nodes)]
        works: dict[str, Callable[[], Awaitable[Any]]] = {}
        if "langchain" in scenarios:
            works["langchain"] = LocalEmbeddings(model=model, max_length=16).aembed_documents
        if "llamaindex" in scenarios:
            works["llamaindex"] = LocalEmbedding(
                model=model, max_length=16
            ).aget_text_embedding_batch
        if "llamaindex-floor" in scenarios:
            works["llamaindex-floor"] = Instant(
                model_name="instant", embed_batch_size=64
            ).aget_text_embedding_batch

        async def one(name: str) -> LoopLag:
            if name == "cpu-thread":
                return await cpu_thread_lag(2.0)
            inputs = documents if name == "langchain" else node_texts
            await works[name](inputs[:64])  # warm-up: load and plan
            async with loop_lag() as lag:
                vectors = await works[name](inputs)
            assert len(vectors) == len(inputs)
            del vectors  # freed after the probe stopped
            return lag

        for name in scenarios:
            lag = asyncio.run(one(name))
            generation, seconds = lag.worst_collection
            results.append(
                {
                    "scenario": name,
                    "worst_ms": lag.worst * 1000,
                    "p99_ms": lag.p99 * 1000,
                    "median_ms": lag.median * 1000,
                    "gc_ms": seconds * 1000,
                    "gc_in_worst_ms": lag.collected_in_worst * 1000,
                    "gc_generation": generation,
                    "seconds": lag.seconds,
                    "load": os.getloadavg()[0],
                }
            )
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios in fresh processes (interleaved with ``--compare``) and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--texts", type=int, default=20_000, help="aembed_documents texts")
    parser.add_argument("--nodes", type=int, default=8_000, help="aget_text_embedding_batch")
    parser.add_argument("--only", choices=SCENARIOS, action="append", help="repeatable")
    parser.add_argument("--background-load", type=int, default=0, metavar="N")
    parser.add_argument("--compare", type=Path, default=None, metavar="DIR")
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    scenarios = args.only or list(SCENARIOS)
    if args.measure is not None:  # one run, in this (fresh) process
        print(json.dumps(measure(args.measure, scenarios, args.texts, args.nodes)))
        return 0

    trees = {"this": ROOT}
    if args.compare is not None:
        trees = {"compare": args.compare.resolve(), "this": ROOT}
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(args.background_load)
    ]
    rows: list[dict[str, Any]] = []
    try:
        print(
            f"# {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.background_load} busy "
            f"processes, probe tick 5 ms; trees: "
            + ", ".join(f"{name}={path}" for name, path in trees.items())
        )
        print(
            f"{'tree':8} {'scenario':17} {'run':>3} {'worst ms':>8} {'p99 ms':>7} "
            f"{'median':>6} {'gc in worst':>11} {'gc max':>6} {'gen':>3} {'load':>5} {'s':>5}"
        )
        for run in range(args.runs):
            for tree, path in trees.items():
                command = [sys.executable, __file__, "--measure", str(path)]
                command += [f"--texts={args.texts}", f"--nodes={args.nodes}"]
                command += [f"--only={name}" for name in scenarios]
                env = {**os.environ, "PYTHONPATH": ""}
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    return 1
                for row in json.loads(done.stdout.strip().splitlines()[-1]):
                    rows.append({"tree": tree, "run": run + 1, **row})
                    print(
                        f"{tree:8} {row['scenario']:17} {run + 1:>3} {row['worst_ms']:>8.0f} "
                        f"{row['p99_ms']:>7.0f} {row['median_ms']:>6.1f} {row['gc_in_worst_ms']:>11.0f} "
                        f"{row['gc_ms']:>6.0f} "
                        f"{row['gc_generation']:>3} {row['load']:>5.1f} {row['seconds']:>5.1f}",
                        flush=True,
                    )
    finally:
        for process in busy:
            process.kill()
            process.wait()
    print("# median over runs (worst ms / p99 ms):")
    for tree in trees:
        for name in scenarios:
            mine = [row for row in rows if row["tree"] == tree and row["scenario"] == name]
            worst = statistics.median(row["worst_ms"] for row in mine)
            p99 = statistics.median(row["p99_ms"] for row in mine)
            print(f"{tree:8} {name:17} {worst:6.0f} / {p99:4.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
