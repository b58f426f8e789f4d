"""Output precision: float vectors -> float16, int8/uint8 (scalar) or packed bits (binary).

The same numbers as sentence-transformers' ``quantize_embeddings`` (6.x), without importing it:

- ``"float32"`` (default) and ``"float16"``: a cast.
- ``"int8"`` / ``"uint8"``: each dimension's ``[min, max]`` range is cut into 255 equal steps
  and a value becomes its step index (``uint8``: 0..255; ``int8``: the same minus 128). The
  ranges are a (2, dimension) array: row 0 the minima, row 1 the maxima. When none are given
  they come from the embeddings themselves (:func:`calibration_ranges`), so quantize a corpus
  once, keep its ranges and pass them when quantizing later queries; a single vector without
  ranges is refused (one row has no range).
- ``"binary"`` / ``"ubinary"``: one bit per dimension (``value > 0``), packed 8 to a byte
  (``numpy.packbits``, first dimension in the highest bit); ``ubinary`` is the uint8 bytes,
  ``binary`` the same bytes minus 128 as int8. A vector of dimension d gives ceil(d / 8) bytes.
"""

from __future__ import annotations

import logging
from typing import Literal, get_args

import numpy as np

from localembed.errors import InputError

__all__ = [
    "CALIBRATION_ROWS_WARNING",
    "PRECISIONS",
    "Precision",
    "calibration_ranges",
    "check_precision",
    "check_ranges",
    "quantize",
]

logger = logging.getLogger("localembed")

