"""bge-m3: dense, sparse (lexical weights) and multi-vector (ColBERT) outputs.

BAAI's bge-m3 is an XLM-RoBERTa encoder with two small heads saved next to its weights:
``sparse_linear.pt`` (``Linear(hidden, 1)``) and ``colbert_linear.pt`` (``Linear(hidden,
hidden)``). From ONE forward pass per batch this module computes every requested output,
with the arithmetic of FlagEmbedding 1.4.2 (``BGEM3FlagModel``), the reference:

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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from localembed.errors import InputError
from localembed.heads import HEAD_FILES, Outputs, batch_outputs, read_head

if TYPE_CHECKING:
    import torch

__all__ = [
    "COLBERT_HEAD_FILE",
    "HEAD_FILES",
    "SCORE_MODES",
    "SPARSE_HEAD_FILE",
    "M3Output",
    "batch_outputs",
    "colbert_score",
    "encode_m3",
    "hybrid_score",
    "lexical_matching_score",
    "lexical_tokens",
    "load_head",
    "read_head",
]

M3Output = Outputs
"""bge-m3's outputs: :class:`localembed.heads.Outputs` (its old name)."""
SPARSE_HEAD_FILE = HEAD_FILES["sparse"]
"""The sparse (lexical weight) head: ``Linear(hidden, 1)`` state dict."""
COLBERT_HEAD_FILE = HEAD_FILES["colbert"]
"""The multi-vector head: ``Linear(hidden, colbert_dim)`` state dict."""

SCORE_MODES = ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense")
"""Keys :func:`hybrid_score` can return (FlagEmbedding's ``compute_score`` keys)."""


class HeadOwner(Protocol):
    """Whatever holds a model's heads (an encoder)."""

    def load_head(self, name: str) -> torch.nn.Linear | None:
        """The head, loaded on first use; None when the backend keeps its own heads."""
        ...


def load_head(owner: HeadOwner, name: str) -> torch.nn.Linear:
    """The ``"sparse"`` or ``"colbert"`` head of ``owner``'s model, loaded on first use.

    Args:
        owner: a torch-backend encoder of a bge-m3 model.
        name: ``"sparse"`` or ``"colbert"``.

    Returns:
        The head as a ``torch.nn.Linear`` in eval mode, on the model's device and dtype.

    Raises:
        MissingModelFileError: the head's file is missing (the model is not a bge-m3 model).
        ModelFileError: the head file is truncated, corrupt, holds NaN/inf or does not fit.
        InputError: unknown ``name``, or the backend keeps its heads to itself.
    """
    head = owner.load_head(name)
    if head is None:
        msg = "backend='flagembedding' keeps its heads inside FlagEmbedding; use backend='torch'"
        raise InputError(msg)
    return head


class M3Encoder(Protocol):
    """Anything with :meth:`localembed.LocalEncoder.encode_m3`."""

    def encode_m3(
        self,
        texts: Sequence[str],
        *,
        dense: bool = True,
        sparse: bool = False,
        colbert: bool = False,
        instruction: str | None = None,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> Outputs:
        """bge-m3's outputs of ``texts``."""
        ...


def encode_m3(
    encoder: M3Encoder,
    texts: Sequence[str],
    *,
    dense: bool = True,
    sparse: bool = False,
    colbert: bool = False,
    instruction: str | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
) -> Outputs:
    """bge-m3's dense, sparse and ColBERT outputs of ``texts``: ``encoder.encode_m3(...)``."""
    return encoder.encode_m3(
        texts,
        dense=dense,
        sparse=sparse,
        colbert=colbert,
        instruction=instruction,
        batch_size=batch_size,
        show_progress=show_progress,
    )


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

    A mode is scored when both sides have that output; a combination when all its parts are.

    Args:
        queries: :func:`encode_m3` output of the queries.
        documents: :func:`encode_m3` output of the documents.
        weights: ``(dense, sparse, colbert)`` weights, like FlagEmbedding's
            ``weights_for_different_modes`` (default ``[1, 1, 1]``).

    Returns:
        ``{mode: (n_queries, n_documents) float64 array}``.

    Raises:
        ValueError: not three weights, weights that are not finite or sum to zero, or no
            output that both sides have.
    """
    if len(weights) != 3:
        msg = f"weights must be (dense, sparse, colbert), got {len(weights)} values"
        raise InputError(msg)
    w_dense, w_sparse, w_colbert = (float(w) for w in weights)
    if not all(math.isfinite(w) for w in (w_dense, w_sparse, w_colbert)):
        msg = f"weights must be finite numbers, got {tuple(weights)}"
        raise InputError(msg)
    if w_dense + w_sparse == 0 or w_dense + w_sparse + w_colbert == 0:
        msg = (
            f"weights {tuple(weights)} sum to zero (dense + sparse, or all three): the combined "
            f"scores would divide by zero; give the modes you combine a positive total weight"
        )
        raise InputError(msg)
    scores: dict[str, np.ndarray] = {}
    if queries.dense is not None and documents.dense is not None:
        scores["dense"] = (
            np.asarray(queries.dense, dtype=np.float32)
            @ np.asarray(documents.dense, dtype=np.float32).T
        ).astype(np.float64)
    if queries.sparse is not None and documents.sparse is not None:
        scores["sparse"] = np.asarray(
            [[lexical_matching_score(q, d) for d in documents.sparse] for q in queries.sparse],
            dtype=np.float64,
        ).reshape(len(queries.sparse), len(documents.sparse))
    if queries.colbert is not None and documents.colbert is not None:
        scores["colbert"] = _colbert_matrix(queries.colbert, documents.colbert)
    if not scores:
        msg = "queries and documents share no output (dense, sparse or colbert) to score"
        raise InputError(msg)
    if "dense" in scores and "sparse" in scores:
        scores["sparse+dense"] = (scores["sparse"] * w_sparse + scores["dense"] * w_dense) / (
            w_sparse + w_dense
        )
        if "colbert" in scores:
            scores["colbert+sparse+dense"] = (
                scores["colbert"] * w_colbert
                + scores["sparse"] * w_sparse
                + scores["dense"] * w_dense
            ) / (w_dense + w_sparse + w_colbert)
    return scores


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
