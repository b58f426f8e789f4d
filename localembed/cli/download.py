"""``localembed download``: a model from the Hugging Face hub into a folder, safetensors only.

Only the files localembed loads are fetched: safetensors weights, the model and tokenizer
configuration, vocabularies, the sentence-transformers metadata and bge-m3's two head files
(``sparse_linear.pt``, ``colbert_linear.pt``: plain tensors, read with
``torch.load(weights_only=True)``, so no pickled code runs). Other pickle weights
(``pytorch_model.bin``, any other ``*.pt``) and code files are never downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from localembed.cli.common import CommandError, add_command
from localembed.loading import DOWNLOAD_RECORD, HUB_ALLOW_PATTERNS

if TYPE_CHECKING:
    from localembed.cli.common import Commands

EXAMPLES = """\
examples:
  localembed download sentence-transformers/all-MiniLM-L6-v2 --to models/minilm
  localembed download BAAI/bge-small-en-v1.5 --to models/bge-small --revision main
  localembed embed docs.txt -o docs.npy --model models/bge-small   # then, offline"""

ALLOW_PATTERNS = tuple(HUB_ALLOW_PATTERNS)
"""What is fetched: the list model loading fetches (see ``localembed.loading``)."""


def register(commands: Commands) -> None:
    """Add ``download`` to ``commands``."""
    parser = add_command(
        commands,
        "download",
        "Download a model from the Hugging Face hub into a folder (safetensors weights only).",
        EXAMPLES,
        run,
    )
    parser.add_argument("model", metavar="MODEL", help="hub id, e.g. BAAI/bge-small-en-v1.5")
    parser.add_argument("--to", required=True, metavar="DIR", help="the folder to write")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")


def run(args: argparse.Namespace) -> int:
    """Run ``localembed download``."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    target = Path(args.to)
    if constants.HF_HUB_OFFLINE:
        msg = (
            f"cannot download {args.model}: HF_HUB_OFFLINE is set, so the hub is not contacted "
            f"(unset it, or copy the model folder here and pass its path as --model)"
        )
        raise CommandError(msg)
    if target.exists() and not target.is_dir():
        msg = f"--to {target} is a file; give a folder"
        raise CommandError(msg)
    try:
        folder = Path(
            str(
                snapshot_download(
                    args.model,
                    revision=args.revision,
                    local_dir=target,
                    allow_patterns=list(ALLOW_PATTERNS),
                )
            )
        )
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        msg = (
            f"{args.model}{'@' + args.revision if args.revision else ''} is not on the hub "
            f"(or it is private or gated: log in with `hf auth login`) ({type(error).__name__})"
        )
        raise CommandError(msg) from None
    except (OSError, HfHubHTTPError, RuntimeError, ValueError) as error:
        # No network arrives as several types (wrapped connection errors, blocked sockets).
        reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
        msg = f"cannot download {args.model} from the Hugging Face hub (no network?): {reason}"
        raise CommandError(msg) from None
    files = [path for path in folder.rglob("*") if path.is_file() and ".cache" not in path.parts]
    weights = [path for path in files if path.suffix == ".safetensors"]
    if not weights:
        msg = (
            f"{args.model} has no safetensors weights (only pickle weights, which localembed "
            f"does not download); the other files are in {folder}"
        )
        raise CommandError(msg)
    # The hub id, for family presets when the folder is not named like it.
    record = {"model": args.model, "revision": args.revision or "main"}
    (folder / DOWNLOAD_RECORD).write_text(json.dumps(record) + "\n", encoding="utf-8")
    size = sum(path.stat().st_size for path in files) / 2**20
    print(
        f"downloaded {args.model} to {folder}: {len(files)} files, {size:,.1f} MiB "
        f"({len(weights)} safetensors); use it with --model {folder}",
        file=sys.stderr,
    )
    return 0
