"""CPU-time ratios of the engines on one thread: work done, whatever else the machine runs.

    python benchmarks/engines_cpu.py [--data ../shared/data/stsbenchmark] [--docs 100] [--rounds 3]

Wall-clock ratios on a shared machine mix the work an engine does with how it copes with
other load (spinning, thread wake-ups). This script takes load out: every contender runs on
one thread in the calling thread (torch intra-op threads 1, ONNX Runtime intra-op threads 1),
and ``time.thread_time`` counts only the CPU time that thread got. Rounds are interleaved;
the median round counts. Prints mixed documents per CPU-second and the ratio to
sentence-transformers (needs it installed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    """Parse options, time each engine, print the table."""
    import torch
    from sentence_transformers import SentenceTransformer

    from localembed import get_encoder
    from localembed.cli.bench_corpora import (
        bench_sentences,
        mixed_documents,
    )

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--static", type=Path, default=None, help="a distilled model to add")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sentences = bench_sentences(args.data)
    texts = mixed_documents(sentences, args.docs)
    default = get_encoder(threads=1)
    contenders = {
        "sentence-transformers": SentenceTransformer(str(default.source.path), device="cpu").encode,
        f"localembed defaults ({default.runtime.name})": default.encode,
        "localembed backend='torch'": get_encoder(backend="torch", threads=1).encode,
        "localembed backend='onnx', quantize='int8'": get_encoder(
            backend="onnx", quantize="int8", threads=1
        ).encode,
        "localembed quantize='int8' (torch)": get_encoder(
            backend="torch", quantize="int8", threads=1
        ).encode,
    }
    if args.static is not None:
        contenders["localembed static"] = get_encoder(model=str(args.static)).encode
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for encode in contenders.values():
        encode(texts[:8])
    for _ in range(args.rounds):
        for name, encode in contenders.items():
            start = time.thread_time()
            encode(texts)
            seconds[name].append(time.thread_time() - start)
    base = statistics.median(seconds["sentence-transformers"])
    print(f"# {len(texts)} mixed documents, 1 thread, CPU time, median of {args.rounds} rounds")
    print(f"{'contender':<46} {'docs/CPU-s':>10} {'x ST':>6} {'spread':>8}")
    for name, values in seconds.items():
        median = statistics.median(values)
        spread = (max(values) - min(values)) / median
        print(f"{name:<46} {len(texts) / median:>10.1f} {base / median:>6.2f} {spread:>7.0%}")


if __name__ == "__main__":
    main()
