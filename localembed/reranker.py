"""LocalReranker: score (query, document) pairs with a local cross-encoder, or with bge-m3.

A cross-encoder (``AutoModelForSequenceClassification``: BERT, XLM-RoBERTa, ...) reads the
query and the document together as two segments and its classification head gives the
relevance. It goes through the core's stages: model location and safety checks
(:mod:`localembed.loading`, :mod:`localembed.transformers_files`), input checks,
length-sorted token-budget batches with the out-of-memory split (:mod:`localembed.batching`)
and the torch / ONNX runtimes (:mod:`localembed.runtimes`). The arithmetic is
sentence-transformers' ``CrossEncoder``: pairs truncated ``longest_first`` to ``max_length``,
the model's logits, then its default activation (sigmoid for one label, else none).

bge-m3 has no classification head; it reranks by the mix of its dense, sparse and ColBERT
scores from one pass over each text (:func:`localembed.m3.hybrid_score`), as FlagEmbedding's
``BGEM3FlagModel.compute_score`` does.

``get_reranker`` returns one shared instance per configuration (the rule of
``get_encoder``).

Example:
    >>> from localembed import get_reranker
    >>> reranker = get_reranker(model="cross-encoder/ms-marco-MiniLM-L6-v2")  # doctest: +SKIP
    >>> reranker.rerank("Where is Paris?", ["Paris is in France.", "Bananas."])  # doctest: +SKIP
    [(0, 9.1), (1, -11.2)]

"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from localembed.backends import load_backend, read_model_files
from localembed.backends.base import CallOptions
from localembed.backends.cross_encoder import CrossEncoderBackend, TokenizedPairs
from localembed.config import ModelOptions, RerankerConfig
from localembed.errors import InputError, InputTypeError
from localembed.heads import HEAD_FILES
from localembed.loading import locate_model
from localembed.model_errors import MissingModelFileError, ModelFileError
from localembed.presets import find_preset
from localembed.runtimes import resolve_device, resolve_dtype
from localembed.settings import model_length_limit, resolve_max_length
from localembed.sharing import SharedModels
from localembed.st_metadata import read_sentence_transformers_metadata
from localembed.texts import check_text, check_texts, ordered_items
from localembed.transformers_files import check_model_files

if TYPE_CHECKING:
    import torch

    from localembed.encoder import LocalEncoder

__all__ = [
    "ACTIVATIONS",
    "LocalReranker",
    "RerankerConfig",
    "TokenizedPairs",
    "check_pairs",
    "clear_reranker_cache",
    "get_reranker",
]

ACTIVATIONS = ("auto", "sigmoid", "none")
"""Values of the ``activation`` option."""

_SAVED_ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "none",
    "torch.nn.Identity": "none",
}
"""sentence-transformers' saved activation paths that localembed applies."""


def check_pairs(pairs: Any) -> tuple[list[str], list[str]]:
    """Split ``pairs`` into queries and documents, or raise TypeError naming the bad pair.

    Each pair is a tuple or list of two str; a bare str, a mapping or a set is refused (as
    :func:`~localembed.encoder.check_texts` refuses them), and invalid unicode is repaired
    the same way.

    Example:
        >>> check_pairs([("q", "d1"), ["q", "d2"]])
        (['q', 'q'], ['d1', 'd2'])
        >>> check_pairs([("q", "d"), ("q", 3)])
        Traceback (most recent call last):
        ...
        localembed.errors.InputTypeError: pair 1: the document is int, not str

    """
    items = ordered_items(pairs, "(query, document) pairs")
    queries: list[str] = []
    documents: list[str] = []
    for index, pair in enumerate(items):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            msg = f"pair {index} is {type(pair).__name__}, not a (query, document) pair"
            raise InputTypeError(msg)
        for part, value in zip(("query", "document"), pair, strict=True):
            if not isinstance(value, str):
                msg = f"pair {index}: the {part} is {type(value).__name__}, not str"
                raise InputTypeError(msg)
        queries.append(pair[0])
        documents.append(pair[1])
    return check_texts(queries), check_texts(documents)


def _saved_activation(directory: Path, model_config: Any) -> str | None:
    """The activation a sentence-transformers CrossEncoder saved with the model, if any."""
    path = None
    saved = directory / "config_sentence_transformers.json"
    if saved.is_file():
        path = json.loads(saved.read_text(encoding="utf-8")).get("activation_fn")
    settings = getattr(model_config, "sentence_transformers", None)
    if path is None and isinstance(settings, dict):
        path = settings.get("activation_fn")
    if path is None:
        path = getattr(model_config, "sbert_ce_default_activation_function", None)
    if path is None:
        return None
    if path not in _SAVED_ACTIVATIONS:
        msg = (
            f"{directory}: the model's saved activation {path!r} is not one localembed applies "
            f"(Sigmoid or Identity); pass activation='none' for raw logits or 'sigmoid'"
        )
        raise ModelFileError(msg)
    return _SAVED_ACTIVATIONS[str(path)]


