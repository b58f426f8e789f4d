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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from localembed.pooling import dense_head
from localembed.windows import combine_windows

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from localembed.batching import ForwardBatch
    from localembed.loading import ModelSource
    from localembed.windows import Tokenized

__all__ = [
    "COLBERT_HEAD_FILE",
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

SPARSE_HEAD_FILE = "sparse_linear.pt"
"""The sparse (lexical weight) head: ``Linear(hidden, 1)`` state dict."""
COLBERT_HEAD_FILE = "colbert_linear.pt"
"""The multi-vector head: ``Linear(hidden, colbert_dim)`` state dict."""
HEAD_FILES = {"sparse": SPARSE_HEAD_FILE, "colbert": COLBERT_HEAD_FILE}
"""Head name -> the file it is saved in, next to the model's weights."""

SCORE_MODES = ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense")
"""Keys :func:`hybrid_score` can return (FlagEmbedding's ``compute_score`` keys)."""


@dataclass(frozen=True)
class M3Output:
    """What :func:`encode_m3` returns; item i of each output belongs to text i.

    An output that was not requested is None.
    """

    dense: np.ndarray | None = None
    """(n, dim) float32 dense vectors."""
    sparse: list[dict[int, float]] | None = None
    """One ``{token_id: weight}`` dict per text (lexical weights; special tokens left out)."""
    colbert: list[np.ndarray] | None = None
    """One (tokens - 1, colbert_dim) float32 array per text (ColBERT vectors)."""

    def dense_array(self) -> np.ndarray:
        """The dense vectors.

        Returns:
            The (n, dim) float32 array.

        Raises:
            ValueError: dense vectors were not requested.
        """
        if self.dense is None:
            msg = "dense vectors were not requested; call encode_m3(..., dense=True)"
            raise ValueError(msg)
        return self.dense

    def combine(self, tokenized: Tokenized, *, normalize: bool) -> M3Output:
        """One result per text from per-window results (``long_text="chunk"``).

        Dense: the encoder's rule (token-count-weighted mean, then normalized if asked);
        sparse: each token id's largest weight; ColBERT: the windows' vectors in order.
        """
        count, owners = tokenized.count, tokenized.owners
        dense = None
        if self.dense is not None:
            dense = combine_windows(self.dense, tokenized, normalize=normalize)
        sparse: list[dict[int, float]] | None = None
        if self.sparse is not None:
            sparse = [{} for _ in range(count)]
            for owner, weights in zip(owners, self.sparse, strict=True):
                merged = sparse[owner]
                for token, weight in weights.items():
                    if weight > merged.get(token, 0.0):
                        merged[token] = weight
        colbert: list[np.ndarray] | None = None
        if self.colbert is not None:
            parts: list[list[np.ndarray]] = [[] for _ in range(count)]
            for owner, vectors in zip(owners, self.colbert, strict=True):
                parts[owner].append(vectors)
            colbert = [p[0] if len(p) == 1 else np.concatenate(p, axis=0) for p in parts]
        return M3Output(dense=dense, sparse=sparse, colbert=colbert)

    def non_finite_rows(self) -> list[int]:
        """Indices of texts with a NaN or infinite value in any output."""
        bad: set[int] = set()
        if self.dense is not None:
            bad.update(np.flatnonzero(~np.isfinite(self.dense).all(axis=1)).tolist())
        for index, weights in enumerate(self.sparse or []):
            if not all(math.isfinite(weight) for weight in weights.values()):
                bad.add(index)
        for index, vectors in enumerate(self.colbert or []):
            if not np.isfinite(vectors).all():
                bad.add(index)
        return sorted(bad)

    def __len__(self) -> int:
        for output in (self.dense, self.sparse, self.colbert):
            if output is not None:
                return len(output)
        return 0


# -- heads ---------------------------------------------------------------------------------


class HeadOwner(Protocol):
    """Whatever holds a model's heads (an encoder, a backend)."""

    def load_head(self, name: str) -> torch.nn.Linear | None:
        """The head, loaded on first use; None when the backend keeps its own heads."""
        ...


def not_m3_message(source: ModelSource, missing: Sequence[str]) -> str:
    """The error for a model without the bge-m3 head files ``missing``."""
    from localembed.loading import display_path

    return (
        f"{', '.join(missing)} not found in {display_path(source.path)}: {source.name!r} is "
        f"not a bge-m3 model (sparse and ColBERT outputs need {SPARSE_HEAD_FILE} and "
        f"{COLBERT_HEAD_FILE} next to the weights); ask for dense vectors only, or use a bge-m3 "
        f"model such as BAAI/bge-m3"
    )


def load_head(owner: HeadOwner, name: str) -> torch.nn.Linear:
    """The ``"sparse"`` or ``"colbert"`` head of ``owner``'s model, loaded on first use.

    Args:
        owner: a torch-backend encoder of a bge-m3 model (or its backend).
        name: ``"sparse"`` or ``"colbert"``.

    Returns:
        The head as a ``torch.nn.Linear`` in eval mode, on the model's device and dtype.

    Raises:
        FileNotFoundError: the head's file is missing (the model is not a bge-m3 model).
        ModelFileError: the head file is truncated, corrupt, holds NaN/inf or does not fit.
        ValueError: unknown ``name``, or the backend keeps its heads to itself.
    """
    head = owner.load_head(name)
    if head is None:
        msg = "backend='flagembedding' keeps its heads inside FlagEmbedding; use backend='torch'"
        raise ValueError(msg)
    return head


def read_head(
    path: Path, dimension: int, *, device: torch.device, dtype: torch.dtype
) -> torch.nn.Linear:
    """Read a head file (a ``Linear`` state dict) with the checks weights get.

    The file is read with ``torch.load(..., weights_only=True)`` (no pickled code runs).

    Raises:
        ModelFileError: the file is truncated or corrupt, is not a Linear layer's state
            dict, expects another hidden size, or holds NaN or infinite values.
    """
    import torch

    from localembed.loading import ModelFileError, display_path, fix_for, scrub

    shown = display_path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zipfile, pickle and EOF errors: all mean a damaged file
        msg = (
            f"cannot read the head {shown}: {type(error).__name__}: {scrub(str(error))}; the "
            f"file is truncated or corrupt; {fix_for(path)}"
        )
        raise ModelFileError(msg) from error
    weight = state.get("weight") if isinstance(state, dict) else None
    bias = state.get("bias") if isinstance(state, dict) else None
    if (
        not isinstance(weight, torch.Tensor)
        or weight.dim() != 2
        or not (bias is None or isinstance(bias, torch.Tensor))
    ):
        msg = f"{shown} is not a Linear layer's state dict (no 2-d 'weight'); {fix_for(path)}"
        raise ModelFileError(msg)
    out_features, in_features = weight.shape
    if in_features != dimension:
        msg = (
            f"{shown} expects hidden size {in_features}, but the model's hidden size is "
            f"{dimension}; {fix_for(path)}"
        )
        raise ModelFileError(msg)
    for key, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and not bool(torch.isfinite(tensor).all()):
            msg = (
                f"the head {shown} is corrupt: {key} holds NaN or infinite values; {fix_for(path)}"
            )
            raise ModelFileError(msg)
    head = torch.nn.Linear(in_features, out_features, bias=bias is not None)
    try:
        head.load_state_dict(state)
    except RuntimeError as error:
        msg = f"{shown} does not fit a Linear layer: {error}; {fix_for(path)}"
        raise ModelFileError(msg) from error
    head = head.to(device=device, dtype=dtype).eval()
    head.requires_grad_(False)
    return head


# -- one forward batch -> outputs ---------------------------------------------------------


def _token_weights(
    weights: np.ndarray, ids: np.ndarray, unused: frozenset[int]
) -> dict[int, float]:
    keep = (weights > 0) & ~np.isin(ids, list(unused))
    if not keep.any():
        return {}
    unique, inverse = np.unique(ids[keep], return_inverse=True)
    largest = np.zeros(len(unique), dtype=weights.dtype)
    np.maximum.at(largest, inverse, weights[keep])
    return dict(zip(unique.tolist(), largest.tolist(), strict=True))


def batch_outputs(
    batch: ForwardBatch,
    *,
    pooling: str | None,
    normalize: bool,
    normalize_dense: bool | None = None,
    sparse_head: torch.nn.Linear | None = None,
    colbert_head: torch.nn.Linear | None = None,
    unused_ids: frozenset[int] = frozenset(),
) -> tuple[np.ndarray | None, list[dict[int, float]] | None, list[np.ndarray] | None]:
    """The bge-m3 outputs of one forward batch, row by row.

    Real tokens are found through the attention mask, so the result does not depend on the
    padding side (left or right).

    Args:
        batch: the transformer's last hidden states, attention mask and input ids.
        pooling: the dense pooling mode (a key of ``POOLING_FUNCTIONS``); None: no dense.
        normalize: L2-normalize dense and ColBERT vectors.
        normalize_dense: for dense vectors alone; None: as ``normalize``.
        sparse_head: the sparse head; None: no sparse output.
        colbert_head: the ColBERT head; None: no ColBERT output.
        unused_ids: token ids left out of the lexical weights (special tokens).

    Returns:
        ``(dense, sparse, colbert)`` for the batch's rows; None where not requested. Dense
        is a (rows, dim) float32 array, sparse a list of dicts, colbert a list of arrays.
    """
    import torch

    hidden, mask = batch.hidden, batch.attention_mask
    dense = sparse = colbert = None
    real = [row.nonzero().flatten() for row in mask.cpu()]
    with torch.inference_mode():
        if pooling is not None:
            wanted = normalize if normalize_dense is None else normalize_dense
            dense = dense_head(pooling, hidden, mask, normalize=wanted).cpu().numpy()
        if sparse_head is not None:
            weights = torch.relu(sparse_head(hidden)).squeeze(-1).float().cpu().numpy()
            ids = batch.input_ids.cpu().numpy()
            sparse = [
                _token_weights(
                    weights[row, positions.numpy()], ids[row, positions.numpy()], unused_ids
                )
                for row, positions in enumerate(real)
            ]
        if colbert_head is not None:
            vectors = colbert_head(hidden)
            if normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
            vectors = vectors.float().cpu()
            # Every real token but the first (CLS): FlagEmbedding's colbert_linear(h[:, 1:]).
            colbert = [vectors[row, positions[1:]].numpy() for row, positions in enumerate(real)]
    return dense, sparse, colbert


# -- encoding -------------------------------------------------------------------------------


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
    ) -> M3Output:
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
) -> M3Output:
    """bge-m3's dense, sparse and ColBERT outputs of ``texts``: ``encoder.encode_m3(...)``.

    Batching and long texts follow the encoder's settings; see the module docstring for how
    chunked windows are combined.
    """
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
        raise ValueError(msg)
    w_dense, w_sparse, w_colbert = (float(w) for w in weights)
    if not all(math.isfinite(w) for w in (w_dense, w_sparse, w_colbert)):
        msg = f"weights must be finite numbers, got {tuple(weights)}"
        raise ValueError(msg)
    if w_dense + w_sparse == 0 or w_dense + w_sparse + w_colbert == 0:
        msg = (
            f"weights {tuple(weights)} sum to zero (dense + sparse, or all three): the combined "
            f"scores would divide by zero; give the modes you combine a positive total weight"
        )
        raise ValueError(msg)
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
        raise ValueError(msg)
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
