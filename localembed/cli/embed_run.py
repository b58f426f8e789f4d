"""``localembed embed``'s run: the input streamed chunk by chunk into a resumable output.

:func:`run_job` reads the input in chunks of ``chunk_size`` rows, embeds each chunk with the
shared encoder and appends it to ``OUTPUT.partial``; after each chunk the data is flushed and
``OUTPUT.partial.json`` records the rows written (with a digest of their texts, ids and kept
values, and the job's settings). ``OUTPUT`` appears, by rename, only when every row is
written. ``--resume`` re-reads the input, checks that the rows already written are the same
rows under the same settings, skips them and embeds the rest in the same chunks.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from localembed.cli.common import HANDLED, CommandError, Interrupted, error_message, instruction_for
from localembed.cli.corpus import Row, Source, TextDigest, chunks, differences
from localembed.cli.embed_passes import (
    calibration_ranges,
    check_input,
    context_path,
    ranges_path,
    sample_context,
)
from localembed.cli.outputs import OUTPUTS, PartialOutput, check_output, open_for_writing
from localembed.errors import InputError
from localembed.faults import NonFiniteEmbeddingError
from localembed.precision import quantize

if TYPE_CHECKING:
    from tqdm import tqdm

    from localembed.cli.embed_job import EmbedJob
    from localembed.encoder import LocalEncoder

REFRESH_SECONDS = 0.5
"""The progress bar is redrawn at least this often, also while a chunk is being embedded."""


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


def run_job(job: EmbedJob) -> JobResult:
    """Run ``job``: check, load, embed chunk by chunk, and rename the finished output."""
    check_output(job.output, overwrite=job.overwrite, resume=job.resume)
    check_input(job)
    source = job.open_source()
    from localembed.encoder import get_encoder

    encoder = get_encoder(job.encoder)
    if job.build_context is not None:
        built = sample_context(job, encoder)
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
    ranges = calibration_ranges(job, encoder, instruction)
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
