"""``backend="flagembedding"``: FlagEmbedding's ``BGEM3FlagModel`` behind the backend interface.

The reference code path: FlagEmbedding tokenizes, batches and runs the model; localembed
checks the inputs, applies instructions and checks the outputs as for every backend (see
:class:`localembed.backends.base.Backend`). Capabilities: dense, sparse and ColBERT outputs;
no token states, windows, chunking or token budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from localembed.backends.transformer import warn_truncated
from localembed.errors import InputError
from localembed.extras import install_hint
from localembed.forks import ForkSafeLock
from localembed.heads import HEAD_FILES, Outputs, missing_heads_message
from localembed.model_errors import MissingModelFileError
from localembed.model_origins import display_path
from localembed.runtimes import resolve_device, resolve_dtype

if TYPE_CHECKING:
    import torch

    from localembed.backends.base import CallOptions, ModelFiles, TokenEmbeddings
    from localembed.config import EncoderConfig
    from localembed.settings import ResolvedSettings
    from localembed.windows import Tokenized

__all__ = ["FLAGEMBEDDING_TRANSFORMERS", "FlagEmbeddingBackend", "flagembedding_import_message"]

_FLAGEMBEDDING_POOLING = ("cls", "mean", "last_token")

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
        return f"backend='flagembedding' needs FlagEmbedding: {install_hint('FlagEmbedding')}"
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

    Model directory, pooling, normalization, device, dtype, ``max_length`` and ``batch_size``
    come from the encoder's settings. FlagEmbedding casts the model to float32 whenever it
    runs on the CPU, so ``bfloat16``/``float16`` only take effect on accelerators. It has no
    token budget, no chunking and no quantization: ``max_batch_tokens``,
    ``long_text="chunk"`` and ``quantize`` are refused.

    Args:
        files: the model's files.
        config: the encoder's settings.
        settings: the resolved settings (pooling, normalize, max_length).

    Raises:
        MissingExtraError: FlagEmbedding is not installed (extra ``m3``) or cannot import.
        MissingModelFileError: the model directory lacks a head file or safetensors weights.
        InputError: a setting FlagEmbedding cannot honour.
    """

    capabilities = frozenset({"dense", "sparse", "colbert"})
    """Dense, sparse and ColBERT outputs (no token states, windows, chunking, token budget)."""

    def __init__(
        self, files: ModelFiles, config: EncoderConfig, settings: ResolvedSettings
    ) -> None:
        import torch

        if settings.pooling not in _FLAGEMBEDDING_POOLING:
            msg = (
                f"backend='flagembedding' supports pooling {', '.join(_FLAGEMBEDDING_POOLING)}, "
                f"not {settings.pooling!r}"
            )
            raise InputError(msg)
        path = files.source.path
        missing = [name for name in HEAD_FILES.values() if not (path / name).is_file()]
        if missing:
            # FlagEmbedding would silently initialize missing heads at random.
            raise MissingModelFileError(missing_heads_message(files.source, missing))
        if config.quantize is not None:
            msg = "backend='flagembedding' runs FlagEmbedding's own model; quantize needs 'torch'"
            raise InputError(msg)
        if not any(path.glob("*.safetensors")) and not config.allow_pickle_weights:
            msg = (
                f"no .safetensors weights in {display_path(path)}; pickle weights load only with "
                "allow_pickle_weights=True"
            )
            raise MissingModelFileError(msg)
        try:
            from FlagEmbedding import BGEM3FlagModel
        except ImportError as error:
            from localembed.errors import MissingExtraError

            raise MissingExtraError(flagembedding_import_message(error)) from error
        self.files = files
        self.device: torch.device = resolve_device(config.device)
        self.dtype: torch.dtype = resolve_dtype(config.dtype, self.device)
        self.dimension: int = int(files.model_config.hidden_size)
        self._lock = ForkSafeLock()
        self.flag_model: Any = BGEM3FlagModel(
            str(path),
            normalize_embeddings=settings.normalize,
            use_fp16=self.dtype == torch.float16,
            use_bf16=self.dtype == torch.bfloat16,
            devices=str(self.device),
            pooling_method=settings.pooling,
            trust_remote_code=config.trust_remote_code,
            batch_size=config.batch_size,
            query_max_length=settings.max_length,
            passage_max_length=settings.max_length,
        )
        """The ``FlagEmbedding.BGEM3FlagModel``."""

    def check_options(self, options: CallOptions) -> None:
        """Refuse what FlagEmbedding cannot do: chunking and a token budget."""
        if options.long_text == "chunk":
            msg = "backend='flagembedding' truncates long texts; long_text='chunk' needs 'torch'"
            raise InputError(msg)
        if options.max_batch_tokens is not None:
            msg = "backend='flagembedding' has no token budget; max_batch_tokens needs 'torch'"
            raise InputError(msg)

    def tokenize(self, items: list[str], options: CallOptions) -> Tokenized:
        """The windows localembed's tokenizer makes of ``items`` (to count truncated texts)."""
        tokenized = self.files.windows(items, max_length=options.max_length, long_text="truncate")
        warn_truncated(tokenized, options.max_length)
        return tokenized

    def encode(self, items: list[str], outputs: Sequence[str], options: CallOptions) -> Outputs:
        """Run ``BGEM3FlagModel.encode`` on checked, instructed ``items``."""
        wanted = set(outputs)
        unknown = wanted - self.capabilities
        if unknown:
            msg = f"backend='flagembedding' cannot make {', '.join(sorted(unknown))}"
            raise InputError(msg)
        dense, sparse, colbert = ("dense" in wanted, "sparse" in wanted, "colbert" in wanted)
        if not items:
            return Outputs(
                dense=np.empty((0, self.dimension), dtype=np.float32) if dense else None,
                sparse=[] if sparse else None,
                colbert=[] if colbert else None,
            )
        self.tokenize(items, options)  # counts (and warns about) texts over max_length
        with self._lock:
            result = self.flag_model.encode(
                items,
                batch_size=options.batch_size,
                max_length=options.max_length,
                return_dense=dense,
                return_sparse=sparse,
                return_colbert_vecs=colbert,
            )
        return Outputs(
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

    def token_embeddings(self, tokenized: Tokenized, options: CallOptions) -> list[TokenEmbeddings]:
        """Not available: FlagEmbedding returns no token states."""
        msg = "output='token_embeddings' needs backend='torch' or 'onnx'"
        raise InputError(msg)
