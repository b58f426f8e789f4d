"""``localembed embed``: a file of texts to vectors, streaming and resumable.

The command is one :class:`EmbedJob` (a validated spec built from the arguments) run by
:func:`run_job`. It reads the input in chunks of ``chunk_size`` rows, embeds each chunk with
the shared encoder and appends it to ``OUTPUT.partial``; after each chunk the data is flushed
to disk and ``OUTPUT.partial.json`` records the rows written (with a digest of their texts,
ids and kept values, and the job's settings). ``OUTPUT`` appears, by rename, only when every
row is written, so it is never half-written; an interrupted run leaves the partial output,
which ``--resume`` continues: it re-reads the input, checks that the rows already written are
the same rows under the same settings, skips them and embeds the rest in the same chunks, so
the final file is the same as that of an uninterrupted run.

Every check of the input's columns and of the output's place (suffix, folder, links, an
existing file or partial output) happens before the model loads.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from localembed.cli.common import (
    HANDLED,
    CommandError,
    Interrupted,
    UsageError,
    add_cache_options,
    add_command,
    add_model_options,
    config_from_args,
    error_message,
    instruction_for,
)
from localembed.cli.corpus import (
    INPUT_FORMATS,
    INPUT_SUFFIXES,
    Row,
    Source,
    TextDigest,
    chunks,
    differences,
    open_source,
)
from localembed.cli.outputs import OUTPUTS, PartialOutput, check_output, open_for_writing
from localembed.config import EncoderConfig
from localembed.errors import InputError
from localembed.faults import NonFiniteEmbeddingError
from localembed.precision import (
    CALIBRATION_ROWS_WARNING,
    PRECISIONS,
    Precision,
    check_ranges,
    quantize,
)

if TYPE_CHECKING:
    from tqdm import tqdm

    from localembed.cli.common import Commands
    from localembed.contextual import CorpusContext
    from localembed.encoder import LocalEncoder

logger = logging.getLogger("localembed")

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

CHUNK_SIZE = 1024
"""Rows per chunk: the unit of streaming, progress and resume."""

REFRESH_SECONDS = 0.5
"""The progress bar is redrawn at least this often, also while a chunk is being embedded."""

InputFormat = Literal["txt", "jsonl", "csv", "tsv", "parquet"]


class EmbedJob(BaseModel):
    """One ``localembed embed`` run: what to read, how to embed it, where to write it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str
    """The input file; ``-`` for standard input."""
    output: Path
    """The output file: .npy, .jsonl or .parquet."""
    input_format: InputFormat
    """How to read the input (from its suffix unless named)."""
    column: str = "text"
    """The text column of a jsonl, csv, tsv or parquet input."""
    id_column: str | None = None
    """A column whose values become the output's ``id`` (default: the row number)."""
    keep_columns: tuple[str, ...] = ()
    """Input columns copied to a .jsonl or .parquet output."""
    chunk_size: int = Field(default=CHUNK_SIZE, ge=1)
    """Rows read, embedded and written at a time."""
    kind: Literal["document", "query"] = "document"
    """Embed the texts as documents or as queries (picks the instruction)."""
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    """The encoder's settings."""
    resume: bool = False
    """Continue the partial output of an interrupted run."""
    overwrite: bool = False
    """Replace an existing output (and, without ``resume``, an earlier partial output)."""
    progress: bool = False
    """Show the progress bar."""
    precision: Precision = "float32"
    """The output precision (see :mod:`localembed.precision`)."""
    ranges: Path | None = None
    """int8/uint8: a .npy of (2, dimension) calibration ranges; None: from the whole input,
    computed by a first pass over it (saved as ``OUTPUT.ranges.npy`` either way)."""
    build_context: int | None = Field(default=None, ge=1)
    """CDE models: draw this many input rows (seeded) and build the context from them, saved
    as ``OUTPUT.context.safetensors``; None: use ``encoder.context`` (``--context FILE``)."""
    context_seed: int = 0
    """The seed of ``build_context``'s sample."""
    oversample_context: bool = False
    """``build_context`` from an input with fewer rows repeats rows (else an error)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EmbedJob:
        """The job of parsed ``embed`` arguments; a wrong combination is a UsageError."""
        fmt = args.input_format or INPUT_SUFFIXES.get(Path(args.input).suffix.lower(), "txt")
        keep = tuple(key.strip() for key in (args.keep_columns or "").split(",") if key.strip())
        output = Path(args.output)
        problem = None
        if output.suffix.lower() not in OUTPUTS:
            problem = f"output must end in {', '.join(OUTPUTS)}, got {output.name}"
        elif fmt == "txt" and (args.column or args.id_column or keep):
            problem = (
                "--column, --id-column and --keep-columns apply to .jsonl, .csv, .tsv and "
                ".parquet inputs (.txt: a text a line)"
            )
        elif (args.id_column or keep) and not OUTPUTS[output.suffix.lower()].carries:
            problem = "--id-column and --keep-columns need a .jsonl or .parquet output"
        elif reserved := sorted({"id", "text", "embedding"} & set(keep)):
            problem = f"--keep-columns: {reserved[0]!r} is an output column of its own"
        elif len(set(keep)) < len(keep) or (args.id_column in keep):
            problem = "--keep-columns: each column once (and not the --id-column)"
        elif args.chunk_size < 1:
            problem = "--chunk-size must be at least 1"
        elif args.ranges is not None and args.precision not in ("int8", "uint8"):
            problem = "--ranges applies to --precision int8 or uint8"
        elif args.build_context is not None and args.context is not None:
            problem = "--build-context N builds a context: leave out --context FILE"
        elif args.build_context is not None and args.build_context < 1:
            problem = "--build-context N needs N >= 1 (documents in the context's sample)"
        elif args.build_context is not None and args.input == "-":
            problem = (
                "--build-context reads the input twice (sample, then embed), which standard "
                "input cannot give: build the context from a file, or pass --context FILE"
            )
        elif args.precision in ("int8", "uint8") and args.ranges is None and args.input == "-":
            problem = (
                f"--precision {args.precision} computes its ranges in a first pass over the "
                "input, which standard input cannot give: pass --ranges FILE"
            )
        if problem is not None:
            raise UsageError(problem)
        show = not args.quiet and (args.progress or sys.stderr.isatty())
        return cls.model_validate(
            {
                "input": args.input,
                "output": output,
                "input_format": fmt,
                "column": args.column or "text",
                "id_column": args.id_column,
                "keep_columns": keep,
                "chunk_size": args.chunk_size,
                "kind": args.kind,
                "encoder": config_from_args(args),
                "resume": args.resume,
                "overwrite": args.overwrite,
                "progress": show,
                "precision": args.precision,
                "ranges": args.ranges,
                "build_context": args.build_context,
                "context_seed": args.context_seed,
                "oversample_context": args.oversample_context,
            }
        )

    def settings(
        self,
        dimension: int,
        ranges: np.ndarray | None = None,
        context: CorpusContext | None = None,
    ) -> dict[str, Any]:
        """What a resumed run must share with the run it continues (as JSON data).

        A CDE context is recorded by its digest (its vectors and model), not its path: a
        resumed run with another context is refused, a moved file is not.
        """
        encoder = self.encoder.encoder_options()
        for name in ("cache", "cache_max_bytes"):  # change no vector: a resumed run may differ
            encoder.pop(name, None)
        encoder["context"] = None if context is None else f"sha256:{context.digest()}"
        settings = {
            "input_format": self.input_format,
            "column": self.column,
            "id_column": self.id_column,
            "keep_columns": list(self.keep_columns),
            "kind": self.kind,
            "chunk_size": self.chunk_size,
            "dimension": dimension,
            "encoder": encoder,
            "precision": self.precision,
            "ranges": None if ranges is None else ranges.tolist(),
        }
        data: dict[str, Any] = json.loads(json.dumps(settings))
        return data

    def open_source(self) -> Source:
        """The input, opened; its first row is read (a bad file or column fails now)."""
        source = open_source(
            self.input,
            self.input_format,
            self.column,
            id_column=self.id_column,
            keep=self.keep_columns,
            batch_rows=self.chunk_size,
        )
        first = list(itertools.islice(source.rows, 1))
        source.rows = itertools.chain(first, source.rows)
        return source


@dataclass(frozen=True)
class JobResult:
    """What a finished job did."""

    output: Path
    rows: int
    """Rows in the output."""
    resumed_at: int
    """Rows an earlier run had written (0: a fresh start)."""
    dimension: int
    seconds: float
    """Time spent embedding (not reading or writing)."""
    cache: dict[str, int] = field(default_factory=dict)
    """The embedding cache's counters (``encoder.cache_stats()``; empty without a cache)."""


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


