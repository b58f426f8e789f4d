"""Finish stage: pooled float rows -> the output, in one place for every path.

:class:`Finish` holds what a loaded encoder's rows need after pooling: the non-finite check
(an error naming the rows, never a silent NaN), the ``truncate_dim`` cut (Matryoshka: cut,
then normalized again when normalizing) and the output ``precision``
(:func:`localembed.precision.quantize`). The encoder, the micro-batcher and the server finish
rows through it, each exactly once.

Example:
    >>> import numpy as np
    >>> finish = Finish(cut=1, normalize=True, dtype="float32")
    >>> finish(np.array([[3.0, 4.0]], dtype=np.float32))
    array([[1.]], dtype=float32)

"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from localembed.faults import NonFiniteEmbeddingError
from localembed.precision import quantize

if TYPE_CHECKING:
    from localembed.precision import Precision

__all__ = ["Finish", "check_finite", "unit_rows"]


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (a zero row stays zero), in float32.

    Example:
        >>> unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]

    """
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def check_finite(vectors: np.ndarray, dtype: str, what: str = "texts") -> np.ndarray:
    """``vectors`` unchanged, or :class:`NonFiniteEmbeddingError` naming the bad rows."""
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        raise NonFiniteEmbeddingError(bad, count=len(vectors), dtype=dtype, what=what)
    return vectors


@dataclass(frozen=True)
class Finish:
    """How one encoder's pooled rows become its output."""

    cut: int | None
    """``truncate_dim``: keep this many leading dimensions (None: all)."""
    normalize: bool
    """Normalize again after a cut (the encoder normalizes its vectors)."""
    dtype: str
    """The model's dtype name, for the non-finite error's advice."""

    def __call__(
        self,
        vectors: np.ndarray,
        precision: Precision = "float32",
        ranges: np.ndarray | None = None,
        *,
        dimensions: int | None = None,
    ) -> np.ndarray:
        """Check, cut and quantize ``vectors`` (float32, one row per text).

        ``dimensions`` cuts to that many instead of :attr:`cut` (the server's per-request
        ``dimensions``). Vectors already cut pass through unchanged.

        Raises:
            NonFiniteEmbeddingError: some row is NaN or infinite (names the rows).
        """
        vectors = check_finite(vectors, self.dtype)
        cut = self.cut if dimensions is None else dimensions
        if cut is not None and cut < vectors.shape[1]:
            vectors = vectors[:, :cut]
            vectors = (
                unit_rows(vectors)
                if self.normalize
                else np.ascontiguousarray(vectors, dtype=np.float32)
            )
        if precision == "float32":
            return vectors
        return quantize(vectors, precision, ranges)
