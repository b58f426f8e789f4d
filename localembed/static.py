"""Static embeddings: a vector per token, a text's vector the mean of its tokens' vectors.

``localembed distill MODEL -o DIR`` (:func:`distill`) writes one from a local transformer, and
``get_encoder(model=DIR)`` (every surface: the CLI, the server, both adapters) loads it through
:class:`StaticBackend`. No transformer runs when embedding, so it is two to three orders of
magnitude faster than the model it came from, and less accurate (it cannot see context): a
different trade-off, never the default. docs/performance.md has the measured ratio and the
STS Benchmark drop.

The format is model2vec's (``model2vec.StaticModel.from_pretrained(DIR)`` loads it):
``model.safetensors`` holding an ``embeddings`` matrix (one row per token id),
``tokenizer.json`` (the source model's tokenizer) and ``config.json`` with ``model_type``
"model2vec". Encoding follows model2vec's ``StaticModel.encode``: no special tokens, unknown
tokens dropped, at most ``max_length`` tokens (the text is first cut to ``max_length`` times
the median token length in characters), the mean of the token vectors (zeros for a text
without tokens), normalized when the config says ``normalize``.

Distillation follows model2vec's published method, from the local weights, offline:

1. every token id goes through the model between its start and end special tokens; the
   token's vector is the mean of the three output states;
2. PCA to ``dimension`` components, fitted on the ordinary tokens (not ``[unusedN]``,
   not special tokens) and applied to all;
3. SIF weighting with Zipf's law as the frequency estimate: the token of id ``i`` (WordPiece
   and BPE vocabularies are roughly ordered by frequency) is scaled by
   ``sif / (sif + p(i))`` with ``p(i)`` proportional to ``1 / (i + 2)``: frequent tokens
   count less in a text's mean.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from localembed.errors import InputError, ModelError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import torch
    from tokenizers import Tokenizer

    from localembed.backends import CallOptions, Forward, ModelFiles, TokenEmbeddings
    from localembed.config import EncoderConfig
    from localembed.loading import ModelSource
    from localembed.m3 import M3Output
    from localembed.settings import ResolvedSettings
    from localembed.windows import Tokenized

STATIC_MODEL_TYPE = "model2vec"
"""``model_type`` in a static model's config.json."""
EMBEDDINGS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
DEFAULT_MAX_LENGTH = 512
"""Tokens per text when the config names none (model2vec's default)."""
UNUSED_TOKEN = re.compile(r"\[unused\d+\]")
"""Placeholder tokens of BERT vocabularies: left out of the PCA fit."""


def is_static_model(path: Path) -> bool:
    """Whether the directory ``path`` holds a static model (model2vec's files and config)."""
    files = (path / EMBEDDINGS_FILE, path / TOKENIZER_FILE, path / CONFIG_FILE)
    if not all(file.is_file() for file in files):
        return False
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == STATIC_MODEL_TYPE