def run_job(job: EmbedJob) -> JobResult:
    """Run ``job``: check, load, embed chunk by chunk, and rename the finished output."""
    check_output(job.output, overwrite=job.overwrite, resume=job.resume)
    check_input(job)
    source = job.open_source()
    from localembed.encoder import get_encoder

    encoder = get_encoder(job.encoder)
    if job.build_context is not None:
        built = _build_context(job, encoder)
        built.save(context_path(job.output))
        encoder = encoder.with_context(built)
    instruction = instruction_for(encoder, job.kind)
    cached = encoder.cache_stats()
    described = encoder.describe()
    metadata = {
        "model": encoder.source.name,
        "kind": job.kind,
        "instruction": instruction,
        **{key: described[key] for key in ("pooling", "normalize", "max_length", "dtype")},
    }
    ranges = _ranges(job, encoder, instruction)
    if ranges is not None:
        metadata["ranges"] = ranges.tolist()
    metadata["precision"] = job.precision
    if encoder.context is not None:
        metadata["context"] = {
            "sha256": encoder.context.digest(),
            "size": encoder.context.size,
            "seed": encoder.context.seed,
            "file": encoder.context.path,
        }
    shape = quantize(np.zeros((0, encoder.dimension), np.float32), job.precision)
    width = int(shape.shape[1])
    writer = OUTPUTS[job.output.suffix.lower()](
        job.output,
        width,
        metadata,
        keep=job.keep_columns,
        types=source.types,
        dtype=shape.dtype.name,
    )
    settings = job.settings(encoder.dimension, ranges, encoder.context)
    options: dict[str, Any] = {"precision": job.precision, "ranges": ranges}
    state = _resume_state(job, writer, settings)
    digest = TextDigest()
    if state is not None:
        skipped = list(itertools.islice(source.rows, state["rows"]))
        digest.update(skipped)
        if len(skipped) < state["rows"] or digest.hexdigest() != state["digest"]:
            msg = (
                f"the input's first {state['rows']} rows are not those in "
                f"{writer.partial.name}: the input changed; pass --overwrite to start again"
            )
            raise InputError(msg)
    start = 0 if state is None else int(state["rows"])
    seconds = 0.0
    try:
        if state is None:
            writer.begin()
        else:
            writer.reopen(state)
        with _progress(job, source, start) as progress:
            done = start
            for chunk in chunks(source.rows, job.chunk_size):
                began = time.perf_counter()
                try:
                    vectors = encoder.encode([row.text for row in chunk], instruction, **options)
                except NonFiniteEmbeddingError as error:
                    # Keep the rows before the first bad one, then name it.
                    good = chunk[: error.rows[0]]
                    if good:
                        kept = encoder.encode([row.text for row in good], instruction, **options)
                        writer.append(done, good, kept)
                        digest.update(good)
                        done += len(good)
                        writer.commit(done, digest.hexdigest(), settings)
                    raise InputError(_non_finite_message(source, chunk, done, error)) from None
                seconds += time.perf_counter() - began
                writer.append(done, chunk, vectors)
                digest.update(chunk)
                done += len(chunk)
                writer.commit(done, digest.hexdigest(), settings)
                progress.update(len(chunk))
        if ranges is not None:
            with open_for_writing(ranges_path(job.output)) as file:
                np.save(file, ranges)
        writer.finish()
    except BaseException as error:
        _report_failure(error, writer, state is not None, start)
        raise
    return JobResult(job.output, done, start, width, seconds, _cache_since(encoder, cached))


