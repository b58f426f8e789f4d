"""The transformers backend: texts -> windows -> planned batches -> runtime -> heads -> rows.

Each step is a stage: windows (:mod:`localembed.windows`), batches (:mod:`localembed.batching`,
with the out-of-memory split), a runtime (:mod:`localembed.runtimes`: torch or ONNX), then
the heads (:mod:`localembed.heads`: dense pooling, and the sparse / ColBERT heads a model
saves next to its weights). Over-long texts embedded in windows are combined per text
(:meth:`localembed.heads.Outputs.combine`). Nothing here calls back into the encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from localembed.backends.base import CallOptions, ModelFiles, TokenEmbeddings
from localembed.batching import ForwardBatch, iter_batches, pad_right, padding_id, plan_batches
from localembed.batching import token_budget as device_budget
from localembed.errors import InputError
from localembed.forks import ForkSafeLock
from localembed.heads import HEAD_FILES, Outputs, batch_outputs, missing_heads_message, read_head
from localembed.model_errors import MissingModelFileError
from localembed.runtimes import load_runtime, resolve_device, resolve_dtype

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from localembed.config import EncoderConfig
    from localembed.runtimes import Runtime
    from localembed.windows import Tokenized

__all__ = ["TRUNCATED_ROWS_NAMED", "TransformerBackend", "warn_truncated"]

logger = logging.getLogger("localembed")

TRUNCATED_ROWS_NAMED = 5
"""The truncation warning names the first this many truncated rows."""

T = TypeVar("T")

_BASE_CAPABILITIES = frozenset({"dense", "token_embeddings", "windows", "chunk", "token_budget"})


def warn_truncated(tokenized: Tokenized, max_length: int) -> None:
    """One warning per call: how many texts were cut to ``max_length``, and which."""
    if not tokenized.truncated:
        return
    rows = tokenized.truncated_rows
    named = ", ".join(map(str, rows[:TRUNCATED_ROWS_NAMED]))
    more = ", ..." if len(rows) > TRUNCATED_ROWS_NAMED else ""
    logger.warning(
        "%d of %d texts were longer than %d tokens and were truncated (rows %s%s); "
        "split documents into chunks that fit with LocalEmbeddings.text_splitter() "
        "(LangChain) or LocalEmbedding.node_parser() (LlamaIndex), or embed them "
        "whole with long_text='chunk'",
        tokenized.truncated,
        tokenized.count,
        max_length,
        named,
        more,
    )


class TransformerBackend:
    """A transformers model on a runtime (torch or ONNX) behind the stages.

    Args:
        files: the model's files.
        config: the settings the weights are loaded with (device, dtype, backend, quantize).
    """

    def __init__(self, files: ModelFiles, config: EncoderConfig) -> None:
        self.files = files
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.dimension: int = int(files.model_config.hidden_size)
        self.pad_id = padding_id(files.tokenizer)
        self._forward_lock = ForkSafeLock()
        self._heads: dict[str, torch.nn.Linear] = {}
        self._heads_lock = ForkSafeLock()
        saved = {n for n, f in HEAD_FILES.items() if (files.source.path / f).is_file()}
        self.capabilities: frozenset[str] = _BASE_CAPABILITIES | saved
        """What this backend makes: dense, token embeddings, windows, and the saved heads."""
        self.runtime: Runtime
        self.model: PreTrainedModel | None
        self.runtime, self.model = load_runtime(
            files.metadata.transformer_path,
            files.model_config,
            config,
            backend=config.backend,
            device=self.device,
            dtype=self.dtype,
        )

    def check_options(self, options: CallOptions) -> None:
        """Every option works here."""

    # -- tokenize, plan, run ----------------------------------------------------------------

    def tokenize(self, items: list[str], options: CallOptions) -> Tokenized:
        """Checked, instructed ``items`` -> windows; over-long texts counted and warned about."""
        tokenized = self.files.windows(
            items, max_length=options.max_length, long_text=options.long_text
        )
        warn_truncated(tokenized, options.max_length)
        return tokenized

    def plan(self, lengths: Sequence[int], options: CallOptions) -> list[list[int]]:
        """Window indices grouped into batches (see :func:`localembed.batching.plan_batches`)."""
        budget = device_budget(options.max_batch_tokens, self.device)
        return plan_batches(lengths, options.batch_size, budget)

    def forward(self, windows: list[list[int]]) -> ForwardBatch:
        """Pad ``windows`` on the right and run the transformer once (no gradients)."""
        input_ids, attention_mask = pad_right(windows, self.pad_id, self.device)
        with self._forward_lock:
            hidden = self.runtime(input_ids, attention_mask)
        return ForwardBatch(hidden=hidden, attention_mask=attention_mask, input_ids=input_ids)

    def batches(
        self,
        ids: list[list[int]],
        options: CallOptions,
        heads: Callable[[list[int], ForwardBatch], T],
    ) -> Iterator[tuple[list[int], T]]:
        """Run ``ids`` in planned batches; yield each batch's window indices and ``heads`` of it.

        A batch that runs out of memory (in the forward pass or the heads) is split and run
        again (see :func:`localembed.batching.iter_batches`), so the indices of a planned
        batch may come in smaller groups; each window comes exactly once.
        """
        return iter_batches(
            [len(window) for window in ids],
            lambda indices: heads(indices, self.forward([ids[i] for i in indices])),
            batch_size=options.batch_size,
            max_batch_tokens=options.max_batch_tokens,
            device=self.device,
            max_length=options.max_length,
            show_progress=options.show_progress,
        )

    def dense_batches(
        self, ids: list[list[int]], normalize: Sequence[bool], options: CallOptions
    ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Dense rows of ``ids`` batch by batch.

        ``normalize[i]`` says whether window i is normalized here (when ``options.normalize``
        is on): a window of a chunked text is normalized only once combined.
        """
        import torch

        chosen = torch.tensor(list(normalize), dtype=torch.bool)

        def dense(indices: list[int], batch: ForwardBatch) -> np.ndarray:
            wanted = chosen[indices] if options.normalize else False
            rows, _, _ = batch_outputs(
                batch, pooling=options.pooling, normalize=False, normalize_dense=wanted
            )
            assert rows is not None
            return rows

        return self.batches(ids, options, dense)

    # -- heads ------------------------------------------------------------------------------

    def load_head(self, name: str) -> torch.nn.Linear:
        """The ``"sparse"`` or ``"colbert"`` head, read on first use and kept.

        Raises:
            InputError: an unknown head name.
            MissingModelFileError: the model has no such head file (not a bge-m3 model).
        """
        if name not in HEAD_FILES:
            msg = f"unknown head {name!r}; valid: {', '.join(HEAD_FILES)}"
            raise InputError(msg)
        with self._heads_lock:
            head = self._heads.get(name)
            if head is None:
                source = self.files.source
                path = source.path / HEAD_FILES[name]
                if not path.is_file():
                    raise MissingModelFileError(missing_heads_message(source, [HEAD_FILES[name]]))
                head = read_head(path, self.dimension, device=self.device, dtype=self.dtype)
                self._heads[name] = head
            return head

    def unused_token_ids(self) -> frozenset[int]:
        """Token ids left out of lexical weights: FlagEmbedding drops cls, eos, pad and unk."""
        tokenizer = self.files.tokenizer
        ids = (
            tokenizer.cls_token_id,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
            tokenizer.unk_token_id,
        )
        return frozenset(int(i) for i in ids if i is not None)

    # -- the protocol -----------------------------------------------------------------------

    def encode(self, items: list[str], outputs: Sequence[str], options: CallOptions) -> Outputs:
        """The requested outputs from one forward pass per batch.

        Chunked texts' windows are combined per text (:meth:`Outputs.combine`).

        Raises:
            InputError: an output this backend does not make.
            MissingModelFileError: sparse or ColBERT without its head file.
        """
        wanted = set(outputs)
        for name in wanted - {"dense"}:
            if name not in HEAD_FILES:
                msg = f"unknown output {name!r}; valid: dense, {', '.join(HEAD_FILES)}"
                raise InputError(msg)
        sparse_head = self.load_head("sparse") if "sparse" in wanted else None
        colbert_head = self.load_head("colbert") if "colbert" in wanted else None
        dense = "dense" in wanted
        tokenized = self.tokenize(items, options)
        windows = len(tokenized.ids)
        normalize = options.normalize
        dense_rows = np.empty((windows, self.dimension), dtype=np.float32) if dense else None
        sparse_rows: list[dict[int, float]] = [{} for _ in range(windows if sparse_head else 0)]
        colbert_rows: list[np.ndarray] = []
        if colbert_head is not None:
            colbert_rows = [np.empty((0, 0), dtype=np.float32)] * windows
        unused = self.unused_token_ids() if sparse_head is not None else frozenset()

        def heads(
            indices: list[int], batch: ForwardBatch
        ) -> tuple[np.ndarray | None, list[dict[int, float]] | None, list[np.ndarray] | None]:
            return batch_outputs(
                batch,
                pooling=options.pooling if dense else None,
                normalize=normalize,
                # Chunked texts' dense vectors are normalized after their windows are combined.
                normalize_dense=normalize and not tokenized.chunked,
                sparse_head=sparse_head,
                colbert_head=colbert_head,
                unused_ids=unused,
            )

        for indices, (batch_dense, batch_sparse, batch_colbert) in (
            self.batches(tokenized.ids, options, heads) if windows else ()
        ):
            if dense_rows is not None and batch_dense is not None:
                dense_rows[indices] = batch_dense
            for index, weights in zip(indices, batch_sparse or (), strict=False):
                sparse_rows[index] = weights
            for index, vectors in zip(indices, batch_colbert or (), strict=False):
                colbert_rows[index] = vectors
        result = Outputs(
            dense=dense_rows,
            sparse=sparse_rows if sparse_head is not None else None,
            colbert=colbert_rows if colbert_head is not None else None,
        )
        return result.combine(tokenized, normalize=normalize) if tokenized.chunked else result

    def token_embeddings(self, tokenized: Tokenized, options: CallOptions) -> list[TokenEmbeddings]:
        """Each window's tokens and last hidden states (one window per text)."""
        results: list[TokenEmbeddings | None] = [None] * len(tokenized.ids)
        tokenizer = self.files.tokenizer

        def hidden_states(indices: list[int], batch: ForwardBatch) -> np.ndarray:
            return batch.hidden.float().cpu().numpy()

        for indices, hidden in self.batches(tokenized.ids, options, hidden_states):
            for row, index in enumerate(indices):
                ids = tokenized.ids[index]
                tokens = tokenizer.convert_ids_to_tokens(ids)
                results[index] = TokenEmbeddings(list(tokens), hidden[row, : len(ids)].copy())
        return [result for result in results if result is not None]
