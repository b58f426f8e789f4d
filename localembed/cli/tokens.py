"""``localembed tokens``: how the tokenizer splits a text, piece by piece."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from localembed.cli.common import (
    add_command,
    add_model_options,
    config_from_args,
    instruction_for,
    short_label,
)

if TYPE_CHECKING:
    from localembed.cli.common import Commands

EXAMPLES = """\
examples:
  localembed tokens "Embeddings turn text into vectors."
  localembed tokens "query text" --model intfloat/e5-small-v2 --kind query
  localembed tokens - --json < long_document.txt"""


def register(commands: Commands) -> None:
    """Add ``tokens`` to ``commands``."""
    parser = add_command(
        commands, "tokens", "Show how the tokenizer splits a text: pieces and ids.", EXAMPLES, run
    )
    parser.add_argument("text", metavar="TEXT", help="the text ('-': read standard input)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_model_options(parser)


@contextlib.contextmanager
def _encoder_warnings_off() -> Iterator[None]:
    logger = logging.getLogger("localembed")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def run(args: argparse.Namespace) -> int:
    """Run ``localembed tokens``."""
    from localembed.presets import apply_instruction
    from localembed.texts import repair_text, warn_repaired

    # From standard input, the newline that ends the last line is not part of the text.
    text = sys.stdin.read().removesuffix("\n") if args.text == "-" else args.text
    # An argument or input that is not UTF-8 arrives with lone surrogates: the encoder's repair.
    fixed = repair_text(text)
    warn_repaired(int(fixed is not text), 1, "text")
    text = fixed
    from localembed.encoder import get_encoder

    encoder = get_encoder(config_from_args(args))
    instruction = instruction_for(encoder, args.kind)
    tokenizer = encoder.tokenizer
    instructed = apply_instruction(instruction, text)
    # This command reports truncation itself (below), so the encoder's warning is not shown.
    with _encoder_warnings_off():
        windows = encoder.tokenize([text], instruction).ids
    # The whole text's count, untruncated (verbose=False: no over-length warning).
    count = len(tokenizer(instructed, verbose=False)["input_ids"])
    max_length = encoder.settings.max_length
    special = set(tokenizer.all_special_ids)
    rows: list[dict[str, Any]] = [
        {
            "window": window,
            "index": index,
            "id": int(token),
            "piece": piece,
            "special": token in special,
        }
        for window, ids in enumerate(windows)
        for index, (token, piece) in enumerate(
            zip(ids, tokenizer.convert_ids_to_tokens(ids), strict=True)
        )
    ]
    over = count > max_length
    if args.json:
        report = {
            "model": encoder.source.name,
            "text": text,
            "instruction": instruction,
            "count": count,
            "max_length": max_length,
            "truncated": over and len(windows) == 1,
            "windows": len(windows),
            "tokens": rows,
        }
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    note = f"  (instruction {instruction!r})" if instruction else ""
    print(f"text: {short_label(instructed, 70)!r}{note}")
    width = max([5, *(len(row["piece"]) for row in rows)])
    print(f"{'#':>5}  {'piece':<{width}}  {'id':>7}")
    for row in rows:
        if row["index"] == 0 and len(windows) > 1:
            print(f"-- window {row['window'] + 1} of {len(windows)}")
        mark = "  special" if row["special"] else ""
        print(f"{row['index']:>5}  {row['piece']:<{width}}  {row['id']:>7}{mark}")
    print(f"{count} tokens (special tokens included); max_length {max_length}")
    if over and len(windows) == 1:
        print(
            f"warning: {count} tokens > max_length {max_length}: only the first {max_length} "
            f"are embedded (--long-text chunk embeds the whole text in windows)",
            file=sys.stderr,
        )
    return 0
