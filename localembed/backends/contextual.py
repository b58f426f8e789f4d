"""The CDE backend: a contextual document embedding model's two stages behind the Backend.

A CDE model (``config.transductive_corpus_size`` set; ``jxm/cde-small-v1``/``v2``) is remote
code (loaded only with ``trust_remote_code=True``) whose ``first_stage_model(input_ids=,
attention_mask=)`` embeds corpus documents into dataset embeddings and whose
``second_stage_model(input_ids=, attention_mask=, dataset_embeddings=)`` embeds texts given
them. This backend runs both on the shared stages (windows, length-sorted token-budget
batches padded on the right, out-of-memory splits): :meth:`ContextualBackend.dataset_embeddings`
for :meth:`~localembed.LocalEncoder.build_context`, :meth:`ContextualBackend.encode` (dense
only) for every document and query, with the context passed in the call options
(``CallOptions.context``). The second stage's vectors are L2-normalized (the model card's last
step) unless ``normalize=False``.

Capabilities: ``dense``, ``chunk`` and ``token_budget``; not ``windows`` (the micro-batcher
runs plain windows without a context: calls run one at a time under a lock) nor
``token_embeddings`` (the second stage pools itself: no token output, no late chunking). ONNX
and quantization are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from localembed.backends.transformer import warn_truncated
from localembed.batching import iter_batches, pad_right, padding_id
from localembed.corpus_context import ContextError, model_fingerprint, no_context_message
from localembed.errors import InputError
from localembed.forks import ForkSafeLock
from localembed.heads import Outputs, check_outputs
from localembed.model_errors import ModelFileError
from localembed.model_origins import display_path
from localembed.runtimes import resolve_device, resolve_dtype
from localembed.weights import load_transformer

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    from transformers import PreTrainedModel

    from localembed.backends.base import CallOptions, ModelFiles, TokenEmbeddings
    from localembed.config import EncoderConfig
    from localembed.windows import Tokenized

__all__ = ["ContextualBackend"]


class ContextualBackend:
    """A CDE model's two stages, loaded once and shared by encoders with any context.

    Args:
        files: the model's files.
        config: load settings (device, dtype, trust_remote_code, allow_pickle_weights).

    Raises:
        InputError: ``backend`` other than "auto" or "torch", or ``quantize``.
        ModelFileError: the loaded model has no ``first_stage_model``/``second_stage_model``.
    """

    capabilities: frozenset[str] = frozenset({"dense", "chunk", "token_budget"})
    unavailable: ClassVar[dict[str, str]] = {
        "token_embeddings": (
            "a contextual (CDE) model's second stage pools its own token states together "
            "with the corpus context, so there are no token vectors to return or chunk late"
        ),
        "windows": "a contextual (CDE) model runs its two stages itself, not merged windows",
    }

    def __init__(self, files: ModelFiles, config: EncoderConfig) -> None:
        if config.backend not in ("auto", "torch") or config.quantize is not None:
            msg = (
                f"{files.source.name} is a contextual (CDE) model: it runs on backend='torch' "
                f"without quantize, got backend={config.backend!r}, quantize={config.quantize!r}"
            )
            raise InputError(msg)
        from localembed.hardware import apply_threads

        self.files = files
        self.device: torch.device = resolve_device(config.device)
        self.dtype: torch.dtype = resolve_dtype(config.dtype, self.device)
        self.pad_id = padding_id(files.tokenizer)
        path = files.metadata.transformer_path
        self.model: PreTrainedModel = load_transformer(
            path,
            dtype=self.dtype,
            device=self.device,
            trust_remote_code=config.trust_remote_code,
            allow_pickle_weights=config.allow_pickle_weights,
        )
        self.threads = apply_threads(config.threads)
        first = getattr(self.model, "first_stage_model", None)
        second = getattr(self.model, "second_stage_model", None)
        if not callable(first) or not callable(second):
            msg = (
                f"{display_path(path)} has transductive_corpus_size in its config.json but its "
                f"model has no first_stage_model/second_stage_model: it is not a contextual "
                f"document embedding model localembed can run"
            )
            raise ModelFileError(msg)
        self._first: Callable[..., Any] = first
        self._second: Callable[..., Any] = second
        self.corpus_size = int(files.model_config.transductive_corpus_size)
        """``config.transductive_corpus_size``: the context size the model was trained with."""
        self.dimension: int = _dimension(second, files.model_config)
        self.fingerprint = model_fingerprint(path, files.tokenizer)
        """The model's fingerprint; a context must carry the same one."""
        self._lock = ForkSafeLock()

    # -- the Backend protocol ---------------------------------------------------------------

    def check_options(self, options: CallOptions) -> None:
        """Every call option works here (``long_text="chunk"`` combines windows)."""

    def tokenize(self, items: list[str], options: CallOptions) -> Tokenized:
        """Checked, instructed ``items`` -> windows; over-long texts counted and warned about."""
        tokenized = self.files.windows(
            items, max_length=options.max_length, long_text=options.long_text
        )
        warn_truncated(tokenized, options.max_length)
        return tokenized

    def token_embeddings(self, tokenized: Tokenized, options: CallOptions) -> list[TokenEmbeddings]:
        """Refused: the second stage pools by itself (and needs the context).

        Raises:
            InputError: always.
        """
        msg = (
            f"{self.files.source.name} is a contextual (CDE) model: its second stage pools by "
            f"itself, so it has no token vectors (output='token_embeddings', late chunking)"
        )
        raise InputError(msg)

    def encode(self, items: list[str], outputs: Sequence[str], options: CallOptions) -> Outputs:
        """Dense vectors of checked, instructed texts given ``options.context``.

        Raises:
            ContextError: texts to embed and no context in ``options``.
            InputError: an output other than dense.
        """
        check_outputs(outputs, self.capabilities, f"{self.files.source.name} (a CDE model)")
        context = options.context
        if context is None and items:  # no texts: an empty result, no model call
            raise ContextError(no_context_message(self.files.source.name))
        import torch

        tokenized = self.tokenize(items, options)
        rows = np.empty((len(tokenized.ids), self.dimension), dtype=np.float32)
        if context is None or not tokenized.ids:
            return Outputs(dense=rows)
        corpus = torch.from_numpy(np.array(context.embeddings)).to(self.device, self.dtype)

        def second_stage(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self._second(
                input_ids=input_ids, attention_mask=mask, dataset_embeddings=corpus
            )
            return out

        # Windows of a chunked text are normalized once combined.
        normalize = options.normalize and not tokenized.chunked
        self._run(tokenized, rows, second_stage, options, normalize=normalize)
        result = Outputs(dense=rows)
        if tokenized.chunked:
            return result.combine(tokenized, normalize=options.normalize)
        return result

    # -- the first stage ----------------------------------------------------------------------

    def dataset_embeddings(self, tokenized: Tokenized, options: CallOptions) -> np.ndarray:
        """The first stage's (not normalized) vectors of ``tokenized``, one row per window."""
        rows = np.empty((len(tokenized.ids), self.dimension), dtype=np.float32)

        def first_stage(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self._first(input_ids=input_ids, attention_mask=mask)
            return out

        if tokenized.ids:
            self._run(tokenized, rows, first_stage, options, normalize=False)
        return rows

    def _run(
        self,
        tokenized: Tokenized,
        rows: np.ndarray,
        stage: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        options: CallOptions,
        *,
        normalize: bool,
    ) -> None:
        import torch

        # The second stage reads corpus_size context positions before each text: count them
        # in the token budget.
        extra = self.corpus_size

        def step(indices: list[int]) -> np.ndarray:
            windows = [tokenized.ids[i] for i in indices]
            input_ids, mask = pad_right(windows, self.pad_id, self.device)
            with self._lock, torch.inference_mode():
                vectors = stage(input_ids, mask).float()
                if normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2.0, dim=1)
            result: np.ndarray = vectors.cpu().numpy()
            return result

        for indices, batch_rows in iter_batches(
            [len(ids) + extra for ids in tokenized.ids],
            step,
            batch_size=options.batch_size,
            max_batch_tokens=options.max_batch_tokens,
            device=self.device,
            max_length=options.max_length + extra,
            show_progress=options.show_progress,
        ):
            rows[indices] = batch_rows


def _dimension(second: Any, model_config: Any) -> int:
    for value in (
        getattr(second, "hidden_size", None),
        getattr(model_config, "embedding_output_dim", None),
        getattr(model_config, "hidden_size", None),
        getattr(model_config, "embedding_size", None),
    ):
        if isinstance(value, int) and value > 0:
            return value
    msg = "cannot tell the CDE model's vector width (no second_stage_model.hidden_size)"
    raise ModelFileError(msg)
