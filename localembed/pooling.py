"""Pooling: token vectors -> one vector per text; the one table of pooling functions.

Every function takes ``token_embeddings`` (batch, tokens, hidden) and ``attention_mask``
(batch, tokens) and finds the real tokens through the mask, so left and right padding
give the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from localembed.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import torch

PoolingFunction = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def _first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    # argmax returns the first maximal position: the first real token on either padding side.
    return attention_mask.int().argmax(dim=1)


def _last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    length = attention_mask.shape[1]
    return length - 1 - attention_mask.int().flip(dims=[1]).argmax(dim=1)


def _take(token_embeddings: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    rows = index.new_tensor(range(token_embeddings.shape[0]))
    return token_embeddings[rows, index]


def cls_pooling(token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The first real token's vector ([CLS] / <s>), wherever padding puts it."""
    return _take(token_embeddings, _first_token_index(attention_mask))


def last_token_pooling(
    token_embeddings: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The last real token's vector (decoder embedders: gte-Qwen2, Qwen3-Embedding, e5-mistral)."""
    return _take(token_embeddings, _last_token_index(attention_mask))


def mean_pooling(token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The average of the real tokens' vectors."""
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    total = (token_embeddings * mask).sum(dim=1)
    return total / mask.sum(dim=1).clamp(min=1e-9)


def max_pooling(token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum over the real tokens' vectors."""
    padding = (attention_mask == 0).unsqueeze(-1)
    return token_embeddings.masked_fill(padding, -1e9).max(dim=1).values


def weighted_mean_pooling(
    token_embeddings: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Position-weighted mean (SGPT): the k-th real token (from the first real one) weighs k."""
    mask = attention_mask.to(token_embeddings.dtype)
    weights = (mask.cumsum(dim=1) * mask).unsqueeze(-1)
    total = (token_embeddings * weights).sum(dim=1)
    return total / weights.sum(dim=1).clamp(min=1e-9)


POOLING_FUNCTIONS: dict[str, PoolingFunction] = {
    "cls": cls_pooling,
    "mean": mean_pooling,
    "max": max_pooling,
    "last_token": last_token_pooling,
    "weighted_mean": weighted_mean_pooling,
}
"""Pooling mode name -> function; the only place a pooling mode is defined."""

POOLING_MODES: tuple[str, ...] = tuple(POOLING_FUNCTIONS)
"""The valid pooling modes (besides "auto")."""


def pool(mode: str, token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Apply the pooling ``mode`` from :data:`POOLING_FUNCTIONS`.

    Example:
        >>> import torch
        >>> tokens = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]]])
        >>> pool("mean", tokens, torch.tensor([[1, 1, 0]]))
        tensor([[2., 1.]])

    """
    try:
        function = POOLING_FUNCTIONS[mode]
    except KeyError:
        msg = f"unknown pooling {mode!r}; valid: {', '.join(POOLING_MODES)}"
        raise InputError(msg) from None
    return function(token_embeddings, attention_mask)


def dense_head(
    mode: str,
    token_embeddings: torch.Tensor,
    attention_mask: torch.Tensor,
    normalize: bool | torch.Tensor,
) -> torch.Tensor:
    """The dense head: pool with ``mode`` in float32, then L2-normalize.

    Args:
        mode: a key of :data:`POOLING_FUNCTIONS`.
        token_embeddings: (rows, tokens, dim) hidden states.
        attention_mask: (rows, tokens), 1 for real tokens.
        normalize: True/False for every row, or a (rows,) bool tensor choosing the rows to
            normalize (a window of a chunked text is normalized only once combined).

    Example:
        >>> import torch
        >>> tokens = torch.tensor([[[3.0, 0.0], [3.0, 8.0]]])
        >>> dense_head("mean", tokens, torch.tensor([[1, 1]]), normalize=True)
        tensor([[0.6000, 0.8000]])

    """
    import torch

    vectors = pool(mode, token_embeddings, attention_mask).float()
    if normalize is False:
        return vectors
    normalized = torch.nn.functional.normalize(vectors, p=2, dim=-1)
    if normalize is True:
        return normalized
    return torch.where(normalize.to(vectors.device)[:, None], normalized, vectors)


def pool_spans(
    tokens: np.ndarray, spans: Sequence[tuple[int, int]], mode: str, normalize: bool
) -> np.ndarray:
    """One pooled float32 vector per ``(start, stop)`` span of a text's token vectors.

    Each span is pooled on its own with :func:`dense_head` (late chunking: a chunk's tokens
    from one pass over the whole text).

    Example:
        >>> import numpy as np
        >>> tokens = np.array([[3.0, 0.0], [3.0, 8.0], [0.0, 2.0]], dtype=np.float32)
        >>> pool_spans(tokens, [(0, 2), (2, 3)], "mean", normalize=False)
        array([[3., 4.],
               [0., 2.]], dtype=float32)

    """
    import numpy as np
    import torch

    vectors = torch.from_numpy(tokens)
    rows = np.empty((len(spans), tokens.shape[1]), dtype=np.float32)
    for row, (start, stop) in enumerate(spans):
        span = vectors[start:stop].unsqueeze(0)
        mask = torch.ones((1, stop - start), dtype=torch.long)
        rows[row] = dense_head(mode, span, mask, normalize)[0].numpy()
    return rows
