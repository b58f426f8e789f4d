"""``localembed bench``: throughput, latency and accuracy against sentence-transformers.

The options live here; the benchmark itself (:mod:`localembed.cli.benchmark`, which needs numpy,
torch and, where it exists, the Unix ``resource`` module) is imported only when it runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from localembed.cli.bench_options import add_arguments
from localembed.cli.common import add_command

if TYPE_CHECKING:
    from localembed.cli.common import Commands

EXAMPLES = """\
examples:
  localembed bench                                       # generated sentences, all contenders
  localembed bench --data ../shared/data/stsbenchmark --json bench-results/throughput.json
  localembed bench --contenders "localembed fp32,sentence-transformers" \\
      --short 100 --docs 20 --queries 10 --rounds 1 --no-stream"""


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


def run(args: argparse.Namespace) -> int:
    """Run ``localembed bench``."""
    from localembed.cli.benchmark import run as run_benchmark

    run_benchmark(args)
    return 0
