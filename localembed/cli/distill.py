"""``localembed distill``: a static-embedding model from a local transformer (never the default).

The distillation (token vectors through the model, PCA, Zipf/SIF weights) is
:func:`localembed.static.distill`; it is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from localembed.cli.common import add_command

if TYPE_CHECKING:
    from localembed.cli.common import Commands

EXAMPLES = """\
examples:
  localembed distill -o models/minilm-static              # the embedded all-MiniLM-L6-v2
  localembed distill BAAI/bge-small-en-v1.5 -o models/bge-small-static --dimension 128
  localembed embed docs.txt -o docs.npy --model models/minilm-static"""


def register(commands: Commands) -> None:
    """Add ``distill`` to ``commands``."""
    parser = add_command(
        commands,
        "distill",
        "Distill a model into static token vectors (much faster, less accurate; model2vec format).",
        EXAMPLES,
        run,
    )
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        metavar="MODEL",
        help="directory or hub id (default: the embedded all-MiniLM-L6-v2)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="directory to write")
    parser.add_argument(
        "--dimension", type=int, default=256, help="PCA components kept (default: 256)"
    )
    parser.add_argument(
        "--sif",
        type=float,
        default=1e-4,
        help="SIF coefficient of the Zipf weighting; 0 turns it off (default: 1e-4)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1024, help="token ids per forward pass (default: 1024)"
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="run the model repository's own code"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``localembed distill``."""
    from localembed.distill import distill

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} tokens", end="", file=sys.stderr, flush=True)

    report = distill(
        args.model,
        args.output,
        dimension=args.dimension,
        sif_coefficient=args.sif,
        batch_size=args.batch_size,
        trust_remote_code=args.trust_remote_code,
        progress=progress if sys.stderr.isatty() else None,
    )
    print(
        f"wrote {report.path}: {report.tokens} tokens x {report.dimension} dimensions "
        f"(PCA keeps {100 * report.explained_variance:.1f}% of the variance); "
        f"load it with get_encoder(model={str(report.path)!r})"
    )
    return 0
