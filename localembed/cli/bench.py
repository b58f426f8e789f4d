"""``localembed bench``: throughput, latency and accuracy against sentence-transformers.

The options live here; the benchmark itself (:mod:`localembed.benchmark`, which needs numpy,
torch and, where it exists, the Unix ``resource`` module) is imported only when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from localembed.cli.common import add_command

if TYPE_CHECKING:
    from localembed.cli.common import Commands

EXAMPLES = """\
examples:
  localembed bench                                       # generated sentences, all contenders
  localembed bench --data ../shared/data/stsbenchmark --json bench-results/throughput.json
  localembed bench --contenders "localembed fp32,sentence-transformers" \\
      --short 100 --docs 20 --queries 10 --rounds 1 --no-stream"""

LOCALEMBED_CONTENDERS = (
    "localembed fp32",
    "localembed int8 (torch)",
    "localembed bf16",
    "localembed onnx fp32",
    "localembed onnx int8",
)
"""localembed contenders (their encoder options: ``localembed.benchmark.LOCALEMBED_OPTIONS``)."""

SENTENCE_TRANSFORMERS = ("sentence-transformers", "sentence-transformers onnx")
"""Optional contenders (need the sentence-transformers package)."""

ALL_CONTENDERS = (*SENTENCE_TRANSFORMERS, *LOCALEMBED_CONTENDERS)


def register(commands: Commands) -> None:
    """Add ``bench`` to ``commands``."""
    parser = add_command(
        commands,
        "bench",
        "Throughput, latency and accuracy against sentence-transformers.",
        EXAMPLES,
        run,
    )
    add_arguments(parser)


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
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")


def run(args: argparse.Namespace) -> int:
    """Run ``localembed bench``."""
    from localembed.benchmark import run as run_benchmark

    run_benchmark(args)
    return 0
