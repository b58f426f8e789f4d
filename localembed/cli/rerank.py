"""``localembed rerank``: rank documents for a query with a local cross-encoder (or bge-m3)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from localembed.cli.common import (
    UsageError,
    add_command,
    checked_config,
    flag_options,
    short_label,
)
from localembed.config import RerankerConfig

if TYPE_CHECKING:
    from localembed.cli.common import Commands

EXAMPLES = """\
examples:
  localembed rerank "where do cats sleep?" --file docs.txt --model BAAI/bge-reranker-base
  localembed rerank "where do cats sleep?" --doc "Cats nap in the sun." --doc "Stocks fell." \\
      --model cross-encoder/ms-marco-MiniLM-L6-v2 --top-n 1
  cat docs.txt | localembed rerank "cats" --file - --model models/bge-m3 --json"""

RERANK_FLAGS: tuple[tuple[str, str], ...] = (
    ("--model", "model"),
    ("--activation", "activation"),
    ("--scoring", "scoring"),
    ("--dtype", "dtype"),
    ("--max-length", "max_length"),
    ("--batch-size", "batch_size"),
    ("--max-batch-tokens", "max_batch_tokens"),
    ("--device", "device"),
    ("--backend", "backend"),
    ("--quantize", "quantize"),
    ("--trust-remote-code", "trust_remote_code"),
    ("--allow-pickle-weights", "allow_pickle_weights"),
)
"""Command-line flag -> RerankerConfig field; help, type and choices come from the field."""


def register(commands: Commands) -> None:
    """Add ``rerank`` to ``commands``."""
    parser = add_command(
        commands,
        "rerank",
        "Rank documents by relevance to a query with a cross-encoder (or bge-m3).",
        EXAMPLES,
        run,
    )
    parser.add_argument("query", metavar="QUERY", help="the query")
    parser.add_argument("--file", default=None, help="documents, one a line ('-': standard input)")
    parser.add_argument(
        "--doc", action="append", default=[], metavar="TEXT", help="a document (repeatable)"
    )
    parser.add_argument(
        "--top-n", type=int, default=None, metavar="K", help="print the best K (default: all)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON (full precision)")
    group = parser.add_argument_group("reranker options (the same names as RerankerConfig)")
    for flag, name in RERANK_FLAGS:
        options = flag_options(name, RerankerConfig)
        if name == "model":
            options["required"] = True
        group.add_argument(flag, **options)


def format_ranking(
    ranked: list[tuple[int, float]], documents: list[str], sources: list[str]
) -> str:
    """The ranking as aligned text: rank, document number, where it came from, score, text.

    ``doc`` counts from 1 over all documents (the ``--doc`` texts first, then the file's
    lines); ``source`` is ``--doc N`` or ``FILE:LINE``.
    """
    width = max(len("source"), *(len(sources[index]) for index, _ in ranked))
    lines = [f"{'rank':>4}  {'doc':>5}  {'source':<{width}}  {'score':>9}  document"]
    for rank, (index, score) in enumerate(ranked, start=1):
        label = short_label(documents[index], 60)
        lines.append(
            f"{rank:>4}  {index + 1:>5}  {sources[index]:<{width}}  {score:>9.4f}  {label}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``localembed rerank``."""
    from localembed.cli.corpus import open_source

    documents = list(args.doc)
    sources = [f"--doc {number}" for number in range(1, len(documents) + 1)]
    if args.file is not None:
        source = open_source(args.file, "txt")
        name = "stdin" if args.file == "-" else Path(args.file).name
        for row in source.rows:
            documents.append(row.text)
            sources.append(f"{name}:{row.line}")
    if not documents:
        msg = "give documents with --file or --doc"
        raise UsageError(msg)
    if args.top_n is not None and args.top_n < 1:
        msg = f"--top-n must be at least 1, got {args.top_n}"
        raise UsageError(msg)
    options = {
        name: getattr(args, name)
        for _, name in RERANK_FLAGS
        if getattr(args, name, None) is not None
    }
    from localembed.reranker import get_reranker

    reranker = get_reranker(checked_config(RerankerConfig, options))
    ranked = reranker.rerank(args.query, documents, top_n=args.top_n)
    if args.json:
        report = {
            "model": reranker.source.name,
            "query": args.query,
            "results": [
                {
                    "index": index,
                    "source": sources[index],
                    "relevance_score": score,
                    "document": documents[index],
                }
                for index, score in ranked
            ],
        }
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(format_ranking(ranked, documents, sources))
    return 0