def _cache_since(encoder: LocalEncoder, before: dict[str, int]) -> dict[str, int]:
    """The cache's counters for this job: this run's hits, misses...; the store as it is."""
    now = encoder.cache_stats()
    shared = ("entries", "bytes", "evictions")
    return {name: value - (0 if name in shared else before[name]) for name, value in now.items()}


def cache_summary(stats: dict[str, int]) -> str:
    """The summary line's cache part ("" without a cache).

    Example:
        >>> cache_summary({"hits": 9, "misses": 1, "computed": 1, "corrupt": 0, "evictions": 0,
        ...                "entries": 10, "bytes": 15640, "writes": 1})
        '; cache: 9 hits, 1 misses (1 computed), 0 corrupt, 10 entries, 15640 bytes, 0 evictions'

    """
    if not stats:
        return ""
    return (
        f"; cache: {stats['hits']} hits, {stats['misses']} misses ({stats['computed']} "
        f"computed), {stats['corrupt']} corrupt, {stats['entries']} entries, "
        f"{stats['bytes']} bytes, {stats['evictions']} evictions"
    )


def check_input(job: EmbedJob) -> None:
    """Read a file input once before the model loads: its errors come first, and cheaply.

    A byte that is not UTF-8, a null id or text, a lone surrogate, a missing column, and
    int8/uint8 calibration from fewer than two rows are named here, not after a model load
    (standard input, which cannot be read twice, is checked as it streams).
    """
    if job.input == "-":
        return
    count = sum(1 for _ in job.open_source().rows)
    if job.precision in ("int8", "uint8") and job.ranges is None and count < 2:
        raise InputError(_too_few_rows(job, count))


