"""``localembed embed``: a file of texts to vectors, streaming and resumable.

It reads the input in chunks of ``--chunk-size`` rows, embeds each chunk with the shared
encoder and appends it to ``OUTPUT.partial``; after each chunk the data is flushed to disk and
``OUTPUT.partial.json`` records the rows written (and a digest of their texts and the
settings). ``OUTPUT`` appears, by rename, only when every row is written, so it is never
half-written; an interrupted run leaves the partial output, which ``--resume`` continues: it
re-reads the input, checks that the rows already written are the same texts under the same
settings, skips them and embeds the rest in the same chunks, so the final file is the same as
that of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localembed.cli.common import (
    HANDLED,
    CommandError,
    Interrupted,
    UsageError,
    add_command,
    add_model_options,
    config_from_args,
    error_message,
    instruction_for,
)
from localembed.corpus import (
    INPUT_FORMATS,
    INPUT_SUFFIXES,
    OUTPUTS,
    PartialOutput,
    Source,
    TextDigest,
    chunks,
    differences,
    open_source,
)

if TYPE_CHECKING:
    from localembed.cli.common import Commands
    from localembed.encoder import LocalEncoder

EXAMPLES = """\
examples:
  localembed embed docs.txt -o docs.npy                 # one text per line -> (n, dim) float32
  localembed embed docs.jsonl -o docs.parquet --column body
  localembed embed reviews.csv -o reviews.jsonl --column review --progress
  localembed embed queries.txt -o queries.npy --kind query --instruction "query: "
  cat docs.txt | localembed embed - -o docs.npy --model ./my-model --pooling cls
  localembed embed big.parquet -o big.npy --resume      # continue an interrupted run"""

CHUNK_SIZE = 1024
"""Rows per chunk: the unit of streaming, progress and resume."""


def register(commands: Commands) -> None:
    """Add ``embed`` to ``commands``."""
    parser = add_command(
        commands,
        "embed",
        "Embed a file of texts, streaming, into .npy, .jsonl or .parquet.",
        EXAMPLES,
        run,
    )
    parser.add_argument(
        "input",
        help="texts: .txt (one a line; '-' for standard input), .jsonl, .csv, .tsv or .parquet",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="vectors: .npy, .jsonl (id, text, embedding) or .parquet (id, text, embedding)",
    )
    parser.add_argument(
        "--column", default=None, help='the text column of .jsonl/.csv/.parquet (default: "text")'
    )
    parser.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        default=None,
        help="read INPUT as this format (default: by its suffix; other suffixes: txt)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=CHUNK_SIZE,
        metavar="N",
        help=f"rows read, embedded and written at a time (default: {CHUNK_SIZE})",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run's OUTPUT.partial"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUTPUT (and, without --resume, discard OUTPUT.partial)",
    )
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress", action="store_true", help="show the progress bar (default: on a terminal)"
    )
    shown.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    add_model_options(parser)


@contextlib.contextmanager
def _quiet_truncation() -> Iterator[None]:
    """Drop the encoder's per-call truncation warnings; the command reports a total once."""

    def keep(record: logging.LogRecord) -> bool:
        return "were truncated" not in record.getMessage()

    logger = logging.getLogger("localembed")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def run(args: argparse.Namespace) -> int:
    """Run ``localembed embed``."""
    output = Path(args.output)
    writer_type = OUTPUTS.get(output.suffix.lower())
    if writer_type is None:
        msg = f"output must end in {', '.join(OUTPUTS)}, got {output.name}"
        raise UsageError(msg)
    fmt = args.input_format or INPUT_SUFFIXES.get(Path(args.input).suffix.lower(), "txt")
    if fmt == "txt" and args.column is not None:
        msg = "--column applies to .jsonl, .csv, .tsv and .parquet inputs (.txt: a text a line)"
        raise UsageError(msg)
    if args.chunk_size < 1:
        msg = "--chunk-size must be at least 1"
        raise UsageError(msg)
    column = args.column or "text"
    config = config_from_args(args)
    source = open_source(args.input, fmt, column, args.chunk_size)
    # Read the first row before loading the model: a missing column or a bad file fails fast.
    first = list(itertools.islice(source.rows, 1))
    source.rows = itertools.chain(first, source.rows)
    encoder = config.load_encoder()
    instruction = instruction_for(encoder, args.kind)
    settings = json.loads(
        json.dumps(
            {
                "input_format": fmt,
                "column": column,
                "kind": args.kind,
                "chunk_size": args.chunk_size,
                "dimension": encoder.dimension,
                "encoder": config.encoder_options(),
            }
        )
    )
    described = encoder.describe()
    metadata = {
        "model": encoder.source.name,
        "kind": args.kind,
        "instruction": instruction,
        **{key: described[key] for key in ("pooling", "normalize", "max_length", "dtype")},
    }
    writer = writer_type(output, encoder.dimension, metadata)
    state = _check_outputs(writer, args, settings)
    digest = TextDigest()
    if state is not None:
        skipped = list(itertools.islice(source.rows, state["rows"]))
        digest.update(skipped)
        if len(skipped) < state["rows"] or digest.hexdigest() != state["digest"]:
            msg = (
                f"the input's first {state['rows']} texts are not those in "
                f"{writer.partial.name}: the input changed; pass --overwrite to start again"
            )
            raise ValueError(msg)
    return _embed_chunks(args, source, encoder, instruction, writer, state, settings, digest)


