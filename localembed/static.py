"""Static models: a vector per token; a text's vector is the mean of its tokens' vectors.

``localembed distill`` (:mod:`localembed.distill`) writes them and ``get_encoder(model=DIR)``
loads them (:mod:`localembed.backends.static`). No transformer runs when embedding: much
faster than the model they come from, and less accurate (a token's vector cannot depend on
its context). A different trade-off, never the default.

The format is model2vec's (``model2vec.StaticModel.from_pretrained(DIR)`` loads it):
``model.safetensors`` holding an ``embeddings`` matrix (one row per token id; optional
``weights`` and ``mapping`` of vocabulary-quantized models), ``tokenizer.json`` and
``config.json`` with ``model_type`` "model2vec". :class:`StaticModel` encodes by model2vec's
``StaticModel.encode`` rule: no special tokens; the text first cut to ``max_length`` times the
median token length in characters, then to ``max_length`` tokens; unknown tokens dropped; the
mean of the token vectors (zeros for a text without tokens); normalized when asked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from localembed.errors import ModelError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tokenizers import Tokenizer

STATIC_MODEL_TYPE = "model2vec"
"""``model_type`` in a static model's config.json."""
EMBEDDINGS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
DEFAULT_MAX_LENGTH = 512
"""Tokens per text when the config names none (model2vec's default)."""


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


def read_static_config(path: Path) -> dict[str, Any]:
    """A static model's config.json."""
    config: dict[str, Any] = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    return config


def static_max_length(config: dict[str, Any]) -> int | None:
    """Tokens kept per text: the config's ``max_length`` (None: no limit), else 512."""
    value = config.get("max_length", DEFAULT_MAX_LENGTH)
    return None if value is None else int(value)


def embeddings_shape(path: Path) -> tuple[int, int]:
    """(tokens, dimension) of a static model's embedding matrix, read without loading it.

    Raises:
        ModelError: the file has no 2-d ``embeddings`` tensor.
    """
    from safetensors import safe_open

    with safe_open(str(path / EMBEDDINGS_FILE), framework="numpy") as tensors:
        if "embeddings" not in tensors.keys():  # noqa: SIM118 (safe_open has no __contains__)
            msg = f"{path / EMBEDDINGS_FILE} has no 'embeddings' tensor"
            raise ModelError(msg)
        shape = tensors.get_slice("embeddings").get_shape()
    if len(shape) != 2:
        msg = f"{path / EMBEDDINGS_FILE}: 'embeddings' must be 2-d, got shape {shape}"
        raise ModelError(msg)
    return int(shape[0]), int(shape[1])


class StaticModel:
    """A static model's token vectors and tokenizer, and model2vec's encoding rule.

    Args:
        path: the model's directory (see :func:`is_static_model`).

    Raises:
        ModelError: the files do not fit together (rows against tokens, a non-float matrix).
    """

    def __init__(self, path: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.path = path
        self.config = read_static_config(path)
        tensors = load_file(str(path / EMBEDDINGS_FILE))
        embeddings = tensors.get("embeddings")
        if embeddings is None or embeddings.ndim != 2:
            msg = f"{path / EMBEDDINGS_FILE} has no 2-d 'embeddings' tensor"
            raise ModelError(msg)
        if not (np.issubdtype(embeddings.dtype, np.floating) or embeddings.dtype == np.int8):
            msg = f"{path / EMBEDDINGS_FILE}: 'embeddings' is {embeddings.dtype}, not float"
            raise ModelError(msg)
        self.embeddings: np.ndarray = embeddings.astype(np.float32, copy=False)
        self.weights: np.ndarray | None = tensors.get("weights")
        """Per-token scale (vocabulary-quantized models), or None."""
        self.mapping: np.ndarray | None = tensors.get("mapping")
        """Token id -> row of ``embeddings`` (vocabulary-quantized models), or None."""
        self.tokenizer: Tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()  # cut by hand: the cut is then counted
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
        self.max_length = static_max_length(self.config)
        self.normalize = bool(self.config.get("normalize", False))

    @property
    def dimension(self) -> int:
        """Vector width."""
        return int(self.embeddings.shape[1])

    def token_ids(
        self, texts: Sequence[str], max_length: int | None
    ) -> tuple[list[list[int]], int]:
        """Each text's token ids (no special tokens, cut, unknown ids dropped); how many cut."""
        if max_length is not None:
            characters = max_length * self.median_token_length
            texts = [text[:characters] for text in texts]
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        rows, cut = [], 0
        for encoding in encodings:
            ids = encoding.ids
            if max_length is not None and len(ids) > max_length:
                ids, cut = ids[:max_length], cut + 1
            rows.append([i for i in ids if i != self.unknown_id])
        return rows, cut

    def encode(
        self, texts: Sequence[str], *, max_length: int | None, normalize: bool
    ) -> tuple[np.ndarray, int]:
        """(len(texts), dimension) float32 mean token vectors; how many texts were cut."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        rows, cut = self.token_ids(texts, max_length)
        for row, ids in enumerate(rows):
            if not ids:
                continue
            vectors = self.embeddings[ids if self.mapping is None else self.mapping[ids]]
            if self.weights is not None:
                vectors = vectors * self.weights[ids][:, None]
            out[row] = vectors.mean(axis=0)
        if normalize:
            out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-32
        return out, cut


def _unknown_id(tokenizer: Tokenizer) -> int | None:
    token = getattr(tokenizer.model, "unk_token", None)
    if token is not None:
        found = tokenizer.token_to_id(str(token))
        return None if found is None else int(found)
    unknown = json.loads(tokenizer.to_str())["model"].get("unk_id")  # Unigram
    return None if unknown is None else int(unknown)
