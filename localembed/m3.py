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

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from localembed.encoder import check_texts
from localembed.pooling import pool
from localembed.presets import apply_instruction

if TYPE_CHECKING:
    import torch

    from localembed.encoder import ForwardBatch, LocalEncoder, Tokenized

__all__ = [
    "COLBERT_HEAD_FILE",
    "SPARSE_HEAD_FILE",
    "FlagEmbeddingBackend",
    "M3Output",
    "batch_outputs",
    "colbert_score",
    "encode_m3",
    "hybrid_score",
    "lexical_matching_score",
    "lexical_tokens",
    "load_head",
]

SPARSE_HEAD_FILE = "sparse_linear.pt"
"""The sparse (lexical weight) head: ``Linear(hidden, 1)`` state dict."""
COLBERT_HEAD_FILE = "colbert_linear.pt"
"""The multi-vector head: ``Linear(hidden, colbert_dim)`` state dict."""
_HEAD_FILES = {"sparse": SPARSE_HEAD_FILE, "colbert": COLBERT_HEAD_FILE}
_FLAGEMBEDDING_POOLING = ("cls", "mean", "last_token")

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

    def __len__(self) -> int:
        for output in (self.dense, self.sparse, self.colbert):
            if output is not None:
                return len(output)
        return 0


# -- heads ---------------------------------------------------------------------------------

_heads: weakref.WeakKeyDictionary[LocalEncoder, dict[str, torch.nn.Linear]] = (
    weakref.WeakKeyDictionary()
)
_heads_lock = threading.Lock()


def _not_m3_message(encoder: LocalEncoder, missing: Sequence[str]) -> str:
    return (
        f"{', '.join(missing)} not found in {encoder.source.path}: {encoder.source.name!r} is "
        f"not a bge-m3 model (sparse and ColBERT outputs need {SPARSE_HEAD_FILE} and "
        f"{COLBERT_HEAD_FILE} next to the weights); ask for dense vectors only, or use a bge-m3 "
        f"model such as BAAI/bge-m3"
    )


def load_head(encoder: LocalEncoder, name: str) -> torch.nn.Linear:
    """The ``"sparse"`` or ``"colbert"`` head of ``encoder``'s model, loaded on first use.

    The head is read with ``torch.load(..., weights_only=True)`` (no pickled code runs), put
    on the encoder's device and dtype, and cached for as long as the encoder lives.

    Args:
        encoder: a torch-backend encoder of a bge-m3 model.
        name: ``"sparse"`` or ``"colbert"``.

    Returns:
        The head as a ``torch.nn.Linear`` in eval mode.

    Raises:
        FileNotFoundError: the head's file is missing (the model is not a bge-m3 model).
        ValueError: unknown ``name``, or the head does not fit the model's hidden size.
    """
    import torch

    if name not in _HEAD_FILES:
        msg = f"unknown head {name!r}; valid: {', '.join(_HEAD_FILES)}"
        raise ValueError(msg)
    with _heads_lock:
        cached = _heads.setdefault(encoder, {})
        head = cached.get(name)
        if head is not None:
            return head
        path = Path(encoder.source.path) / _HEAD_FILES[name]
        if not path.is_file():
            raise FileNotFoundError(_not_m3_message(encoder, [_HEAD_FILES[name]]))
        state = torch.load(path, map_location="cpu", weights_only=True)
        weight = state.get("weight") if isinstance(state, dict) else None
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            msg = f"{path} is not a Linear layer's state dict (no 2-d 'weight')"
            raise ValueError(msg)
        out_features, in_features = weight.shape
        if in_features != encoder.dimension:
            msg = (
                f"{path} expects hidden size {in_features}, but the model's hidden size is "
                f"{encoder.dimension}"
            )
            raise ValueError(msg)
        head = torch.nn.Linear(in_features, out_features, bias="bias" in state)
        head.load_state_dict(state)
        head = head.to(device=encoder.device, dtype=encoder.dtype).eval()
        head.requires_grad_(False)
        cached[name] = head
        return head


