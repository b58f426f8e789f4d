"""Packed batches (real tokens only) against padded ones: one process, alternating rounds.

    python benchmarks/unpadding.py [--data ../shared/data/stsbenchmark] [--rounds 12]

Two encoders of the same model in one process, one packing its batches
(``localembed.unpadding``, the default) and one with ``LOCALEMBED_UNPAD=0``, alternate call
group by call group (the order alternates by round, so a shared machine's changing load falls
on both). Prints, per workload, the padding a padded batch carries, the median speed-up with
its quartiles over the rounds, and the largest |difference| between the two encoders' vectors:

- ``server pass``: calls of 16 texts drawn at random from single sentences of 4 to 40 words
  (``server_load.make_texts``): what a server's micro-batcher merges from 16 clients.
- ``mixed documents``: the benchmark's mixed-length corpus in one call (length-sorted
  token-budget batches: ``localembed bench``'s workload).
- ``sentences``: STS sentences (or generated ones), 64 per call, in order.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_load import make_texts

from localembed.cli.bench_corpora import bench_sentences, mixed_documents
from localembed.cli.bench_measures import padded_tokens


def padding_share(encoder: object, calls: list[list[str]]) -> float:
    """Padded tokens over real tokens - 1, for the batches the encoder plans."""
    padded = real = 0
    for texts in calls:
        ids = encoder.tokenize(texts).ids  # type: ignore[attr-defined]
        lengths = [len(row) for row in ids]
        padded += padded_tokens(lengths, encoder.batches(ids))  # type: ignore[attr-defined]
        real += sum(lengths)
    return padded / real - 1


def main() -> None:
    import numpy as np

    from localembed import get_encoder
    from localembed.encoder import clear_encoder_cache

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="STS Benchmark folder")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    sentences = bench_sentences(args.data)
    rng = random.Random(0)
    single = make_texts(4096)
    workloads = {
        "server pass (16 texts)": [rng.sample(single, 16) for _ in range(10)],
        "mixed documents": [mixed_documents(sentences, 100)],
        "sentences (64 per call)": [sentences[i : i + 64] for i in range(0, 640, 64)],
    }
    packed = get_encoder()
    clear_encoder_cache()  # a second encoder, with its own copy of the model
    os.environ["LOCALEMBED_UNPAD"] = "0"
    padded = get_encoder()
    del os.environ["LOCALEMBED_UNPAD"]
    assert packed.runtime.unpadded and not padded.runtime.unpadded
    print(
        f"# {packed.source.name}, {packed.runtime.threads} threads, fp32; median of {args.rounds}"
    )
    print(f"{'workload':<26} {'padding':>8} {'speed-up':>9} {'quartiles':>14} {'max |diff|':>11}")
    for name, calls in workloads.items():
        difference = max(
            float(np.abs(np.asarray(packed.encode(c)) - np.asarray(padded.encode(c))).max())
            for c in calls
        )
        ratios = []
        for round_ in range(args.rounds):
            seconds = {}
            order = [("packed", packed), ("padded", padded)]
            for label, encoder in order if round_ % 2 == 0 else order[::-1]:
                began = time.perf_counter()
                for texts in calls:
                    encoder.encode(texts)
                seconds[label] = time.perf_counter() - began
            ratios.append(seconds["padded"] / seconds["packed"])
        low, median, high = statistics.quantiles(ratios, n=4)
        print(
            f"{name:<26} {100 * padding_share(padded, calls):7.0f}% {median:8.2f}x "
            f"{f'{low:.2f}-{high:.2f}':>14} {difference:11.1e}"
        )


if __name__ == "__main__":
    main()
