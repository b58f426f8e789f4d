"""STS Benchmark accuracy through the LangChain adapter: Spearman (cosine) x 100.

MTEB's published score for all-MiniLM-L6-v2 on the test split is 82.03.

    python benchmarks/stsb.py --data ../shared/data/stsbenchmark [--model M] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from langchain_localembed import LocalEmbeddings
from localembed.cli.bench_corpora import read_pairs, sts_file

PUBLISHED = {"sentence-transformers/all-MiniLM-L6-v2": 82.03}


def sts_spearman(embeddings: LocalEmbeddings, data: Path, split: str = "test") -> float:
    """Spearman correlation x 100 between gold scores and cosine similarity."""
    first, second, gold = read_pairs(sts_file(data, split))
    a = np.asarray(embeddings.embed_documents(first))
    b = np.asarray(embeddings.embed_documents(second))
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(spearmanr(gold, cosine).statistic * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="STS Benchmark folder (sts-test.csv, sts-dev.csv)"
    )
    parser.add_argument("--split", default="test", choices=["test", "dev"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    try:
        sts_file(args.data, args.split)  # before the model loads: one line, no traceback
    except ValueError as error:
        sys.exit(f"{parser.prog}: error: {error}")
    embeddings = LocalEmbeddings(model=args.model, dtype=args.dtype)
    start = time.perf_counter()
    score = sts_spearman(embeddings, args.data, args.split)
    seconds = time.perf_counter() - start
    name = embeddings.encoder.source.name
    result = {
        "model": name,
        "split": args.split,
        "dtype": args.dtype,
        "spearman": round(score, 2),
        "published": PUBLISHED.get(name) if args.split == "test" else None,
        "seconds": round(seconds, 1),
    }
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
