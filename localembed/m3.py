"""bge-m3's scores: dense, sparse (lexical weights) and multi-vector (ColBERT), and combined.

BAAI's bge-m3 is an XLM-RoBERTa encoder with two small heads saved next to its weights:
``sparse_linear.pt`` (``Linear(hidden, 1)``) and ``colbert_linear.pt`` (``Linear(hidden,
hidden)``). bge-m3 itself is data: its preset row names its pooling, its head files and its
score table (:data:`localembed.presets.SCORES`). ``encoder.encode_m3`` computes every
requested output from ONE forward pass per batch (the heads: :mod:`localembed.heads`), with
the arithmetic of FlagEmbedding 1.4.2 (``BGEM3FlagModel``), the reference; this module scores
them (:func:`hybrid_score`, by the score table). The outputs:

- **dense**: the encoder's pooling (``cls`` for bge-m3), L2-normalized when ``normalize``
  is on: the vector :meth:`LocalEncoder.encode` returns.
- **sparse** (lexical weights): ``relu(sparse_linear(h))`` per token; the CLS, EOS, PAD and
  UNK tokens are dropped, as are zero weights; a token id that occurs several times keeps its
  largest weight. One ``{token_id: weight}`` dict per text.
- **colbert**: ``colbert_linear(h)`` for every real token after the first (CLS), the final
  ``</s>`` included, each L2-normalized when ``normalize`` is on. One (tokens - 1, dim) array
  per text.

Long texts follow the encoder's ``long_text`` setting. With ``"chunk"`` an over-long text is
embedded as overlapping windows and combined: dense is the token-count-weighted mean of the
windows' vectors, renormalized (the encoder's rule); sparse keeps each token id's largest
weight over all windows; colbert concatenates the windows' vectors in order (tokens in the
overlap between two windows appear once per window; MaxSim scores take a maximum over a
document's vectors, so the repeats do not change them).

Example:
    >>> from localembed import get_encoder
    >>> from localembed.m3 import hybrid_score
    >>> encoder = get_encoder(model="BAAI/bge-m3")  # doctest: +SKIP
    >>> outputs = {"sparse": True, "colbert": True}
    >>> docs = encoder.encode_m3(["Paris is in France."], **outputs)  # doctest: +SKIP
    >>> query = encoder.encode_m3(["Where is Paris?"], **outputs)  # doctest: +SKIP
    >>> hybrid_score(query, docs)["colbert+sparse+dense"]  # doctest: +SKIP

"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from localembed.errors import InputError
from localembed.heads import Outputs
from localembed.presets import SCORES

__all__ = [
    "SCORE_MODES",
    "WEIGHTED_OUTPUTS",
    "M3Output",
    "colbert_score",
    "hybrid_score",
    "lexical_matching_score",
    "lexical_tokens",
]

M3Output = Outputs
"""bge-m3's outputs (what ``LocalEncoder.encode_m3`` returns): :class:`localembed.heads.Outputs`."""

SCORE_MODES = tuple(SCORES)
"""Keys :func:`hybrid_score` can return (FlagEmbedding's ``compute_score`` keys): the score
table of the bge-m3 preset (:data:`localembed.presets.SCORES`)."""

WEIGHTED_OUTPUTS = ("dense", "sparse", "colbert")
"""The outputs that :func:`hybrid_score`'s ``weights`` weigh, in order."""


# -- scores ---------------------------------------------------------------------------------


def lexical_matching_score(weights_1: dict[Any, float], weights_2: dict[Any, float]) -> float:
    """The sparse score of two texts: sum of weight products over their shared tokens.

    FlagEmbedding's ``compute_lexical_matching_score`` for two dicts.

    Example:
        >>> lexical_matching_score({1: 0.5, 7: 0.2}, {7: 2.0, 9: 1.0})
        0.4

    """
    if len(weights_1) > len(weights_2):
        weights_1, weights_2 = weights_2, weights_1
    return float(
        sum(weight * weights_2[token] for token, weight in weights_1.items() if token in weights_2)
    )


def colbert_score(query: np.ndarray, document: np.ndarray) -> float:
    """The multi-vector (MaxSim) score: each query vector's best dot product, averaged.

    FlagEmbedding's ``colbert_score``: ``sum_i max_j q_i . d_j / len(query)``.

    Args:
        query: (query tokens, dim) ColBERT vectors.
        document: (document tokens, dim) ColBERT vectors.

    Returns:
        The score; 0.0 when either side has no vectors.
    """
    if len(query) == 0 or len(document) == 0:
        return 0.0
    similarities = np.asarray(query, dtype=np.float32) @ np.asarray(document, dtype=np.float32).T
    return float(similarities.max(axis=1).sum() / len(query))


def _colbert_matrix(queries: list[np.ndarray], documents: list[np.ndarray]) -> np.ndarray:
    scores = np.zeros((len(queries), len(documents)), dtype=np.float64)
    lengths = np.asarray([len(q) for q in queries])
    if not queries or not documents or not lengths.all():
        for i, query in enumerate(queries):
            for j, document in enumerate(documents):
                scores[i, j] = colbert_score(query, document)
        return scores
    stacked = np.concatenate(queries, axis=0).astype(np.float32, copy=False)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for j, document in enumerate(documents):
        if len(document) == 0:
            continue
        best = (stacked @ np.asarray(document, dtype=np.float32).T).max(axis=1)
        scores[:, j] = np.add.reduceat(best.astype(np.float64), starts) / lengths
    return scores


