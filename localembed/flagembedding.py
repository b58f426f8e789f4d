"""``backend="flagembedding"``: FlagEmbedding's ``BGEM3FlagModel`` behind the backend interface.

The reference code path: FlagEmbedding tokenizes, batches and runs the model; localembed
checks the inputs, applies instructions and checks the outputs as for every backend (see
:class:`localembed.backends.Backend`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from localembed.loading import display_path
from localembed.m3 import HEAD_FILES, M3Output, not_m3_message
from localembed.runtimes import resolve_device, resolve_dtype

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from localembed.backends import CallOptions, Forward, ModelFiles, TokenEmbeddings
    from localembed.config import EncoderConfig
    from localembed.runtimes import Runtime
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
        ImportError: FlagEmbedding is not installed (extra ``m3``).
        FileNotFoundError: the model directory lacks a head file or safetensors weights.
        ValueError: a setting FlagEmbedding cannot honour.
    """

    def __init__(
        self, files: ModelFiles, config: EncoderConfig, settings: ResolvedSettings
    ) -> None:
        import torch

        if settings.pooling not in _FLAGEMBEDDING_POOLING:
            msg = (
                f"backend='flagembedding' supports pooling {', '.join(_FLAGEMBEDDING_POOLING)}, "
                f"not {settings.pooling!r}"
            )
            raise ValueError(msg)
        path = files.source.path
        missing = [name for name in HEAD_FILES.values() if not (path / name).is_file()]
        if missing:
            # FlagEmbedding would silently initialize missing heads at random.
            raise FileNotFoundError(not_m3_message(files.source, missing))
        if config.quantize is not None:
            msg = "backend='flagembedding' runs FlagEmbedding's own model; quantize needs 'torch'"
            raise ValueError(msg)
        if not any(path.glob("*.safetensors")) and not config.allow_pickle_weights:
            msg = (
                f"no .safetensors weights in {display_path(path)}; pickle weights load only with "
                "allow_pickle_weights=True"
            )
            raise FileNotFoundError(msg)
        try:
            from FlagEmbedding import BGEM3FlagModel
        except ImportError as error:
            raise ImportError(flagembedding_import_message(error)) from error
        self.files = files
        self.device: torch.device = resolve_device(config.device)
        self.dtype: torch.dtype = resolve_dtype(config.dtype, self.device)
        self.dimension: int = int(files.model_config.hidden_size)
        self.model: PreTrainedModel | None = None
        self.runtime: Runtime | None = None
        self._lock = threading.Lock()
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
            raise ValueError(msg)
        if options.max_batch_tokens is not None:
            msg = "backend='flagembedding' has no token budget; max_batch_tokens needs 'torch'"
            raise ValueError(msg)

    def load_head(self, name: str) -> None:
        """FlagEmbedding loads its own heads (checked to exist when this backend was built)."""
        if name not in HEAD_FILES:
            msg = f"unknown head {name!r}; valid: {', '.join(HEAD_FILES)}"
            raise ValueError(msg)

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
        """Run ``BGEM3FlagModel.encode`` on checked, instructed ``items``."""
        del forward
        if not items:
            return M3Output(
                dense=np.empty((0, self.dimension), dtype=np.float32) if dense else None,
                sparse=[] if sparse else None,
                colbert=[] if colbert else None,
            )
        tokenize(items)  # counts (and warns about) texts over max_length, as "torch" does
        with self._lock:
            result = self.flag_model.encode(
                items,
                batch_size=options.batch_size,
                max_length=settings.max_length,
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

    def token_embeddings(
        self,
        tokenized: Tokenized,
        settings: ResolvedSettings,
        options: CallOptions,
        forward: Forward,
    ) -> list[TokenEmbeddings]:
        """Not available: FlagEmbedding returns no token states."""
        msg = "output='token_embeddings' needs backend='torch' or 'onnx'"
        raise ValueError(msg)

    def forward(self, windows: list[list[int]]) -> Any:
        """Not available: FlagEmbedding runs its own forward passes."""
        msg = "backend='flagembedding' has no forward pass of its own; use backend='torch'"
        raise ValueError(msg)