def _too_few_rows(job: EmbedJob, count: int) -> str:
    return (
        f"--precision {job.precision} needs calibration ranges from at least 2 rows, the "
        f"input has {count}: pass --ranges FILE (e.g. a corpus's OUTPUT.ranges.npy)"
    )


def context_path(output: Path) -> Path:
    """Where ``--build-context`` saves the CDE context: ``OUTPUT.context.safetensors``."""
    return output.with_name(output.name + ".context.safetensors")


def _build_context(job: EmbedJob, encoder: LocalEncoder) -> CorpusContext:
    """The context of ``job.build_context`` rows drawn from the input, streamed twice.

    The same as ``encoder.build_context(all_texts, size=N, seed=S)``: the first pass counts
    the rows, the seeded draw picks row numbers, the second pass keeps those rows' texts.
    """
    from localembed.contextual import ContextError, sample_indices

    assert job.build_context is not None
    count = sum(len(chunk) for chunk in chunks(job.open_source().rows, job.chunk_size))
    limit = encoder.context_size
    if limit is None:
        msg = f"--build-context: {encoder.source.name} is not a contextual (CDE) model"
        raise ContextError(msg)
    if job.build_context > limit:
        msg = (
            f"--build-context {job.build_context}: {encoder.source.name} reads at most "
            f"{limit} context documents (its transductive_corpus_size)"
        )
        raise ContextError(msg)
    indices = sample_indices(
        count, job.build_context, job.context_seed, oversample=job.oversample_context
    )
    wanted = set(indices)
    texts: dict[int, str] = {}
    for row_number, row in enumerate(job.open_source().rows):
        if row_number in wanted:
            texts[row_number] = row.text
    logger.info("building the CDE context from %d of %d rows", len(indices), count)
    return encoder.context_of(
        [texts[i] for i in indices],
        seed=job.context_seed,
        corpus_size=count,
        indices=indices,
        show_progress=job.progress,
    )


def ranges_path(output: Path) -> Path:
    """Where int8/uint8 calibration ranges are saved: ``OUTPUT.ranges.npy``."""
    return output.with_name(output.name + ".ranges.npy")