def hybrid_score(
    queries: M3Output,
    documents: M3Output,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
) -> dict[str, np.ndarray]:
    """Score every query against every document by dense, sparse and ColBERT, and combined.

    The scores and their combinations are FlagEmbedding's ``compute_score``:

    - ``"dense"``: dot product of the dense vectors (cosine when normalized);
    - ``"sparse"``: :func:`lexical_matching_score` of the lexical weights;
    - ``"colbert"``: :func:`colbert_score` (MaxSim) of the ColBERT vectors;
    - ``"sparse+dense"``: ``(w_sparse * sparse + w_dense * dense) / (w_sparse + w_dense)``;
    - ``"colbert+sparse+dense"``: the weighted mean of the three.

    The modes and what each combines are data: the bge-m3 preset's score table
    (:data:`localembed.presets.SCORES`). A mode is scored when both sides have that output; a
    combination when all its parts are.

    Args:
        queries: ``encoder.encode_m3`` output of the queries.
        documents: ``encoder.encode_m3`` output of the documents.
        weights: ``(dense, sparse, colbert)`` weights, like FlagEmbedding's
            ``weights_for_different_modes`` (default ``[1, 1, 1]``).

    Returns:
        ``{mode: (n_queries, n_documents) float64 array}``.

    Raises:
        ValueError: not three weights, weights that are not finite or sum to zero, or no
            output that both sides have.
    """
    if len(weights) != len(WEIGHTED_OUTPUTS):
        msg = f"weights must be (dense, sparse, colbert), got {len(weights)} values"
        raise InputError(msg)
    weight = {output: float(w) for output, w in zip(WEIGHTED_OUTPUTS, weights, strict=True)}
    if not all(math.isfinite(w) for w in weight.values()):
        msg = f"weights must be finite numbers, got {tuple(weights)}"
        raise InputError(msg)
    combined = {mode: parts for mode, parts in SCORES.items() if len(parts) > 1}
    totals = {mode: _total(weight, parts) for mode, parts in combined.items()}
    zero = [mode for mode, total in totals.items() if total == 0]
    if zero:
        msg = (
            f"weights {tuple(weights)} sum to zero over {', '.join(zero)}: the combined "
            f"scores would divide by zero; give the modes you combine a positive total weight"
        )
        raise InputError(msg)
    scores: dict[str, np.ndarray] = {}
    for mode, parts in SCORES.items():
        if len(parts) == 1:
            query_side, document_side = getattr(queries, parts[0]), getattr(documents, parts[0])
            if query_side is not None and document_side is not None:
                scores[mode] = _SCORERS[parts[0]](query_side, document_side)
    if not scores:
        msg = "queries and documents share no output (dense, sparse or colbert) to score"
        raise InputError(msg)
    for mode, parts in combined.items():
        if all(part in scores for part in parts):
            mean = scores[parts[0]] * weight[parts[0]]
            for part in parts[1:]:
                mean = mean + scores[part] * weight[part]
            scores[mode] = mean / totals[mode]
    return scores


def _total(weight: dict[str, float], parts: Sequence[str]) -> float:
    """The weights of ``parts``, summed in :data:`WEIGHTED_OUTPUTS` order."""
    present = [weight[output] for output in WEIGHTED_OUTPUTS if output in parts]
    total = present[0]
    for value in present[1:]:
        total = total + value
    return total


def _dense_matrix(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    return (
        np.asarray(queries, dtype=np.float32) @ np.asarray(documents, dtype=np.float32).T
    ).astype(np.float64)


def _sparse_matrix(
    queries: list[dict[int, float]], documents: list[dict[int, float]]
) -> np.ndarray:
    return np.asarray(
        [[lexical_matching_score(q, d) for d in documents] for q in queries],
        dtype=np.float64,
    ).reshape(len(queries), len(documents))


_SCORERS: dict[str, Callable[[Any, Any], np.ndarray]] = {
    "dense": _dense_matrix,
    "sparse": _sparse_matrix,
    "colbert": _colbert_matrix,
}
"""Each output's own score of every query against every document."""


def lexical_tokens(weights: dict[int, float], tokenizer: Any) -> dict[str, float]:
    """Lexical weights keyed by token text instead of token id, for reading.

    Each id is decoded on its own (``tokenizer.decode([id])``), as FlagEmbedding's
    ``convert_id_to_token`` does; when two ids decode to the same text, the larger weight
    is kept.

    Args:
        weights: ``{token_id: weight}`` (one item of :attr:`M3Output.sparse`).
        tokenizer: the model's tokenizer (``encoder.tokenizer``).

    Returns:
        ``{token_text: weight}``.
    """
    readable: dict[str, float] = {}
    for token_id, weight in weights.items():
        token = str(tokenizer.decode([int(token_id)]))
        if token not in readable or weight > readable[token]:
            readable[token] = weight
    return readable