Precision = Literal["float32", "float16", "int8", "uint8", "binary", "ubinary"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
"""The output precisions, float32 (the default) first."""

CALIBRATION_ROWS_WARNING = 100
"""Ranges computed from fewer rows than this are logged as a warning (as sentence-transformers)."""

_STEPS = 255


def check_precision(precision: str) -> Precision:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise ValueError naming them.

    Example:
        >>> check_precision("int4")
        Traceback (most recent call last):
        ...
        ValueError: unknown precision 'int4'; valid: float32, float16, int8, uint8, binary, ubinary

    """
    if precision not in PRECISIONS:
        msg = f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}"
        raise ValueError(msg)
    return precision  # type: ignore[return-value]


def check_ranges(ranges: object, dimension: int) -> np.ndarray:
    """``ranges`` as a float32 (2, ``dimension``) array, or InputError saying what is wrong.

    The one check of int8/uint8 calibration ranges, used by ``encode(ranges=)``, ``localembed
    embed --ranges`` and the server's ``ranges`` field: two rows (minima, maxima) of
    ``dimension`` finite float32 numbers, each minimum at most its maximum. NaN, infinite or
    out-of-float32 bounds would quantize every value to an arbitrary code, and a minimum
    above its maximum to a reversed scale.

    Example:
        >>> check_ranges([[0.0, float("nan")], [1.0, 1.0]], 2)
        Traceback (most recent call last):
        ...
        localembed.errors.InputError: ranges must be finite float32 numbers; dimension 1 has min nan, max 1.0

    """  # noqa: E501
    try:
        array = np.asarray(ranges, dtype=np.float64)
    except (TypeError, ValueError):
        msg = f"ranges must be a (2, {dimension}) array of numbers (minima, maxima per dimension)"
        raise InputError(msg) from None
    if array.shape != (2, dimension):
        msg = (
            f"ranges must have shape (2, {dimension}) (minima, maxima per dimension), "
            f"got {array.shape}"
        )
        raise InputError(msg)
    finite = np.isfinite(array) & (np.abs(array) <= np.finfo(np.float32).max)
    if not finite.all():
        column = int(np.flatnonzero(~finite.all(axis=0))[0])
        low, high = (float(value) for value in array[:, column])
        msg = (
            f"ranges must be finite float32 numbers; dimension {column} has "
            f"min {low!r}, max {high!r}"
        )
        raise InputError(msg)
    reversed_ = array[0] > array[1]
    if reversed_.any():
        column = int(np.flatnonzero(reversed_)[0])
        msg = (
            f"ranges[0] holds the minima and ranges[1] the maxima; dimension {column} has "
            f"min {float(array[0, column])!r} > max {float(array[1, column])!r}"
        )
        raise InputError(msg)
    return array.astype(np.float32)


def _as_matrix(embeddings: np.ndarray) -> np.ndarray:
    matrix = np.asarray(embeddings)
    if matrix.ndim != 2:
        msg = f"embeddings must be a 2-D (rows, dimension) array, got shape {matrix.shape}"
        raise ValueError(msg)
    if not np.issubdtype(matrix.dtype, np.floating):
        msg = f"embeddings to quantize must be float, got {matrix.dtype}"
        raise TypeError(msg)
    return matrix


def calibration_ranges(embeddings: np.ndarray) -> np.ndarray:
    """Per-dimension ``[min, max]`` of ``embeddings``: the (2, dimension) int8/uint8 ranges.

    Compute them once over a representative corpus (the more rows the better; fewer than
    :data:`CALIBRATION_ROWS_WARNING` logs a warning) and reuse them for every later
    :func:`quantize` call, so that documents and queries share one scale.

    Raises:
        ValueError: fewer than two rows (a single vector has no range).

    Example:
        >>> calibration_ranges(np.array([[0.0, -1.0], [0.5, 1.0]], dtype=np.float32))
        array([[ 0. , -1. ],
               [ 0.5,  1. ]], dtype=float32)

    """
    matrix = _as_matrix(embeddings)
    if matrix.shape[0] < 2:
        msg = (
            f"cannot compute int8/uint8 calibration ranges from {matrix.shape[0]} embedding(s); "
            f"pass ranges computed from a corpus (calibration_ranges(corpus_vectors))"
        )
        raise ValueError(msg)
    if matrix.shape[0] < CALIBRATION_ROWS_WARNING:
        logger.warning(
            "int8/uint8 calibration ranges from only %d embeddings; ranges from a larger "
            "corpus (%d or more) quantize more stably",
            matrix.shape[0],
            CALIBRATION_ROWS_WARNING,
        )
    return np.vstack((matrix.min(axis=0), matrix.max(axis=0))).astype(np.float32)


def quantize(
    embeddings: np.ndarray, precision: Precision | str, ranges: np.ndarray | None = None
) -> np.ndarray:
    """``embeddings`` (rows, dimension) in ``precision``; sentence-transformers' numbers.

    Args:
        embeddings: float vectors, one row each.
        precision: one of :data:`PRECISIONS`.
        ranges: for int8/uint8, the (2, dimension) array from :func:`calibration_ranges`;
            None: computed from ``embeddings`` (at least two rows). Ignored otherwise.

    Returns:
        float32/float16 (rows, dimension), int8/uint8 (rows, dimension), or for
        binary/ubinary int8/uint8 (rows, ceil(dimension / 8)).

    Raises:
        ValueError: an unknown precision, ranges that :func:`check_ranges` refuses, or
            int8/uint8 of a single row without ranges.

    Example:
        >>> vectors = np.array([[0.2, -0.4, 0.1], [-0.3, 0.5, 0.0]], dtype=np.float32)
        >>> quantize(vectors, "ubinary")
        array([[160],
               [ 64]], dtype=uint8)
        >>> quantize(vectors, "int8", ranges=np.array([[-1, -1, -1], [1, 1, 1]]))
        array([[ 25, -52,  12],
               [-39,  63,  -1]], dtype=int8)

    """
    precision = check_precision(precision)
    matrix = _as_matrix(embeddings)
    if precision == "float32":
        return matrix.astype(np.float32)
    if precision == "float16":
        return matrix.astype(np.float16)
    if precision in ("binary", "ubinary"):
        packed = np.packbits(matrix > 0, axis=-1)
        return (packed - 128).astype(np.int8) if precision == "binary" else packed
    dtype = np.int8 if precision == "int8" else np.uint8
    if matrix.shape[0] == 0:
        return np.zeros(matrix.shape, dtype=dtype)
    if ranges is None:
        ranges = calibration_ranges(matrix)
    ranges = check_ranges(ranges, matrix.shape[1])
    starts = ranges[0]
    steps = (ranges[1] - starts) / _STEPS
    steps = np.where(steps == 0, 1, steps)
    buckets: np.ndarray = np.clip(np.floor((matrix - starts) / steps), 0, _STEPS)
    if precision == "uint8":
        return buckets.astype(np.uint8)
    return (buckets - 128).astype(np.int8)
