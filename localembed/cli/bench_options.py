"""The benchmark's options and contender names, importing nothing heavy.

Shared by ``localembed bench`` and :mod:`localembed.cli.benchmark` (``benchmarks/throughput.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

LOCALEMBED_CONTENDERS = (
    "localembed fp32",
    "localembed torch fp32",
    "localembed int8 (torch)",
    "localembed bf16",
    "localembed onnx fp32",
    "localembed onnx int8",
)
"""localembed contenders (their encoder options:
``localembed.cli.bench_contenders.LOCALEMBED_OPTIONS``)."""

SENTENCE_TRANSFORMERS = ("sentence-transformers", "sentence-transformers onnx")
"""Optional contenders (need the sentence-transformers package)."""

ALL_CONTENDERS = (*SENTENCE_TRANSFORMERS, *LOCALEMBED_CONTENDERS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (``localembed bench`` and ``benchmarks/throughput.py``)."""
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="STS Benchmark folder (sts-test.csv); default: generated sentences, no STS score",
    )
    parser.add_argument("--model", default=None, help="default: the embedded all-MiniLM-L6-v2")
    parser.add_argument(
        "--random-base",
        action="store_true",
        help="instead of --model: a BERT-base-sized model (bge-base's shape) with random weights",
    )
    parser.add_argument("--short", type=int, default=1000, help="short sentences per round")
    parser.add_argument("--docs", type=int, default=300, help="mixed-length documents per round")
    parser.add_argument("--queries", type=int, default=200, help="single queries for latency")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (the best counts)")
    parser.add_argument(
        "--stream", type=int, default=100_000, help="docs for the RSS test (0: skip)"
    )
    parser.add_argument(
        "--no-stream", dest="stream", action="store_const", const=0, help="skip the RSS test"
    )
    parser.add_argument(
        "--contention",
        type=int,
        default=100,
        help="mixed documents for the run beside a CPU-burning process, each contender in its "
        "own process (0: skip)",
    )
    parser.add_argument(
        "--contenders",
        default=",".join(ALL_CONTENDERS),
        help=f"comma-separated, from: {', '.join(ALL_CONTENDERS)} (default: all)",
    )
    parser.add_argument(
        "--static",
        type=Path,
        default=None,
        metavar="DIR",
        help="also time a static model written by `localembed distill` (contender "
        "'localembed static'; STS shows what it gives up)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
