"""Throughput, latency, memory and accuracy of localembed against sentence-transformers.

A thin wrapper over :mod:`localembed.cli.benchmark` (also ``localembed bench``), same options:

    python benchmarks/throughput.py --data ../shared/data/stsbenchmark [--json out.json]
    make bench

Quick run: ``--contenders "localembed fp32,sentence-transformers" --short 50 --docs 10
--queries 5 --rounds 1 --no-stream``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from localembed.hardware import configure_process

# The process settings of `localembed bench` (and of the CLI and server): before torch loads.
configure_process()

from localembed.cli.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
