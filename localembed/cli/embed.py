"""``localembed embed``: a file of texts to vectors, streaming and resumable.

The command is one :class:`~localembed.cli.embed_job.EmbedJob` (a validated spec built from
the arguments, :mod:`localembed.cli.embed_job`) run by
:func:`~localembed.cli.embed_run.run_job` (:mod:`localembed.cli.embed_run`). It reads the input
in chunks of ``chunk_size`` rows, embeds each chunk with the shared encoder and appends it to
``OUTPUT.partial``; after each chunk the data is flushed to disk and ``OUTPUT.partial.json``
records the rows written (with a digest of their texts, ids and kept values, and the job's
settings). ``OUTPUT`` appears, by rename, only when every row is written, so it is never
half-written; an interrupted run leaves the partial output, which ``--resume`` continues: it
re-reads the input, checks that the rows already written are the same rows under the same
settings, skips them and embeds the rest in the same chunks, so the final file is the same as
that of an uninterrupted run.

Every check of the input's columns and of the output's place (suffix, folder, links, an
existing file or partial output) happens before the model loads; the passes over the input
before the embedding pass (the check, a CDE context's sample, int8/uint8 calibration ranges)
are in :mod:`localembed.cli.embed_passes`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from localembed.cli.common import add_cache_options, add_command, add_model_options
from localembed.cli.corpus import INPUT_FORMATS
from localembed.cli.embed_job import CHUNK_SIZE, EmbedJob
from localembed.cli.embed_run import cache_summary, run_job
from localembed.precision import PRECISIONS

if TYPE_CHECKING:
    from localembed.cli.common import Commands

EXAMPLES = """\
examples:
  localembed embed docs.txt -o docs.npy                 # one text per line -> (n, dim) float32
  localembed embed docs.jsonl -o docs.parquet --column body --id-column doc_id
  localembed embed reviews.csv -o reviews.jsonl --column review --keep-columns stars,date
  localembed embed queries.txt -o queries.npy --kind query --instruction "query: "
  cat docs.tsv | localembed embed - -o docs.npy --input-format tsv --model ./my-model
  localembed embed big.parquet -o big.npy --resume      # continue an interrupted run
  localembed embed docs.txt -o docs.npy --precision int8  # + docs.npy.ranges.npy (calibration)
  localembed embed queries.txt -o q.npy --precision int8 --ranges docs.npy.ranges.npy
  localembed embed docs.txt -o docs.npy --model jxm/cde-small-v2 --trust-remote-code \
      --build-context 512                     # CDE: + docs.npy.context.safetensors
  localembed embed queries.txt -o q.npy --kind query --model jxm/cde-small-v2 \
      --trust-remote-code --context docs.npy.context.safetensors"""


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
        help="vectors: .npy, or .jsonl / .parquet (id, text, the kept columns, embedding)",
    )
    parser.add_argument(
        "--column",
        default=None,
        help='the text column of .jsonl/.csv/.tsv/.parquet inputs (default: "text")',
    )
    parser.add_argument(
        "--id-column",
        default=None,
        metavar="COLUMN",
        help="take each row's output id from this input column (default: the row number)",
    )
    parser.add_argument(
        "--keep-columns",
        default=None,
        metavar="A,B",
        help="copy these input columns (comma-separated) to a .jsonl or .parquet output",
    )
    parser.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        default=None,
        help="read INPUT as this format (default: by its suffix, .tsv/.tab are tsv; other "
        "suffixes: txt); tsv is split on tabs with no quoting",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=CHUNK_SIZE,
        metavar="N",
        help=f"rows read, embedded and written at a time (default: {CHUNK_SIZE})",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="output precision (sentence-transformers' quantize_embeddings): float16, int8/uint8 "
        "(with calibration ranges, saved as OUTPUT.ranges.npy), binary/ubinary (packed bits)",
    )
    parser.add_argument(
        "--ranges",
        type=Path,
        default=None,
        metavar="FILE",
        help="int8/uint8: a .npy of (2, dimension) ranges (e.g. a corpus's OUTPUT.ranges.npy); "
        "default: computed from the whole input in a first pass",
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
        "--progress",
        action="store_true",
        help="show the progress bar: rows, total, rate, ETA (default: on a terminal)",
    )
    shown.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    add_model_options(parser)
    add_cache_options(parser)
    cde = parser.add_argument_group("contextual document embeddings (CDE models)")
    cde.add_argument(
        "--build-context",
        type=int,
        metavar="N",
        default=None,
        help="draw N input rows (seeded) and build the model's corpus context from them, saved "
        "as OUTPUT.context.safetensors and used for every row (N: the model's "
        "transductive_corpus_size, 512 for jxm/cde-small-v1/v2)",
    )
    cde.add_argument(
        "--context-seed",
        type=int,
        metavar="S",
        default=0,
        help="--build-context: the sample's seed (default 0)",
    )
    cde.add_argument(
        "--oversample-context",
        action="store_true",
        help="--build-context: an input with fewer than N rows repeats rows (else an error)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``localembed embed``: build the job, run it, print the summary."""
    job = EmbedJob.from_args(args)
    result = run_job(job)
    if not args.quiet:
        added = result.rows - result.resumed_at
        resumed = f"resumed at row {result.resumed_at}: " if result.resumed_at else ""
        rate = f", {added / result.seconds:,.0f} rows/s" if result.seconds else ""
        print(
            f"{resumed}embedded {added} row{'s' * (added != 1)} in {result.seconds:.1f} s{rate}; "
            f"wrote {result.output}: {result.rows} x {result.dimension} {job.precision}"
            f"{cache_summary(result.cache)}",
            file=sys.stderr,
        )
    return 0