class StaticModel:
    """A static model's token vectors and tokenizer, and model2vec's encoding rule.

    Args:
        path: the model's directory (see :func:`is_static_model`).
    """

    def __init__(self, path: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.path = path
        self.config: dict[str, Any] = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(path / EMBEDDINGS_FILE))
        if "embeddings" not in tensors:
            msg = f"{path / EMBEDDINGS_FILE} has no 'embeddings' tensor (found {sorted(tensors)})"
            raise ModelError(msg)
        embeddings = tensors["embeddings"]
        self.weights: np.ndarray | None = tensors.get("weights")
        """Per-token scale (vocabulary-quantized model2vec models), or None."""
        self.mapping: np.ndarray | None = tensors.get("mapping")
        """Token id -> row of ``embeddings`` (vocabulary-quantized models), or None."""
        if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.floating):
            msg = (
                f"{path / EMBEDDINGS_FILE}: 'embeddings' must be a 2-d float matrix, got "
                f"{embeddings.dtype} {embeddings.shape}"
            )
            raise ModelError(msg)
        self.embeddings: np.ndarray = embeddings.astype(np.float32, copy=False)
        self.tokenizer: Tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
        self.tokenizer.no_padding()
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
        if self.mapping is None and len(tokens) != len(self.embeddings):
            msg = (
                f"{path.name}: the tokenizer has {len(tokens)} tokens but 'embeddings' has "
                f"{len(self.embeddings)} rows"
            )
            raise ModelError(msg)
        self.median_token_length = int(np.median([len(token) for token in tokens]))
        self.unknown_id = _unknown_id(self.tokenizer)
        configured = self.config.get("max_length", DEFAULT_MAX_LENGTH)
        self.max_length: int | None = None if configured is None else int(configured)
        self.normalize = bool(self.config.get("normalize", False))
        self._lock = threading.Lock()  # the tokenizer's truncation setting is shared state

    @property
    def dimension(self) -> int:
        """Vector width."""
        return int(self.embeddings.shape[1])

    def token_ids(self, texts: Sequence[str], max_length: int | None) -> list[list[int]]:
        """Each text's token ids: no special tokens, unknown tokens dropped, truncated."""
        if max_length is not None:
            characters = max_length * self.median_token_length
            texts = [text[:characters] for text in texts]
        with self._lock:
            if max_length is None:
                self.tokenizer.no_truncation()
            else:
                self.tokenizer.enable_truncation(max_length)
            encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [[i for i in e.ids if i != self.unknown_id] for e in encodings]

    def encode(
        self, texts: Sequence[str], *, max_length: int | None, normalize: bool
    ) -> np.ndarray:
        """(len(texts), dimension) float32: the mean token vector of each text."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, ids in enumerate(self.token_ids(texts, max_length)):
            if not ids:
                continue
            rows = self.embeddings[ids if self.mapping is None else self.mapping[ids]]
            if self.weights is not None:
                rows = rows * self.weights[ids][:, None]
            out[row] = rows.mean(axis=0)
        if normalize:
            out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-32
        return out


def _unknown_id(tokenizer: Tokenizer) -> int | None:
    model = tokenizer.model
    token = getattr(model, "unk_token", None)
    if token is not None:
        found = tokenizer.token_to_id(str(token))
        return None if found is None else int(found)
    unknown = json.loads(tokenizer.to_str())["model"].get("unk_id")  # Unigram
    return None if unknown is None else int(unknown)


def static_model_files(source: ModelSource) -> ModelFiles:
    """The :class:`~localembed.backends.ModelFiles` of a static model (no transformer config).

    The sentence-transformers metadata says what the static model does: mean pooling, the
    config's ``normalize`` and ``max_length``, no instructions (model2vec adds none).
    """
    from transformers import PretrainedConfig, PreTrainedTokenizerFast

    from localembed.backends import ModelFiles
    from localembed.loading import SentenceTransformersMetadata
    from localembed.windows import WindowTokenizer

    path = source.path
    config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    shape = _embeddings_shape(path)
    max_length = config.get("max_length", DEFAULT_MAX_LENGTH)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path / TOKENIZER_FILE))
    model_config = PretrainedConfig(
        hidden_size=shape[1],
        max_position_embeddings=max_length or 1_000_000,
        vocab_size=shape[0],
    )
    metadata = SentenceTransformersMetadata(
        transformer_path=path,
        pooling="mean",
        normalize=bool(config.get("normalize", False)),
        max_seq_length=max_length,
        prompts={"query": "", "document": ""},
    )
    return ModelFiles(source, metadata, tokenizer, model_config, WindowTokenizer(tokenizer))


def _embeddings_shape(path: Path) -> tuple[int, int]:
    from safetensors import safe_open

    with safe_open(str(path / EMBEDDINGS_FILE), framework="numpy") as tensors:
        if "embeddings" not in tensors.keys():  # noqa: SIM118 (safe_open has no __contains__)
            msg = f"{path / EMBEDDINGS_FILE} has no 'embeddings' tensor"
            raise ModelError(msg)
        shape = tensors.get_slice("embeddings").get_shape()
    if len(shape) != 2:  # noqa: PLR2004
        msg = f"{path / EMBEDDINGS_FILE}: 'embeddings' must be 2-d, got shape {shape}"
        raise ModelError(msg)
    return int(shape[0]), int(shape[1])


class StaticBackend:
    """A static model behind the encoder's backend interface (no forward pass, no runtime).

    Args:
        files: the model's files (from :func:`static_model_files`).
        config: the encoder settings; those that choose a transformer runtime are refused.
        settings: the resolved settings (mean pooling; normalize and max_length apply).
    """

    def __init__(
        self, files: ModelFiles, config: EncoderConfig, settings: ResolvedSettings
    ) -> None:
        import torch

        refused = {
            "backend": config.backend != "auto",
            "quantize": config.quantize is not None,
            "dtype": config.dtype not in {"auto", "float32"},
            "device": config.device not in {"auto", "cpu"},
            "pooling": settings.pooling != "mean",
        }
        bad = [name for name, wrong in refused.items() if wrong]
        if bad:
            msg = (
                f"{files.source.name} is a static model (token vectors, averaged on the CPU): "
                f"{', '.join(f'{name}={getattr(config, name)!r}' for name in bad)} does not "
                "apply; leave backend, quantize, dtype, device and pooling at their defaults"
            )
            raise InputError(msg)
        self.files = files
        self.static = StaticModel(files.source.path)
        self.device: torch.device = torch.device("cpu")
        self.dtype: torch.dtype = torch.float32
        self.dimension: int = self.static.dimension
        self.model: Any = None
        self.runtime: Any = None

    def check_options(self, options: CallOptions) -> None:
        """Refuse chunking: a static model has no windows (its texts are not cut by position)."""
        if options.long_text == "chunk":
            msg = "a static model truncates long texts; long_text='chunk' needs a transformer"
            raise InputError(msg)

    def load_head(self, name: str) -> None:
        """A static model has no bge-m3 heads."""
        msg = f"a static model has no {name!r} head (bge-m3 outputs need the transformer)"
        raise InputError(msg)

    def forward(self, windows: list[list[int]]) -> Any:
        """Not available: a static model runs no transformer."""
        msg = "a static model has no forward pass (it averages token vectors)"
        raise InputError(msg)

    def encode_m3(
        self,
        items: list[str],
        settings: ResolvedSettings,
        options: CallOptions,
        *,
        dense: bool,
        sparse: bool = False,
        colbert: bool = False,
        tokenize: Callable[[list[str]], Tokenized],
        forward: Forward,
    ) -> M3Output:
        """Dense vectors of checked, instructed ``items`` (sparse and ColBERT are refused)."""
        from localembed.m3 import M3Output

        del tokenize, forward, options
        if sparse or colbert:
            self.load_head("sparse" if sparse else "colbert")
        vectors = self.static.encode(
            items, max_length=settings.max_length, normalize=settings.normalize
        )
        return M3Output(dense=vectors if dense else None)

    def token_embeddings(
        self,
        tokenized: Tokenized,
        settings: ResolvedSettings,
        options: CallOptions,
        forward: Forward,
    ) -> list[TokenEmbeddings]:
        """Not available: token vectors of a static model do not depend on context."""
        msg = "output='token_embeddings' needs a transformer, not a static model"
        raise InputError(msg)


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

    from localembed.encoder import get_encoder

    if dimension < 1:
        msg = f"dimension must be a positive int, got {dimension}"
        raise InputError(msg)
    if not 0 <= sif_coefficient < 1:
        msg = f"sif_coefficient must be in [0, 1), got {sif_coefficient}"
        raise InputError(msg)
    encoder = get_encoder(model=model, trust_remote_code=trust_remote_code)
    backend_tokenizer = encoder.tokenizer.backend_tokenizer
    vocab = backend_tokenizer.get_vocab(with_added_tokens=True)
    count = len(vocab)
    if sorted(vocab.values()) != list(range(count)):
        msg = f"{encoder.source.name}: token ids are not 0..{count - 1}; cannot distill it"
        raise ModelError(msg)
    model_vocab = int(getattr(encoder.model_config, "vocab_size", count) or count)
    if model_vocab < count:
        msg = (
            f"{encoder.source.name}: the tokenizer has {count} tokens, the model embeds "
            f"{model_vocab}; cannot distill it"
        )
        raise ModelError(msg)
    vectors = _token_vectors(encoder, count, batch_size, progress)
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = set(encoder.tokenizer.all_special_tokens)
    ordinary = np.array([t not in special and not UNUSED_TOKEN.fullmatch(t) for t in tokens])
    reduced, explained = _pca(vectors, min(dimension, vectors.shape[1]), fit_rows=ordinary)
    if sif_coefficient > 0:
        zipf = 1.0 / np.arange(2, count + 2)
        reduced *= (sif_coefficient / (sif_coefficient + zipf / zipf.sum()))[:, None]
    output.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": np.ascontiguousarray(reduced, dtype=np.float32)}, output / EMBEDDINGS_FILE)
    tokenizer = type(backend_tokenizer).from_str(backend_tokenizer.to_str())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.save(str(output / TOKENIZER_FILE))
    config = {
        "model_type": STATIC_MODEL_TYPE,
        "architectures": ["StaticModel"],
        "tokenizer_name": encoder.source.name,
        "apply_pca": reduced.shape[1],
        "apply_zipf": sif_coefficient > 0,
        "sif_coefficient": sif_coefficient or None,
        "hidden_dim": reduced.shape[1],
        "seq_length": 1_000_000,
        "max_length": DEFAULT_MAX_LENGTH,
        "normalize": True,
        "distilled_from": encoder.source.name,
        "distilled_by": "localembed distill",
    }
    (output / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return DistillReport(output, count, int(reduced.shape[1]), explained)


def _token_vectors(
    encoder: Any, count: int, batch_size: int, progress: Callable[[int, int], None] | None
) -> np.ndarray:
    """(count, width) float64: each token id's output states, averaged over its 3 positions."""
    tokenizer = encoder.tokenizer
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    vectors = np.empty((count, encoder.backend.dimension), dtype=np.float64)
    for first in range(0, count, batch_size):
        ids = range(first, min(first + batch_size, count))
        windows = [[i] if start is None else [start, i] for i in ids]
        windows = [w if end is None else [*w, end] for w in windows]
        batch = encoder.backend.forward(windows)
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