def _unused_token_ids(encoder: LocalEncoder) -> frozenset[int]:
    # FlagEmbedding's _process_token_weights drops the cls, eos, pad and unk tokens.
    tokenizer = encoder.tokenizer
    ids = (
        tokenizer.cls_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
    )
    return frozenset(int(i) for i in ids if i is not None)


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
            vectors = pool(pooling, hidden, mask)
            if normalize if normalize_dense is None else normalize_dense:
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
            dense = vectors.float().cpu().numpy()
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


def encode_m3(
    encoder: LocalEncoder,
    texts: Sequence[str],
    *,
    dense: bool = True,
    sparse: bool = False,
    colbert: bool = False,
    instruction: str | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
) -> M3Output:
    """bge-m3's dense, sparse and ColBERT outputs of ``texts``, from one forward pass per batch.

    Batching (length-sorted, ``batch_size``, ``max_batch_tokens``) and long texts
    (``long_text``) follow the encoder's settings; see the module docstring for how chunked
    windows are combined. With ``backend="flagembedding"`` FlagEmbedding's own model does the
    work.

    Args:
        encoder: the encoder of a bge-m3 model (sparse and ColBERT need its heads).
        texts: the texts; an empty list gives empty outputs without a model call.
        dense: compute dense vectors.
        sparse: compute lexical weights.
        colbert: compute ColBERT vectors.
        instruction: a prefix, or a template containing ``{text}``, applied to every text
            (bge-m3 uses none).
        batch_size: windows per forward pass; default: the configured ``batch_size``.
        show_progress: show a tqdm progress bar.

    Returns:
        An :class:`M3Output`; outputs not requested are None.

    Raises:
        ValueError: no output was requested.
        TypeError: ``texts`` is not a list of str.
        FileNotFoundError: sparse or ColBERT was requested and the model has no such head.
    """
    if not (dense or sparse or colbert):
        msg = "request at least one output: dense=True, sparse=True or colbert=True"
        raise ValueError(msg)
    if encoder.reference_backend is not None:
        items = [apply_instruction(instruction or "", text) for text in check_texts(texts)]
        return encoder.reference_backend.encode_m3(
            items,
            dense=dense,
            sparse=sparse,
            colbert=colbert,
            batch_size=batch_size,
            show_progress=show_progress,
        )
    sparse_head = load_head(encoder, "sparse") if sparse else None
    colbert_head = load_head(encoder, "colbert") if colbert else None
    tokenized = encoder.tokenize(texts, instruction)
    windows = len(tokenized.ids)
    normalize = encoder.settings.normalize
    dense_rows = np.empty((windows, encoder.dimension), dtype=np.float32) if dense else None
    sparse_rows: list[dict[int, float]] = [{} for _ in range(windows if sparse else 0)]
    colbert_rows: list[np.ndarray] = []
    if colbert:
        colbert_rows = [np.empty((0, 0), dtype=np.float32)] * windows
    unused = _unused_token_ids(encoder)

    def consume(indices: list[int], batch: ForwardBatch) -> None:
        batch_dense, batch_sparse, batch_colbert = batch_outputs(
            batch,
            pooling=encoder.settings.pooling if dense else None,
            normalize=normalize,
            # Chunked texts' dense vectors are normalized after their windows are combined.
            normalize_dense=normalize and not tokenized.chunked,
            sparse_head=sparse_head,
            colbert_head=colbert_head,
            unused_ids=unused,
        )
        if dense_rows is not None and batch_dense is not None:
            dense_rows[indices] = batch_dense
        if batch_sparse is not None:
            for index, weights in zip(indices, batch_sparse, strict=True):
                sparse_rows[index] = weights
        if batch_colbert is not None:
            for index, vectors in zip(indices, batch_colbert, strict=True):
                colbert_rows[index] = vectors

    if windows:
        encoder.run_batches(tokenized, consume, batch_size=batch_size, show_progress=show_progress)
    if not tokenized.chunked:
        return M3Output(
            dense=dense_rows,
            sparse=sparse_rows if sparse else None,
            colbert=colbert_rows if colbert else None,
        )
    return _combine_windows(
        encoder,
        tokenized,
        dense_rows,
        sparse_rows if sparse else None,
        colbert_rows if colbert else None,
    )