class LocalReranker:
    """A loaded cross-encoder (or bge-m3) that scores (query, document) pairs.

    Use :func:`get_reranker` rather than this constructor, so that equal settings share
    one model.
    """

    def __init__(self, config: RerankerConfig, *, encoder: LocalEncoder | None = None) -> None:
        """Load the reranker ``config`` names.

        ``encoder``: with bge-m3 scoring, score with this loaded encoder of the same model
        (a server's served bge-m3) instead of the shared encoder for ``config``'s options, so
        that no second copy of the weights is loaded.
        """
        self.config = config
        self.source = locate_model(config.model, allow_pickle_weights=config.allow_pickle_weights)
        metadata = read_sentence_transformers_metadata(self.source.path)
        self.path: Path = metadata.transformer_path
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.sources: dict[str, str] = {}
        self.scoring = self._scoring()
        self.encoder: LocalEncoder | None = None
        """bge-m3 scoring: the shared encoder that computes its three outputs."""
        self.backend: CrossEncoderBackend | None = None
        """Cross-encoder scoring: the loaded model (pairs -> logits)."""
        if self.scoring == "bge-m3":
            self._init_m3(encoder)
            return
        if encoder is not None:
            msg = "an encoder is only used with bge-m3 scoring"
            raise InputError(msg)
        files = read_model_files(
            config,
            source=self.source,
            what="the reranker (only a Transformer with its classification head)",
        )
        self.tokenizer = files.tokenizer
        self.model_config = files.model_config
        self.num_labels: int = int(self.model_config.num_labels or 1)
        """Outputs of the classification head (1 for rerankers)."""
        preset = find_preset(*self._names(self.model_config), kind="reranker")
        self.max_length, self.sources["max_length"] = resolve_max_length(
            config.max_length,
            saved=metadata.max_seq_length,
            preset=preset,
            limit=model_length_limit(self.tokenizer, self.model_config),
        )
        self.activation = self._resolve_activation()
        self.backend = load_backend(files, config)

    @property
    def runtime(self) -> Any:
        """The runtime of the cross-encoder (None with bge-m3 scoring)."""
        return None if self.backend is None else self.backend.runtime

    @property
    def model(self) -> Any:
        """The transformers model (None with bge-m3 scoring or the ONNX runtime)."""
        return None if self.backend is None else self.backend.model

    # -- settings -------------------------------------------------------------------------

    def _names(self, model_config: Any = None) -> list[str]:
        names = [self.source.name, str(self.source.path)]
        name_or_path = getattr(model_config, "_name_or_path", "")
        if name_or_path:
            names.append(str(name_or_path))
        return names

    def _scoring(self) -> str:
        if self.config.scoring != "auto":
            self.sources["scoring"] = "argument"
            return self.config.scoring
        saved = check_model_files(self.path, trust_remote_code=self.config.trust_remote_code)
        architectures = [str(name) for name in saved.get("architectures") or []]
        if any(name.endswith("ForSequenceClassification") for name in architectures):
            self.sources["scoring"] = "classification head"
            return "cross-encoder"
        heads = list(HEAD_FILES.values())
        if all((self.path / name).is_file() for name in heads):
            self.sources["scoring"] = "bge-m3 heads"
            return "bge-m3"
        msg = (
            f"{self.source.name!r} is not a reranker: config.json names no "
            f"*ForSequenceClassification architecture ({', '.join(architectures) or 'none'}) "
            f"and there are no bge-m3 heads ({', '.join(heads)}); use a "
            f"cross-encoder such as BAAI/bge-reranker-v2-m3 or "
            f"cross-encoder/ms-marco-MiniLM-L6-v2, or pass scoring='cross-encoder' or 'bge-m3'"
        )
        raise InputError(msg)

    def _resolve_activation(self) -> str:
        if self.config.activation != "auto":
            self.sources["activation"] = "argument"
            return self.config.activation
        saved = _saved_activation(self.path, self.model_config)
        if saved is not None:
            self.sources["activation"] = "sentence-transformers"
            return saved
        preset = find_preset(*self._names(self.model_config), kind="reranker")
        if preset and preset.activation:
            self.sources["activation"] = f"preset {preset.family}"
            return preset.activation
        self.sources["activation"] = "labels"
        return "sigmoid" if self.num_labels == 1 else "none"

    def _init_m3(self, encoder: LocalEncoder | None) -> None:
        from localembed.encoder import get_encoder

        config = self.config
        if config.activation != "auto":
            msg = "bge-m3 scores are similarities, not logits: leave activation='auto'"
            raise InputError(msg)
        missing = [n for n in HEAD_FILES.values() if not (self.path / n).is_file()]
        if missing:
            msg = f"scoring='bge-m3' needs {', '.join(missing)} in {self.path}"
            raise MissingModelFileError(msg)
        if encoder is None:
            options = {
                name: getattr(config, name)
                for name in config.model_fields_set & set(ModelOptions.model_fields)
            }
            options["model"] = str(self.source.path)
            if "backend" in config.model_fields_set:
                options["backend"] = config.backend
            encoder = get_encoder(**options)
        elif encoder.source.path != self.source.path:
            msg = f"the encoder runs {encoder.source.path}, not this reranker's {self.source.path}"
            raise InputError(msg)
        self.encoder = encoder
        self.tokenizer = self.encoder.tokenizer
        self.model_config = self.encoder.model_config
        self.num_labels = 1
        self.max_length = self.encoder.settings.max_length
        self.sources["max_length"] = self.encoder.settings.sources["max_length"]
        self.activation = "none"
        self.sources["activation"] = "bge-m3 similarity"

    def describe(self, *, paths: bool = False) -> dict[str, Any]:
        """The resolved settings, as ``localembed info`` prints them.

        ``path`` is the model folder as the user named it (a hub id, the embedded default
        model, a directory as given), never the absolute file-system path unless ``paths``
        (``localembed info --paths``): a server's ``/info`` does not disclose its files.
        """
        from localembed.model_origins import display_path

        return {
            "model": self.source.name,
            "path": str(self.source.path) if paths else display_path(self.source.path),
            "architecture": self.model_config.model_type,
            "scoring": self.scoring,
            "labels": self.num_labels,
            "activation": self.activation,
            "max_length": self.max_length,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "sources": dict(self.sources),
        }

    # -- scoring --------------------------------------------------------------------------

    def score(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int | None = None
    ) -> np.ndarray:
        """Relevance of each (query, document) pair; row i belongs to pairs[i].

        Args:
            pairs: (query, document) tuples or two-item lists; an empty list gives an empty
                array without a model call.
            batch_size: pairs per forward pass; default: the configured ``batch_size``.

        Returns:
            float32 scores: shape (len(pairs),) for a one-label model (rerankers), else
            (len(pairs), labels). With the sigmoid activation each is in [0, 1].

        Raises:
            TypeError: ``pairs`` is not a list of (str, str) pairs; the message names the
                first bad pair.
            NonFiniteEmbeddingError: the model gave NaN or infinite scores (names the pairs).
        """
        queries, documents = check_pairs(pairs)
        if self.encoder is not None:  # encodes each distinct text once
            return self._m3_scores(queries, documents)
        # Each distinct pair is scored once: equal pairs get equal scores (in different
        # batches they could differ in the last bits, and ties would not keep input order).
        distinct: dict[tuple[str, str], int] = {}
        where = np.array(
            [
                distinct.setdefault(pair, len(distinct))
                for pair in zip(queries, documents, strict=True)
            ],
            dtype=np.intp,
        )
        queries, documents = [q for q, _ in distinct], [d for _, d in distinct]
        if not queries:
            shape = (0,) if self.num_labels == 1 else (0, self.num_labels)
            return np.empty(shape, dtype=np.float32)
        backend = self._cross_encoder("score")
        logits = backend.score_pairs(self.tokenize(queries, documents), self._options(batch_size))
        if self.activation == "sigmoid":
            import torch

            logits = torch.from_numpy(logits).sigmoid().numpy()
        logits = logits[where]
        bad = np.flatnonzero(~np.isfinite(logits).all(axis=1)).tolist()
        if bad:
            from localembed.faults import NonFiniteEmbeddingError

            dtype = str(self.dtype).removeprefix("torch.")
            raise NonFiniteEmbeddingError(bad, count=len(logits), dtype=dtype, what="pairs")
        return logits[:, 0] if self.num_labels == 1 else logits

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        *,
        batch_size: int | None = None,
    ) -> list[tuple[int, float]]:
        """The documents' indices and scores, most relevant first (ties keep input order).

        Args:
            query: the query.
            documents: the candidate documents; an empty list gives [] without a model call.
            top_n: keep this many (None: all).
            batch_size: pairs per forward pass; default: the configured ``batch_size``.

        Returns:
            ``[(index into documents, score), ...]`` sorted by score, highest first.

        Raises:
            TypeError: the query is not a str, ``documents`` is a bare str or not a list of
                str (the message names the first bad index).
            ValueError: a negative ``top_n``, or a model with several labels.
        """
        query = check_text(query, "query")
        items = check_texts(documents)
        if top_n is not None and (isinstance(top_n, bool) or top_n < 0):
            msg = f"top_n must be None or a count >= 0, got {top_n!r}"
            raise InputError(msg)
        if self.num_labels != 1:
            msg = (
                f"rerank needs a one-label model; {self.source.name} has {self.num_labels} labels: "
                f"use score(pairs) for its per-label scores"
            )
            raise InputError(msg)
        if not items or top_n == 0:
            return []
        scores = self.score([(query, document) for document in items], batch_size=batch_size)
        order = np.argsort(-scores, kind="stable")[:top_n]
        return [(int(index), float(scores[index])) for index in order]

    # -- stages ---------------------------------------------------------------------------

    def _cross_encoder(self, what: str) -> CrossEncoderBackend:
        if self.backend is None:
            msg = (
                f"{what}: scoring='bge-m3' embeds queries and documents apart (no pair "
                f"windows); use reranker.encoder for bge-m3's tokens and outputs"
            )
            raise InputError(msg)
        return self.backend

    def _options(self, batch_size: int | None) -> CallOptions:
        return CallOptions(
            batch_size=batch_size or self.config.batch_size,
            max_batch_tokens=self.config.max_batch_tokens,
            long_text="truncate",
            max_length=self.max_length,
        )

    def tokenize(self, queries: list[str], documents: list[str]) -> TokenizedPairs:
        """Tokenize pairs as two segments, truncated ``longest_first`` to ``max_length``.

        Over-long pairs are counted and warned about (one warning per call).

        Raises:
            InputError: a bge-m3 reranker, which reads no pairs.
        """
        return self._cross_encoder("tokenize").tokenize_pairs(queries, documents, self.max_length)

    def forward(self, rows: list[list[int]], type_ids: list[list[int]] | None) -> torch.Tensor:
        """Pad ``rows`` on the right and run the model once: (rows, labels) logits.

        Raises:
            InputError: a bge-m3 reranker, which has no classification forward pass.
        """
        return self._cross_encoder("forward").forward(rows, type_ids)

    def _m3_scores(self, queries: list[str], documents: list[str]) -> np.ndarray:
        """bge-m3: each query and document encoded once (dense, sparse, ColBERT), then mixed."""
        from localembed.heads import Outputs
        from localembed.m3 import hybrid_score

        assert self.encoder is not None
        scores = np.empty(len(queries), dtype=np.float32)
        if not queries:
            return scores
        unique_queries = list(dict.fromkeys(queries))
        unique_documents = list(dict.fromkeys(documents))
        encoded_queries = self.encoder.encode_m3(
            unique_queries, dense=True, sparse=True, colbert=True
        )
        encoded_documents = self.encoder.encode_m3(
            unique_documents, dense=True, sparse=True, colbert=True
        )
        query_row = {text: i for i, text in enumerate(unique_queries)}
        document_row = {text: i for i, text in enumerate(unique_documents)}

        def rows(output: Outputs, picked: list[int]) -> Outputs:
            assert output.dense is not None and output.sparse is not None
            assert output.colbert is not None
            return Outputs(
                dense=output.dense[picked],
                sparse=[output.sparse[i] for i in picked],
                colbert=[output.colbert[i] for i in picked],
            )

        by_query: dict[int, list[int]] = {}
        for index, query in enumerate(queries):
            by_query.setdefault(query_row[query], []).append(index)
        for query_index, pair_indices in by_query.items():
            picked = [document_row[documents[i]] for i in pair_indices]
            mixed = hybrid_score(
                rows(encoded_queries, [query_index]),
                rows(encoded_documents, picked),
                weights=self.config.m3_weights,
            )[self.config.m3_score]
            scores[pair_indices] = mixed[0]
        return scores


_rerankers: SharedModels[LocalReranker] = SharedModels()


def get_reranker(config: RerankerConfig | None = None, /, **options: Any) -> LocalReranker:
    """The shared reranker for these settings: loaded on first use, then the same instance.

    Takes a :class:`RerankerConfig` (or an adapter, which is one), keyword options (the
    same names), or both (options override the config). Thread-safe.

    Example:
        >>> from localembed import get_reranker
        >>> a = get_reranker(model="BAAI/bge-reranker-base")  # doctest: +SKIP
        >>> a is get_reranker(model="BAAI/bge-reranker-base")  # doctest: +SKIP
        True

    """
    return _rerankers.for_config(RerankerConfig, config, options, LocalReranker)


def release_reranker(reranker: LocalReranker) -> None:
    """Forget ``reranker`` (and a bge-m3 reranker's encoder) in the shared caches."""
    _rerankers.forget(reranker)
    if reranker.encoder is not None:
        from localembed.encoder import release_encoder

        release_encoder(reranker.encoder)


def clear_reranker_cache() -> None:
    """Forget every shared reranker (their memory is freed once nothing else holds them)."""
    _rerankers.clear()
