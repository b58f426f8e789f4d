"""Resident memory of one process embedding batches of ever new shapes (rows x padded width).

Each step embeds a batch of random size and random text lengths with the embedded
all-MiniLM-L6-v2 (what the server's micro-batcher runs), and the RSS is sampled every
``--sample`` seconds. ``--bucket N`` pads every batch's width up to a multiple of N (an
experiment: fewer distinct shapes), ``arenaN`` sets MALLOC_ARENA_MAX=N, ``mmapK`` sets
MALLOC_MMAP_THRESHOLD_ to K KiB (large tensors always mmapped, returned on free), ``padded``
sets LOCALEMBED_UNPAD=0 (batches run padded, not packed). Modes run
in their own processes, side by side, for the same time:

    python benchmarks/rss_shapes.py --seconds 150 --modes plain bucket32 arena2 mmap128
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(mode: str, seconds: float, sample: float, max_rows: int, max_words: int) -> None:
    import random

    from localembed import get_encoder

    encoder = get_encoder()
    if mode.startswith("bucket"):
        import localembed.backends.transformer as transformer
        from localembed.batching import pad_right

        step = int(mode.removeprefix("bucket"))

        def bucketed(rows, pad_id, device):  # type: ignore[no-untyped-def]
            ids, mask = pad_right(rows, pad_id, device)
            width = ids.shape[1]
            wanted = -(-width // step) * step
            if wanted == width:
                return ids, mask
            import torch

            extra = wanted - width
            ids = torch.nn.functional.pad(ids, (0, extra), value=pad_id)
            mask = torch.nn.functional.pad(mask, (0, extra), value=0)
            return ids, mask

        transformer.pad_right = bucketed  # type: ignore[assignment]
    rng = random.Random(0)
    words = [
        "the",
        "a",
        "cat",
        "sat",
        "on",
        "mat",
        "market",
        "fell",
        "sharply",
        "today",
        "while",
        "rain",
        "kept",
        "falling",
    ]
    started = time.monotonic()
    next_sample = started
    texts = 0
    shapes: set[tuple[int, int]] = set()
    print(f"{mode}: seconds texts shapes RSS_MiB", flush=True)
    while time.monotonic() - started < seconds:
        rows = rng.randint(1, max_rows)
        batch = [" ".join(rng.choices(words, k=rng.randint(1, max_words))) for _ in range(rows)]
        encoder.encode(batch)
        texts += rows
        shapes.add((rows, max(len(t.split()) for t in batch)))
        if time.monotonic() >= next_sample:
            elapsed = time.monotonic() - started
            print(f"{mode}: {elapsed:.0f} {texts} {len(shapes)} {rss_mib():.0f}", flush=True)
            next_sample += sample
    print(f"{mode}: {time.monotonic() - started:.0f} {texts} {len(shapes)} {rss_mib():.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--sample", type=float, default=15)
    parser.add_argument("--modes", nargs="+", default=["plain", "bucket32"])
    parser.add_argument("--rows", type=int, default=32, help="most texts per batch")
    parser.add_argument("--words", type=int, default=120, help="most words per text")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seconds, args.sample, args.rows, args.words)
        return 0
    processes = []
    for mode in args.modes:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        env["TOKENIZERS_PARALLELISM"] = "false"
        if mode.startswith("arena"):
            env["MALLOC_ARENA_MAX"] = mode.removeprefix("arena")
        if mode == "padded":  # batches run padded, not packed (localembed.unpadding)
            env["LOCALEMBED_UNPAD"] = "0"
        if mode.startswith("mmap"):  # a fixed mmap threshold: glibc's dynamic one off
            env["MALLOC_MMAP_THRESHOLD_"] = str(int(mode.removeprefix("mmap")) * 1024)
        command = [sys.executable, __file__, "--child", mode]
        command += ["--seconds", str(args.seconds), "--sample", str(args.sample)]
        command += ["--rows", str(args.rows), "--words", str(args.words)]
        processes.append(subprocess.Popen(command, env=env))
    return max(process.wait() for process in processes)


if __name__ == "__main__":
    raise SystemExit(main())
