"""Heads: what a forward pass's hidden states become, and the type that carries them.

- :class:`Outputs`: every output of one call, item i for input i (dense vectors, sparse
  lexical weights, ColBERT multi-vectors, cross-encoder logits); an output not requested is
  None. Per-window results are combined into per-text results with :meth:`Outputs.combine`.
- :func:`batch_outputs`: one forward batch -> the requested outputs, row by row. The dense
  head is :func:`localembed.pooling.dense_head` (pooling, then L2 normalization); the sparse
  head is ``relu(Linear(hidden, 1))`` per token and the ColBERT head ``Linear(hidden, dim)``
  per token after the first, the arithmetic of FlagEmbedding 1.4.2's ``BGEM3FlagModel``.
- :func:`read_head`: a head's weights from its file (a ``Linear`` state dict), checked as
  weights are. Which file holds which head is data: :data:`HEAD_FILES`, from the family
  presets (:mod:`localembed.presets`; bge-m3 today).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from localembed.errors import InputError
from localembed.pooling import dense_head
from localembed.presets import HEAD_FILES
from localembed.windows import combine_windows

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from localembed.batching import ForwardBatch
    from localembed.loading import ModelSource
    from localembed.windows import Tokenized

__all__ = [
    "HEAD_FILES",
    "OUTPUT_NAMES",
    "Outputs",
    "batch_outputs",
    "check_outputs",
    "missing_heads_message",
    "read_head",
]

OUTPUT_NAMES = ("dense", "sparse", "colbert", "logits")
"""The outputs :class:`Outputs` carries (a backend's capabilities name the ones it makes)."""


@dataclass(frozen=True)
class Outputs:
    """Every output of one call; item i of each output belongs to input i.

    An output that was not requested is None.
    """

    dense: np.ndarray | None = None
    """(n, dim) float32 dense vectors."""
    sparse: list[dict[int, float]] | None = None
    """One ``{token_id: weight}`` dict per text (lexical weights; special tokens left out)."""
    colbert: list[np.ndarray] | None = None
    """One (tokens - 1, colbert_dim) float32 array per text (ColBERT vectors)."""
    logits: np.ndarray | None = None
    """(n, labels) float32 raw cross-encoder logits, one row per (query, document) pair."""

    def dense_array(self) -> np.ndarray:
        """The dense vectors.

        Returns:
            The (n, dim) float32 array.

        Raises:
            InputError: dense vectors were not requested.
        """
        if self.dense is None:
            msg = "dense vectors were not requested; call encode_m3(..., dense=True)"
            raise InputError(msg)
        return self.dense

    def combine(self, tokenized: Tokenized, *, normalize: bool) -> Outputs:
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
        return Outputs(dense=dense, sparse=sparse, colbert=colbert, logits=self.logits)

    def non_finite_rows(self) -> list[int]:
        """Indices of inputs with a NaN or infinite value in any output."""
        bad: set[int] = set()
        for array in (self.dense, self.logits):
            if array is not None:
                bad.update(np.flatnonzero(~np.isfinite(array).all(axis=1)).tolist())
        for index, weights in enumerate(self.sparse or []):
            if not all(math.isfinite(weight) for weight in weights.values()):
                bad.add(index)
        for index, vectors in enumerate(self.colbert or []):
            if not np.isfinite(vectors).all():
                bad.add(index)
        return sorted(bad)

    def __len__(self) -> int:
        for output in (self.dense, self.sparse, self.colbert, self.logits):
            if output is not None:
                return len(output)
        return 0


def check_outputs(outputs: Sequence[str], capabilities: frozenset[str], what: str) -> None:
    """Refuse outputs that are unknown or that ``capabilities`` lack.

    Raises:
        InputError: no output, an unknown one, or one the backend cannot make (named).
    """
    if not outputs:
        msg = "request at least one output: dense=True, sparse=True or colbert=True"
        raise InputError(msg)
    unknown = [name for name in outputs if name not in OUTPUT_NAMES]
    if unknown:
        msg = f"unknown output {unknown[0]!r}; valid: {', '.join(OUTPUT_NAMES)}"
        raise InputError(msg)
    missing = [name for name in outputs if name not in capabilities]
    if missing:
        msg = (
            f"{what} cannot make {', '.join(missing)} (it makes {', '.join(sorted(capabilities))})"
        )
        raise InputError(msg)


def missing_heads_message(source: ModelSource, missing: Sequence[str]) -> str:
    """The error for a model without the head files ``missing`` (not a bge-m3 model)."""
    from localembed.model_origins import display_path

    sparse, colbert = HEAD_FILES["sparse"], HEAD_FILES["colbert"]
    return (
        f"{', '.join(missing)} not found in {display_path(source.path)}: {source.name!r} is "
        f"not a bge-m3 model (sparse and ColBERT outputs need {sparse} and {colbert} next to "
        f"the weights); ask for dense vectors only, or use a bge-m3 model such as BAAI/bge-m3"
    )


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

    from localembed.model_errors import ModelFileError
    from localembed.model_origins import display_path, fix_for, scrub

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
    normalize_dense: bool | torch.Tensor | None = None,
    sparse_head: torch.nn.Linear | None = None,
    colbert_head: torch.nn.Linear | None = None,
    unused_ids: frozenset[int] = frozenset(),
) -> tuple[np.ndarray | None, list[dict[int, float]] | None, list[np.ndarray] | None]:
    """The outputs of one forward batch, row by row.

    Real tokens are found through the attention mask, so the result does not depend on the
    padding side (left or right).

    Args:
        batch: the transformer's last hidden states, attention mask and input ids.
        pooling: the dense pooling mode (a key of ``POOLING_FUNCTIONS``); None: no dense.
        normalize: L2-normalize dense and ColBERT vectors.
        normalize_dense: for dense vectors alone (True/False, or a (rows,) bool tensor
            choosing the rows); None: as ``normalize``.
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
    with torch.inference_mode():
        if pooling is not None:
            wanted = normalize if normalize_dense is None else normalize_dense
            dense = dense_head(pooling, hidden, mask, normalize=wanted).cpu().numpy()
        if sparse_head is None and colbert_head is None:
            return dense, None, None
        real = [row.nonzero().flatten() for row in mask.cpu()]
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
