"""``localembed info``: how a model will embed, and where each setting came from."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from localembed.cli.common import UsageError, add_command, add_model_options, config_from_args

if TYPE_CHECKING:
    from localembed.cli.common import Commands

EXAMPLES = """\
examples:
  localembed info
  localembed info BAAI/bge-small-en-v1.5 --json
  localembed info ./my-model --pooling cls --max-length 128
  localembed info --hardware                  # CPU features, threads, GEMM kernels"""


def register(commands: Commands) -> None:
    """Add ``info`` to ``commands``."""
    parser = add_command(
        commands,
        "info",
        "Show how a model will embed, and where each setting came from.",
        EXAMPLES,
        run,
    )
    parser.add_argument(
        "model_argument",
        nargs="?",
        default=None,
        metavar="MODEL",
        help="directory or hub id (default: the embedded all-MiniLM-L6-v2)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--paths",
        action="store_true",
        help="show the model's absolute folder (default: as you named it: hub id, directory)",
    )
    parser.add_argument(
        "--hardware",
        action="store_true",
        help="instead: the CPU's features, usable CPUs, thread policy and GEMM kernels",
    )
    add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``localembed info``."""
    if args.hardware:
        from localembed.hardware import describe_hardware

        print(describe_hardware())
        return 0
    if args.model_argument is not None:
        if args.model is not None and args.model != args.model_argument:
            msg = "give the model once: as MODEL or as --model"
            raise UsageError(msg)
        args.model = args.model_argument
    from localembed.encoder import get_encoder

    description = get_encoder(config_from_args(args)).describe(paths=args.paths)
    if args.json:
        print(json.dumps(description, ensure_ascii=False, indent=2))
        return 0
    sources = description.pop("sources")
    for key, value in description.items():
        origin = f"  ({sources[key]})" if key in sources else ""
        if key == "path" and not args.paths:
            origin = "  (--paths: the absolute folder)"
        shown = repr(value) if isinstance(value, str) else value
        print(f"{key:>20}: {shown}{origin}")
    return 0