def _ranges(job: EmbedJob, encoder: LocalEncoder, instruction: str) -> np.ndarray | None:
    """int8/uint8 calibration ranges: ``--ranges`` checked, or min/max over the whole input.

    The whole-input ranges take a first pass (the vectors' per-dimension minima and maxima,
    streamed), so every row is quantized on one scale, the same as
    ``encoder.encode(all_texts, precision=...)``.
    """
    if job.precision not in ("int8", "uint8"):
        return None
    shape = (2, encoder.dimension)
    if job.ranges is not None:
        try:
            loaded = np.load(job.ranges, allow_pickle=False)
        except (OSError, ValueError) as error:
            msg = f"--ranges {job.ranges}: not a readable .npy file ({error})"
            raise InputError(msg) from None
        if loaded.dtype.kind not in "fiu":
            msg = f"--ranges {job.ranges}: need a {shape} array of numbers, got {loaded.dtype}"
            raise InputError(msg)
        try:
            return check_ranges(loaded, encoder.dimension)
        except ValueError as error:
            msg = f"--ranges {job.ranges}: {error}"
            raise InputError(msg) from None
    logger.info("computing %s calibration ranges over the input (a first pass)", job.precision)
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    count = 0
    for chunk in chunks(job.open_source().rows, job.chunk_size):
        vectors = encoder.encode([row.text for row in chunk], instruction)
        low = vectors.min(axis=0) if low is None else np.minimum(low, vectors.min(axis=0))
        high = vectors.max(axis=0) if high is None else np.maximum(high, vectors.max(axis=0))
        count += len(chunk)
    if low is None or high is None or count < 2:
        raise InputError(_too_few_rows(job, count))
    if count < CALIBRATION_ROWS_WARNING:
        logger.warning(
            "int8/uint8 calibration ranges from only %d rows; ranges from a larger corpus "
            "(%d or more, --ranges FILE) quantize more stably",
            count,
            CALIBRATION_ROWS_WARNING,
        )
    return np.vstack((low, high)).astype(np.float32)


def _non_finite_message(
    source: Source, chunk: list[Row], done: int, error: NonFiniteEmbeddingError
) -> str:
    """Name the first input row whose vector is NaN or infinite (its line where there is one)."""
    first = chunk[error.rows[0]]
    name = source.name if source.name == "stdin" else Path(source.name).name
    where = f"{name} line {first.line}" if first.line is not None else f"{name} row {done}"
    others = len(error.rows) - 1
    more = f" (and {others} more row(s) of the same chunk)" if others else ""
    return (
        f"{where}: row {done} gave NaN or infinite values{more}; the model overflows (with "
        f"--dtype float16, use float32) or its weights are damaged"
    )


def _resume_state(
    job: EmbedJob, writer: PartialOutput, settings: dict[str, Any]
) -> dict[str, Any] | None:
    """The state to resume from, or None to start (an earlier partial output is discarded)."""
    if not writer.exists():
        return None
    if not job.resume or not writer.state_path.exists():
        # --overwrite, or killed before its first chunk was committed: nothing to keep.
        writer.discard()
        return None
    state = writer.read_state()
    changed = differences(state.get("settings"), settings)
    if changed:
        msg = (
            f"{writer.partial.name} was written with other settings ({'; '.join(changed)}); "
            f"resume with the same options, or pass --overwrite to start again"
        )
        raise InputError(msg)
    return state


def _report_failure(error: BaseException, writer: PartialOutput, resumed: bool, start: int) -> None:
    """Say what an interrupted or failed run kept; raise the CLI's error for ``error``."""
    writer.close()
    # The state file is the truth: an interrupt can land after the state file names a chunk
    # and before the writer's own count does.
    committed = writer.read_state()["rows"] if writer.state_path.exists() else 0
    rows = max(writer.rows, committed, start)
    if resumed or rows:
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


@contextlib.contextmanager
def _progress(job: EmbedJob, source: Source, start: int) -> Iterator[tqdm]:
    """The progress bar (rows, total, rate, ETA), redrawn every :data:`REFRESH_SECONDS`.

    Rows advance a chunk at a time; in between, a thread redraws the bar so its time and
    rate stay current. The encoder's log messages are written above the bar.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    total = source.count() if job.progress else None
    bar = tqdm(
        total=total,
        initial=start,
        desc="embedding",
        unit="row",
        file=sys.stderr,
        disable=not job.progress,
        dynamic_ncols=True,
        mininterval=REFRESH_SECONDS,
        smoothing=0.1,
    )
    stop = threading.Event()

    def redraw() -> None:
        while not stop.wait(REFRESH_SECONDS):
            bar.refresh()

    ticker = threading.Thread(target=redraw, name="localembed-progress", daemon=True)
    with bar, contextlib.ExitStack() as stack:
        if job.progress:
            stack.enter_context(logging_redirect_tqdm([logging.getLogger("localembed")]))
            ticker.start()
        try:
            yield bar
        finally:
            stop.set()
            if ticker.is_alive():
                ticker.join()