def _combine_windows(
    encoder: LocalEncoder,
    tokenized: Tokenized,
    dense_rows: np.ndarray | None,
    sparse_rows: list[dict[int, float]] | None,
    colbert_rows: list[np.ndarray] | None,
) -> M3Output:
    count, owners = tokenized.count, tokenized.owners
    dense_out = None
    if dense_rows is not None:
        # The encoder's rule: token-count-weighted mean of the windows, then normalized.
        dense_out = encoder.combine_windows(dense_rows, tokenized)
    sparse_out: list[dict[int, float]] | None = None
    if sparse_rows is not None:
        sparse_out = [{} for _ in range(count)]
        for owner, weights in zip(owners, sparse_rows, strict=True):
            merged = sparse_out[owner]
            for token, weight in weights.items():
                if weight > merged.get(token, 0.0):
                    merged[token] = weight
    colbert_out: list[np.ndarray] | None = None
    if colbert_rows is not None:
        parts: list[list[np.ndarray]] = [[] for _ in range(count)]
        for owner, vectors in zip(owners, colbert_rows, strict=True):
            parts[owner].append(vectors)
        colbert_out = [
            part[0] if len(part) == 1 else np.concatenate(part, axis=0) for part in parts
        ]
    return M3Output(dense=dense_out, sparse=sparse_out, colbert=colbert_out)


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
        ValueError: not three weights, or no output that both sides have.
    """
    if len(weights) != 3:
        msg = f"weights must be (dense, sparse, colbert), got {len(weights)} values"
        raise ValueError(msg)
    w_dense, w_sparse, w_colbert = (float(w) for w in weights)
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


# -- FlagEmbedding as the backend ---------------------------------------------------------


FLAGEMBEDDING_TRANSFORMERS = ">=4.48,<5.24"
"""The transformers releases FlagEmbedding 1.4.2 imports under (the ``m3`` extra's range):
5.24 removed ``transformers.modeling_attn_mask_utils``, which its package ``__init__`` imports."""


def flagembedding_import_message(error: ImportError) -> str:
    """Say why ``from FlagEmbedding import BGEM3FlagModel`` failed, and what fixes it.

    A missing package needs the ``m3`` extra; an installed FlagEmbedding that fails on a
    transformers module needs a transformers release it supports, not a reinstall.
    """
    import importlib.util

    if importlib.util.find_spec("FlagEmbedding") is None:
        return "backend='flagembedding' needs FlagEmbedding: pip install 'localembed[m3]'"
    missing = getattr(error, "name", None) or ""
    if missing.split(".")[0] == "transformers":
        import transformers

        return (
            f"FlagEmbedding is installed but cannot import {missing!r} from transformers "
            f"{transformers.__version__} ({error}); FlagEmbedding 1.4.2 works with transformers"
            f"{FLAGEMBEDDING_TRANSFORMERS}: pip install 'transformers{FLAGEMBEDDING_TRANSFORMERS}'"
            " (or use backend='torch', which computes the same bge-m3 outputs)"
        )
    return f"FlagEmbedding is installed but failed to import: {error}"


class FlagEmbeddingBackend:
    """FlagEmbedding's ``BGEM3FlagModel`` behind localembed's API (``backend="flagembedding"``).

    The reference code path: FlagEmbedding tokenizes, batches and runs the model. Model
    directory, pooling, normalization, device, dtype, ``max_length`` and ``batch_size`` come
    from the encoder. FlagEmbedding casts the model to float32 whenever it runs on the CPU,
    so ``bfloat16``/``float16`` only take effect on accelerators. It has no token budget, no
    chunking and no quantization: ``max_batch_tokens``, ``long_text="chunk"`` and
    ``quantize`` are refused.

    Args:
        encoder: the encoder whose settings to use (its own transformer is not loaded).

    Raises:
        ImportError: FlagEmbedding is not installed (extra ``m3``).
        FileNotFoundError: the model directory lacks a head file or safetensors weights.
        ValueError: a setting FlagEmbedding cannot honour.
    """

    def __init__(self, encoder: LocalEncoder) -> None:
        import torch

        config, settings = encoder.config, encoder.settings
        if config.long_text == "chunk":
            msg = "backend='flagembedding' truncates long texts; long_text='chunk' needs 'torch'"
            raise ValueError(msg)
        if config.max_batch_tokens is not None:
            msg = "backend='flagembedding' has no token budget; max_batch_tokens needs 'torch'"
            raise ValueError(msg)
        if settings.pooling not in _FLAGEMBEDDING_POOLING:
            msg = (
                f"backend='flagembedding' supports pooling {', '.join(_FLAGEMBEDDING_POOLING)}, "
                f"not {settings.pooling!r}"
            )
            raise ValueError(msg)
        path = Path(encoder.source.path)
        missing = [name for name in _HEAD_FILES.values() if not (path / name).is_file()]
        if missing:
            # FlagEmbedding would silently initialize missing heads at random.
            raise FileNotFoundError(_not_m3_message(encoder, missing))
        if getattr(config, "quantize", None) is not None:
            msg = "backend='flagembedding' runs FlagEmbedding's own model; quantize needs 'torch'"
            raise ValueError(msg)
        if not any(path.glob("*.safetensors")) and not getattr(
            config, "allow_pickle_weights", False
        ):
            msg = (
                f"no .safetensors weights in {path}; pickle weights load only with "
                "allow_pickle_weights=True"
            )
            raise FileNotFoundError(msg)
        try:
            from FlagEmbedding import BGEM3FlagModel
        except ImportError as error:
            raise ImportError(flagembedding_import_message(error)) from error
        self._encoder = encoder
        self._lock = threading.Lock()
        self.model: Any = BGEM3FlagModel(
            str(path),
            normalize_embeddings=settings.normalize,
            use_fp16=encoder.dtype == torch.float16,
            use_bf16=encoder.dtype == torch.bfloat16,
            devices=str(encoder.device),
            pooling_method=settings.pooling,
            trust_remote_code=config.trust_remote_code,
            batch_size=config.batch_size,
            query_max_length=settings.max_length,
            passage_max_length=settings.max_length,
        )
        """The ``FlagEmbedding.BGEM3FlagModel``."""

    def encode_m3(
        self,
        texts: Sequence[str],
        *,
        dense: bool = True,
        sparse: bool = False,
        colbert: bool = False,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> M3Output:
        """Run ``BGEM3FlagModel.encode`` on ``texts`` (instructions already applied).

        Args:
            texts: the texts.
            dense: compute dense vectors.
            sparse: compute lexical weights.
            colbert: compute ColBERT vectors.
            batch_size: texts per forward pass; default: the configured ``batch_size``.
            show_progress: unused (FlagEmbedding shows its own bars on large inputs).

        Returns:
            An :class:`M3Output` in localembed's types (int token ids, float32 arrays).
        """
        del show_progress
        items = check_texts(texts)
        if not (dense or sparse or colbert):
            msg = "request at least one output: dense=True, sparse=True or colbert=True"
            raise ValueError(msg)
        encoder = self._encoder
        if not items:
            return M3Output(
                dense=np.empty((0, encoder.dimension), dtype=np.float32) if dense else None,
                sparse=[] if sparse else None,
                colbert=[] if colbert else None,
            )
        encoder.tokenize(items)  # counts (and warns about) texts over max_length, as "torch" does
        with self._lock:
            result = self.model.encode(
                items,
                batch_size=batch_size or encoder.config.batch_size,
                max_length=encoder.settings.max_length,
                return_dense=dense,
                return_sparse=sparse,
                return_colbert_vecs=colbert,
            )
        return M3Output(
            dense=np.asarray(result["dense_vecs"], dtype=np.float32) if dense else None,
            sparse=[
                {int(token): float(weight) for token, weight in weights.items()}
                for weights in result["lexical_weights"]
            ]
            if sparse
            else None,
            colbert=[np.asarray(v, dtype=np.float32) for v in result["colbert_vecs"]]
            if colbert
            else None,
        )
