"""The cross-encoder backend: (query, document) pairs -> two-segment windows -> runtime -> logits.

A cross-encoder (``AutoModelForSequenceClassification``: BERT, XLM-RoBERTa, ...) reads the
query and the document together as two segments. Pairs are truncated ``longest_first`` to
``max_length`` (sentence-transformers' ``CrossEncoder`` rule), batched by length within a
token budget with the out-of-memory split (:mod:`localembed.batching`) and run on a runtime
(:mod:`localembed.runtimes`: torch or ONNX). The result is the raw logits, as
:attr:`localembed.heads.Outputs.logits`; the reranker applies the activation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from localembed.batching import iter_batches, pad_right, padding_id
from localembed.errors import InputError
from localembed.forks import ForkSafeLock
from localembed.heads import Outputs
from localembed.runtimes import load_runtime, resolve_device, resolve_dtype
from localembed.windows import CHARS_PER_TOKEN_BOUND

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from localembed.backends.base import CallOptions, ModelFiles, TokenEmbeddings
    from localembed.config import RerankerConfig
    from localembed.runtimes import Runtime
    from localembed.windows import Tokenized

__all__ = ["CrossEncoderBackend", "TokenizedPairs"]

logger = logging.getLogger("localembed")


@dataclass(frozen=True)
class TokenizedPairs:
    """Pairs as model-ready token rows (no padding)."""

    ids: list[list[int]]
    """Token ids of each pair: [CLS] query [SEP] document [SEP] (the model's template)."""
    type_ids: list[list[int]] | None
    """Segment ids (0 query, 1 document) where the model takes them, else None."""
    truncated: int
    """Pairs cut to max_length."""
    truncated_rows: tuple[int, ...] = ()
    """Indices of the pairs cut to max_length (ascending)."""


class CrossEncoderBackend:
    """A sequence-classification model on a runtime: pairs in, logits out.

    Args:
        files: the model's files.
        config: the reranker's settings (device, dtype, backend, quantize).
    """

    capabilities = frozenset({"logits"})
    """Raw classification logits of (query, document) pairs."""

    def __init__(self, files: ModelFiles, config: RerankerConfig) -> None:
        self.files = files
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.num_labels: int = int(files.model_config.num_labels or 1)
        """Outputs of the classification head (1 for rerankers)."""
        self.dimension = self.num_labels
        tokenizer = files.tokenizer
        self._pad_id = padding_id(tokenizer)
        self._segments = "token_type_ids" in tokenizer.model_input_names
        self._forward_lock = ForkSafeLock()
        self.runtime: Runtime
        self.model: PreTrainedModel | None
        self.runtime, self.model = load_runtime(
            files.metadata.transformer_path,
            files.model_config,
            config,
            backend=config.backend,
            device=self.device,
            dtype=self.dtype,
            auto_class="AutoModelForSequenceClassification",
            output="logits",
        )

    def check_options(self, options: CallOptions) -> None:
        """Every option works here."""

    def tokenize_pairs(
        self, queries: list[str], documents: list[str], max_length: int
    ) -> TokenizedPairs:
        """Tokenize pairs as two segments, truncated ``longest_first`` to ``max_length``.

        Over-long pairs are counted and warned about (one warning per call).
        """
        limit = max_length * CHARS_PER_TOKEN_BOUND
        cut_queries = [text[:limit] for text in queries]
        cut_documents = [text[:limit] for text in documents]
        # One token more than max_length shows which pairs overflow; those are tokenized
        # again at max_length (the truncation sentence-transformers applies).
        ids, type_ids = self._encode(cut_queries, cut_documents, max_length + 1)
        over = [i for i, row in enumerate(ids) if len(row) > max_length]
        cut = [
            i
            for i, row in enumerate(ids)
            if len(row) <= max_length and max(len(queries[i]), len(documents[i])) > limit
        ]
        if cut:  # a cut text that no longer overflows (extremely long "words"): read it whole
            whole = self._encode([queries[i] for i in cut], [documents[i] for i in cut], None)
            self._replace(ids, type_ids, cut, whole)
            over = sorted({*over, *(i for i in cut if len(ids[i]) > max_length)})
        if over:
            again = self._encode(
                [cut_queries[i] for i in over], [cut_documents[i] for i in over], max_length
            )
            self._replace(ids, type_ids, over, again)
            logger.warning(
                "%d of %d pairs were longer than %d tokens and were truncated",
                len(over),
                len(ids),
                max_length,
            )
        return TokenizedPairs(
            ids=ids, type_ids=type_ids, truncated=len(over), truncated_rows=tuple(over)
        )

    @staticmethod
    def _replace(
        ids: list[list[int]],
        type_ids: list[list[int]] | None,
        rows: list[int],
        new: tuple[list[list[int]], list[list[int]] | None],
    ) -> None:
        for position, index in enumerate(rows):
            ids[index] = new[0][position]
            if type_ids is not None and new[1] is not None:
                type_ids[index] = new[1][position]

    def _encode(
        self, queries: list[str], documents: list[str], max_length: int | None
    ) -> tuple[list[list[int]], list[list[int]] | None]:
        encoded = self.files.tokenizer(
            queries,
            documents,
            truncation="longest_first" if max_length is not None else False,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=self._segments,
        )
        ids = [list(row) for row in encoded["input_ids"]]
        type_ids = [list(row) for row in encoded["token_type_ids"]] if self._segments else None
        return ids, type_ids

    def forward(self, rows: list[list[int]], type_ids: list[list[int]] | None) -> torch.Tensor:
        """Pad ``rows`` on the right and run the model once: (rows, labels) logits."""
        input_ids, attention_mask = pad_right(rows, self._pad_id, self.device)
        segments = None if type_ids is None else pad_right(type_ids, 0, self.device)[0]
        with self._forward_lock:
            return self.runtime(input_ids, attention_mask, segments)

    def score_pairs(self, pairs: TokenizedPairs, options: CallOptions) -> np.ndarray:
        """The (pairs, labels) float32 logits of tokenized pairs, in planned batches."""
        scores = np.empty((len(pairs.ids), self.num_labels), dtype=np.float32)
        type_ids = pairs.type_ids

        def run(indices: list[int]) -> np.ndarray:
            logits = self.forward(
                [pairs.ids[i] for i in indices],
                None if type_ids is None else [type_ids[i] for i in indices],
            )
            array: np.ndarray = logits.float().cpu().numpy()
            return array

        for indices, logits in iter_batches(
            [len(ids) for ids in pairs.ids],
            run,
            batch_size=options.batch_size,
            max_batch_tokens=options.max_batch_tokens,
            device=self.device,
            max_length=options.max_length,
            show_progress=options.show_progress,
            description="reranking",
            unit="pair",
        ):
            scores[indices] = logits
        return scores

    def tokenize(self, items: list[str], options: CallOptions) -> Tokenized:
        """Not available: a cross-encoder reads pairs (:meth:`tokenize_pairs`)."""
        msg = "a cross-encoder reads (query, document) pairs: use tokenize_pairs"
        raise InputError(msg)

    def encode(
        self, items: Sequence[tuple[str, str]], outputs: Sequence[str], options: CallOptions
    ) -> Outputs:
        """The logits of checked (query, document) pairs: ``Outputs(logits=...)``."""
        if set(outputs) != {"logits"}:
            msg = f"a cross-encoder makes logits only, not {', '.join(outputs)}"
            raise InputError(msg)
        queries = [query for query, _ in items]
        documents = [document for _, document in items]
        pairs = self.tokenize_pairs(queries, documents, options.max_length)
        return Outputs(logits=self.score_pairs(pairs, options))

    def token_embeddings(self, tokenized: Tokenized, options: CallOptions) -> list[TokenEmbeddings]:
        """Not available: a cross-encoder returns logits."""
        msg = "a cross-encoder returns scores, not token embeddings"
        raise InputError(msg)