def _check_outputs(
    writer: PartialOutput, args: argparse.Namespace, settings: dict[str, Any]
) -> dict[str, Any] | None:
    """The state to resume from, or None to start; refuses to replace work by accident."""
    if writer.output.exists() and not args.overwrite:
        msg = f"{writer.output} exists; pass --overwrite to replace it"
        raise ValueError(msg)
    if not writer.exists():
        return None
    if not args.resume:
        if args.overwrite:
            writer.discard()
            return None
        msg = (
            f"{writer.partial} holds rows of an interrupted run: pass --resume to continue it, "
            f"or --overwrite to start again"
        )
        raise ValueError(msg)
    if not writer.state_path.exists():
        # Killed before its first chunk was committed: there is nothing to keep.
        writer.discard()
        return None
    state = writer.read_state()
    changed = differences(state.get("settings"), settings)
    if changed:
        msg = (
            f"{writer.partial.name} was written with other settings ({'; '.join(changed)}); "
            f"resume with the same options, or pass --overwrite to start again"
        )
        raise ValueError(msg)
    return state


def _embed_chunks(
    args: argparse.Namespace,
    source: Source,
    encoder: LocalEncoder,
    instruction: str,
    writer: PartialOutput,
    state: dict[str, Any] | None,
    settings: dict[str, Any],
    digest: TextDigest,
) -> int:
    from tqdm import tqdm

    start = 0 if state is None else int(state["rows"])
    show = not args.quiet and (args.progress or sys.stderr.isatty())
    progress = tqdm(
        total=source.count() if show else None,
        initial=start,
        desc="embedding",
        unit="row",
        file=sys.stderr,
        disable=not show,
        dynamic_ncols=True,
    )
    done, tokens, truncated, seconds = start, 0, 0, 0.0
    try:
        if state is None:
            writer.begin()
        else:
            writer.reopen(state)
        with progress, _quiet_truncation():
            for chunk in chunks(source.rows, args.chunk_size):
                began = time.perf_counter()
                # Tokenizing again only to count tokens costs < 0.5% of embedding on the CPU
                # (measured: 0.04 s against 10.7 s for 1,024 STS sentences on all-MiniLM-L6-v2).
                tokenized = encoder.tokenize(chunk, instruction)
                vectors = encoder.encode(chunk, instruction)
                seconds += time.perf_counter() - began
                tokens += sum(len(ids) for ids in tokenized.ids)
                truncated += tokenized.truncated
                writer.append(done, chunk, vectors)
                digest.update(chunk)
                done += len(chunk)
                writer.commit(done, digest.hexdigest(), settings)
                progress.set_postfix_str(f"{tokens / max(seconds, 1e-9):,.0f} tokens/s", False)
                progress.update(len(chunk))
            writer.finish()
    except BaseException as error:
        writer.close()
        rows = max(writer.rows, start)
        if state is not None or rows:
            kept = (
                f"{writer.partial} keeps the first {rows} rows: run the same command "
                f"with --resume to continue (or --overwrite to start again)"
            )
        else:
            writer.discard()
            kept = "no output was written"
        if isinstance(error, KeyboardInterrupt):
            print(f"localembed: interrupted after {rows} rows; {kept}", file=sys.stderr)
            raise Interrupted from None
        if isinstance(error, HANDLED):
            msg = f"{error_message(error)}; {kept}"
            raise CommandError(msg) from error
        raise
    if not args.quiet:
        resumed = f"resumed at row {start}: " if start else ""
        rate = f"{tokens / seconds:,.0f} tokens/s" if seconds else "no tokens"
        print(
            f"{resumed}embedded {done - start} row{'s' * (done - start != 1)} ({tokens:,} "
            f"tokens, {rate}) in "
            f"{seconds:.1f} s; wrote {writer.output}: {done} x {encoder.dimension} float32",
            file=sys.stderr,
        )
        if truncated:
            print(
                f"note: {truncated} texts were longer than {encoder.settings.max_length} tokens "
                f"and were truncated (--long-text chunk embeds them whole)",
                file=sys.stderr,
            )
    return 0
