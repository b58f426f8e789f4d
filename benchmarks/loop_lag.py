"""How long the asyncio event loop stalls while the async adapters embed a large batch.

A loop-lag probe (a coroutine sleeping 5 ms and recording the real time between its ticks)
runs beside:

- ``langchain``: one ``LocalEmbeddings.aembed_documents`` of 20,000 texts;
- ``llamaindex``: one ``LocalEmbedding.aget_text_embedding_batch`` of 8,000 texts (LlamaIndex
  splits it into concurrent calls of ``embed_batch_size``).

The worst gap of each run is the longest the loop could not serve anything else (a health
check, another request). The model is one BERT layer 384 wide (all-MiniLM-L6-v2's width and
tokenizer, random weights) with max_length 16, so the model's time is small and the loop's
own work (checks, waiting, list conversion) shows; ``--model`` runs a real one. The machine's
load average is printed with each run: the goal is a worst gap under 100 ms at load 4-8.

    python benchmarks/loop_lag.py [--runs 3] [--texts 20000] [--nodes 8000] [--model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from localembed.hardware import configure_process

configure_process()

TICK = 0.005
"""Seconds the probe sleeps between ticks."""


async def worst_gap(work: Callable[[], Awaitable[Any]]) -> tuple[float, float, int]:
    """Run ``work`` beside the probe: (worst gap, median gap, ticks), seconds."""
    gc.collect()
    gc.freeze()  # a full collection of the imports' heap is not the code under test
    gaps: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(probe())
    try:
        await work()
    finally:
        done.set()
        await ticker
        gc.unfreeze()
    return max(gaps), statistics.median(gaps), len(gaps)


def build_wide_bert(target: Path) -> Path:
    """One BERT layer 384 wide with the default model's tokenizer, random weights."""
    import torch
    from transformers import BertConfig, BertModel

    from localembed.loading import locate_model

    source = locate_model(None).path
    target.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy(source / name, target / name)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=12,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(target, safe_serialization=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """Measure and print the worst event-loop gap of each scenario and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a model folder (default: built here)")
    parser.add_argument("--max-length", type=int, default=16)
    parser.add_argument("--texts", type=int, default=20_000, help="aembed_documents texts")
    parser.add_argument("--nodes", type=int, default=8_000, help="aget_text_embedding_batch")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("langchain", "llamaindex"), default=None)
    args = parser.parse_args(argv)

    from langchain_localembed import LocalEmbeddings
    from llamaindex_localembed import LocalEmbedding

    with tempfile.TemporaryDirectory() as folder:
        model = args.model or str(build_wide_bert(Path(folder) / "wide-bert"))
        options = {"model": model, "max_length": args.max_length}
        langchain = LocalEmbeddings(**options)
        llamaindex = LocalEmbedding(**options)
        documents = [f"document number {i} about topic {i % 17}" for i in range(args.texts)]
        nodes = [f"node {i} on subject {i % 23} and more" for i in range(args.nodes)]

        async def lc() -> None:
            vectors = await langchain.aembed_documents(documents)
            assert len(vectors) == len(documents)

        async def li() -> None:
            vectors = await llamaindex.aget_text_embedding_batch(nodes)
            assert len(vectors) == len(nodes)

        scenarios = {
            f"langchain aembed_documents({args.texts})": lc,
            f"llamaindex aget_text_embedding_batch({args.nodes})": li,
        }
        print(f"# {sys.version.split()[0]}, {os.cpu_count()} CPUs, probe tick {TICK * 1000:.0f} ms")
        print(f"{'scenario':52} {'run':>3} {'worst ms':>9} {'median ms':>9} {'load':>5} {'s':>6}")
        for name, work in scenarios.items():
            if args.only and not name.startswith(args.only):
                continue
            asyncio.run(work())  # warm-up: the first call loads and plans
            for run in range(args.runs):
                start = time.perf_counter()
                worst, median, _ = asyncio.run(worst_gap(work))
                seconds = time.perf_counter() - start
                load = os.getloadavg()[0]
                print(
                    f"{name:52} {run + 1:>3} {worst * 1000:>9.1f} {median * 1000:>9.1f} "
                    f"{load:>5.1f} {seconds:>6.1f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
