"""``localembed distill``: a static model distilled from a local transformer, offline.

The method is model2vec's published one (its ``distill`` extra cannot be installed beside
this project's transformers, so it is written here with numpy):

1. every token id goes through the model between its start and end special tokens
   (``[CLS] t [SEP]``); the token's vector is the mean of the three output states;
2. PCA to ``dimension`` components, fitted on the ordinary tokens (not ``[unusedN]``
   placeholders or special tokens) and applied to all;
3. SIF weighting with Zipf's law as the frequency estimate: the token of id ``i`` (WordPiece
   and BPE vocabularies are roughly ordered by frequency) is scaled by
   ``sif / (sif + p(i))`` with ``p(i)`` proportional to ``1 / (i + 2)``, so that frequent
   tokens count less in a text's mean.

The result is written in model2vec's format (:mod:`localembed.static`): model2vec's
``StaticModel`` and ``get_encoder(model=DIR)`` load it and give the same vectors. It is a
different trade-off (docs/performance.md has its speed and STS Benchmark drop), never the
default.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from localembed.errors import InputError, ModelError
from localembed.static import (
    CONFIG_FILE,
    DEFAULT_MAX_LENGTH,
    EMBEDDINGS_FILE,
    STATIC_MODEL_TYPE,
    TOKENIZER_FILE,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from localembed.backends import TransformerBackend

__all__ = ["DistillReport", "distill"]

UNUSED_TOKEN = re.compile(r"\[unused\d+\]")
"""Placeholder tokens of BERT vocabularies: left out of the PCA fit."""


@dataclass(frozen=True)
class DistillReport:
    """What :func:`distill` wrote."""

    path: Path
    tokens: int
    """Rows of the embedding matrix (the tokenizer's vocabulary)."""
    dimension: int
    explained_variance: float
    """Share of the token vectors' variance the kept PCA components explain."""


def distill(
    model: str | None,
    output: Path,
    *,
    dimension: int = 256,
    sif_coefficient: float = 1e-4,
    batch_size: int = 1024,
    trust_remote_code: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> DistillReport:
    """Distill ``model`` into a static model in ``output`` (see the module docstring).

    Args:
        model: a local directory, a cached hub id, or None for the embedded default model.
        output: the directory to write (created; existing model files are replaced).
        dimension: PCA components kept (at most the model's width; the width keeps all).
        sif_coefficient: the SIF ``a`` in ``a / (a + p)``; 0 turns the weighting off.
        batch_size: token ids per forward pass.
        trust_remote_code: for models whose repository code must run.
        progress: called with (tokens done, tokens) after each batch.

    Returns:
        What was written.
    """
    from safetensors.numpy import save_file

    from localembed.backends import TransformerBackend, read_model_files
    from localembed.config import EncoderConfig
    from localembed.static import is_static_model

    if dimension < 1:
        msg = f"dimension must be a positive int, got {dimension}"
        raise InputError(msg)
    if not 0 <= sif_coefficient < 1:
        msg = f"sif_coefficient must be in [0, 1), got {sif_coefficient}"
        raise InputError(msg)
    config = EncoderConfig(model=model, trust_remote_code=trust_remote_code)
    files = read_model_files(config)
    if is_static_model(files.source.path):
        msg = f"{files.source.name} is a static model already; distill needs a transformer"
        raise InputError(msg)
    # A transformer on the runtime the defaults choose (ONNX Runtime where it is exact).
    backend = TransformerBackend(files, config)
    backend_tokenizer = files.tokenizer.backend_tokenizer
    vocab = backend_tokenizer.get_vocab(with_added_tokens=True)
    count = len(vocab)
    if sorted(vocab.values()) != list(range(count)):
        msg = f"{files.source.name}: token ids are not 0..{count - 1}; cannot distill it"
        raise ModelError(msg)
    model_vocab = int(getattr(files.model_config, "vocab_size", count) or count)
    if model_vocab < count:
        msg = (
            f"{files.source.name}: the tokenizer has {count} tokens, the model embeds "
            f"{model_vocab}; cannot distill it"
        )
        raise ModelError(msg)
    vectors = _token_vectors(backend, count, batch_size, progress)
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = set(files.tokenizer.all_special_tokens)
    ordinary = np.array([t not in special and not UNUSED_TOKEN.fullmatch(t) for t in tokens])
    reduced, explained = _pca(vectors, min(dimension, vectors.shape[1]), fit_rows=ordinary)
    if sif_coefficient > 0:
        zipf = 1.0 / np.arange(2, count + 2)
        reduced *= (sif_coefficient / (sif_coefficient + zipf / zipf.sum()))[:, None]
    output.mkdir(parents=True, exist_ok=True)
    matrix = np.ascontiguousarray(reduced, dtype=np.float32)
    save_file({"embeddings": matrix}, str(output / EMBEDDINGS_FILE))
    tokenizer = type(backend_tokenizer).from_str(backend_tokenizer.to_str())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.save(str(output / TOKENIZER_FILE))
    written: dict[str, object] = {
        "model_type": STATIC_MODEL_TYPE,
        "architectures": ["StaticModel"],
        "tokenizer_name": files.source.name,
        "apply_pca": reduced.shape[1],
        "apply_zipf": sif_coefficient > 0,
        "sif_coefficient": sif_coefficient or None,
        "hidden_dim": reduced.shape[1],
        "seq_length": 1_000_000,
        "max_length": DEFAULT_MAX_LENGTH,
        "normalize": True,
        "distilled_from": files.source.name,
        "distilled_by": "localembed distill",
    }
    (output / CONFIG_FILE).write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
    return DistillReport(output, count, int(reduced.shape[1]), explained)


def _token_vectors(
    backend: TransformerBackend,
    count: int,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> np.ndarray:
    """(count, width) float64: each token id's output states, averaged over its 3 positions."""
    tokenizer = backend.files.tokenizer
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    vectors = np.empty((count, backend.dimension), dtype=np.float64)
    for first in range(0, count, batch_size):
        ids = range(first, min(first + batch_size, count))
        windows = [[i] if start is None else [start, i] for i in ids]
        windows = [w if end is None else [*w, end] for w in windows]
        batch = backend.forward(windows)
        vectors[first : first + len(windows)] = batch.hidden.float().mean(dim=1).cpu().numpy()
        if progress is not None:
            progress(first + len(windows), count)
    return vectors


def _pca(vectors: np.ndarray, components: int, fit_rows: np.ndarray) -> tuple[np.ndarray, float]:
    """Project ``vectors`` on the top principal components of ``vectors[fit_rows]``."""
    fit = vectors[fit_rows] if fit_rows.sum() > components else vectors
    mean = fit.mean(axis=0)
    _, singular, basis = np.linalg.svd(fit - mean, full_matrices=False)
    variance = singular**2
    explained = float(variance[:components].sum() / variance.sum()) if variance.sum() else 1.0
    return (vectors - mean) @ basis[:components].T, explained
