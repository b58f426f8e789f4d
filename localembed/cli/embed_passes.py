"""``localembed embed``'s passes over the input before it embeds: check, CDE sample, ranges.

Each reads the input file again from the start (standard input, which cannot be read twice,
is refused for the passes that need it by :meth:`~localembed.cli.embed_job.EmbedJob.from_args`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from localembed.cli.corpus import chunks
from localembed.errors import InputError
from localembed.precision import CALIBRATION_ROWS_WARNING, check_ranges

if TYPE_CHECKING:
    from localembed.cli.embed_job import EmbedJob
    from localembed.corpus_context import CorpusContext
    from localembed.encoder import LocalEncoder

logger = logging.getLogger("localembed")


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


def sample_context(job: EmbedJob, encoder: LocalEncoder) -> CorpusContext:
    """The context of ``job.build_context`` rows drawn from the input, streamed twice.

    The same as ``encoder.build_context(all_texts, size=N, seed=S)``: the first pass counts
    the rows, the seeded draw picks row numbers, the second pass keeps those rows' texts.
    """
    from localembed.corpus_context import ContextError, sample_indices

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


def calibration_ranges(job: EmbedJob, encoder: LocalEncoder, instruction: str) -> np.ndarray | None:
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
