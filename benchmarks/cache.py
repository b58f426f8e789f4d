"""The embedding cache against computing, in one run (ratios, not absolute times).

    python benchmarks/cache.py --data /work/shared/data/stsbenchmark [--count 10000] [--model M]

Texts: every distinct sentence of STS Benchmark (dev and test), then numbered variants of
them ("<sentence> [k]") up to ``--count``: STS-B-like lengths and vocabulary. Measures:

- ``warm_speedup``: computing the corpus with no cache / re-embedding it unchanged with a
  warm cache (every text a hit). Goal: at least 50.
- ``cold_overhead``: a cold cache (every text a miss: computed and written) over no cache,
  minus one. Goal: at most 0.05. No-cache and cold runs alternate, ``--repeat`` times each,
  and the fastest of each is compared (the machine may be shared).
- ``cold_cache_io_share``: the cache's own work in a cold run (look up every text, write
  every vector; no model) over no cache: the overhead without the noise of two model runs.
- ``changed``: the corpus with ``--changed`` of its documents edited, through the warm cache:
  the texts computed are counted (they must be exactly the edited ones).
- ``fingerprint_seconds``: hashing the model's files once (first load of a process).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from localembed import clear_encoder_cache, get_encoder
from localembed.cache import EmbeddingCache, Rows, open_store
from localembed.cli.bench_corpora import read_pairs, sts_file


def corpus(data: Path, count: int) -> list[str]:
    """``count`` STS-B-like texts: the distinct STS-B sentences, then numbered variants."""
    sentences: list[str] = []
    for split in ("test", "dev"):
        first, second, _ = read_pairs(sts_file(data, split))
        sentences.extend(first)
        sentences.extend(second)
    distinct = list(dict.fromkeys(sentences))
    texts = distinct[:count]
    round_ = 1
    while len(texts) < count:
        texts.extend(f"{s} [{round_}]" for s in distinct[: count - len(texts)])
        round_ += 1
    return texts


def timed(function: object, *args: object) -> tuple[float, object]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = function(*args)  # type: ignore[operator]
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="STS Benchmark folder")
    parser.add_argument("--count", type=int, default=10_000, help="texts (default 10000)")
    parser.add_argument("--changed", type=float, default=0.10, help="share of edited texts")
    parser.add_argument("--repeat", type=int, default=2, help="no-cache/cold runs each")
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()

    texts = corpus(args.data, args.count)
    plain = get_encoder(model=args.model)
    plain.encode(texts[:64])  # warm up: weights paged in, kernels chosen

    from localembed import fingerprint

    fingerprint._digests.clear()
    fingerprint_seconds, _ = timed(fingerprint.model_fingerprint, plain.source.path)

    root = Path(tempfile.mkdtemp(prefix="localembed-cache-bench-"))
    nocache: list[float] = []
    cold: list[float] = []
    reference = None
    for run in range(args.repeat):
        seconds, reference = timed(plain.encode, texts)
        nocache.append(seconds)
        clear_encoder_cache()  # a new cache: a new, empty directory
        cached = get_encoder(model=args.model, cache=str(root / f"cold{run}"))
        seconds, out = timed(cached.encode, texts)
        cold.append(seconds)
        assert np.allclose(out, reference, atol=1e-5)
        plain = get_encoder(model=args.model)

    warm_dir = str(root / f"cold{args.repeat - 1}")
    clear_encoder_cache()
    warm = get_encoder(model=args.model, cache=warm_dir)
    warm_seconds, out = timed(warm.encode, texts)
    stats = warm.cache_stats()
    assert stats["hits"] == len(texts) and stats["computed"] == 0, stats
    assert np.allclose(out, reference, atol=1e-5)

    # The cache's own work on a cold run, without the model: look up every text (all miss),
    # then write every vector; a low-noise estimate of the cold overhead.
    assert warm.cache is not None and reference is not None
    io_cache = EmbeddingCache(
        open_store(str(root / "io")), dict(warm.cache.fields), warm.cache.dimension
    )
    tokens = np.ones(len(texts), np.int64)
    truncated = np.zeros(len(texts), bool)
    start = time.perf_counter()
    lookup = io_cache.lookup(texts, None)
    io_cache.complete(lookup, Rows(np.asarray(reference), tokens, truncated))
    io_seconds = time.perf_counter() - start

    edited = round(len(texts) * args.changed)
    step = len(texts) / max(edited, 1)
    positions = {int(i * step) for i in range(edited)}
    changed = [f"{t} (revised)" if i in positions else t for i, t in enumerate(texts)]
    before = warm.cache_stats()
    changed_seconds, _ = timed(warm.encode, changed)
    after = warm.cache_stats()
    computed = after["computed"] - before["computed"]

    result = {
        "model": warm.source.name,
        "texts": len(texts),
        "device": str(warm.device),
        "nocache_seconds": [round(s, 3) for s in nocache],
        "cold_seconds": [round(s, 3) for s in cold],
        "warm_seconds": round(warm_seconds, 4),
        "warm_speedup": round(min(nocache) / warm_seconds, 1),
        "cold_overhead": round(min(cold) / min(nocache) - 1, 4),
        "cold_cache_io_seconds": round(io_seconds, 3),
        "cold_cache_io_share": round(io_seconds / min(nocache), 4),
        "changed_texts": len(positions),
        "changed_computed": computed,
        "changed_hits": after["hits"] - before["hits"],
        "changed_seconds": round(changed_seconds, 3),
        "cache_bytes": after["bytes"],
        "fingerprint_seconds": round(fingerprint_seconds, 3),
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
