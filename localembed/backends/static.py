"""The static backend: a :class:`localembed.static.StaticModel` behind the Backend protocol.

:func:`~localembed.backends.read_model_files` and :func:`~localembed.backends.load_backend`
choose it for a directory in model2vec's format (what ``localembed distill`` writes), so the
encoder, the CLI, the server and both adapters load a static model like any other. It makes
dense vectors only: no token states, windows, chunking or bge-m3 heads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from localembed.errors import InputError
from localembed.static import StaticModel

if TYPE_CHECKING:
    import torch

    from localembed.backends.base import CallOptions, ModelFiles, TokenEmbeddings
    from localembed.config import EncoderConfig
    from localembed.heads import Outputs
    from localembed.windows import Tokenized

logger = logging.getLogger("localembed")

__all__ = ["StaticBackend"]


class StaticBackend:
    """A static model: token vectors averaged on the CPU (see :mod:`localembed.static`).

    Args:
        files: the model's files (:func:`~localembed.backends.base.static_model_files`).
        config: the encoder settings; those that choose a transformer runtime are refused.

    Raises:
        InputError: ``backend``, ``quantize``, ``dtype`` or ``device`` is set to something a
            static model does not run.
    """

    capabilities = frozenset({"dense"})
    """Dense vectors only."""
    unavailable: ClassVar[dict[str, str]] = {
        "token_embeddings": "a static model has one fixed vector per token, no contextual states",
        "windows": "a static model has no forward pass to merge windows into",
    }

    def __init__(self, files: ModelFiles, config: EncoderConfig) -> None:
        import torch

        refused = {
            "backend": config.backend not in {"auto", "torch"},
            "quantize": config.quantize is not None,
            "dtype": config.dtype not in {"auto", "float32"},
            "device": config.device not in {"auto", "cpu"},
        }
        bad = [name for name, wrong in refused.items() if wrong]
        if bad:
            msg = (
                f"{files.source.name} is a static model (token vectors averaged on the CPU): "
                f"{', '.join(f'{name}={getattr(config, name)!r}' for name in bad)} does not "
                "apply; leave backend, quantize, dtype and device at their defaults"
            )
            raise InputError(msg)
        self.files = files
        self.static = StaticModel(files.source.path)
        self.device: torch.device = torch.device("cpu")
        self.dtype: torch.dtype = torch.float32
        self.dimension: int = self.static.dimension

    def check_options(self, options: CallOptions) -> None:
        """Refuse chunking and pooling other than mean: a static model has neither."""
        if options.long_text == "chunk":
            msg = "a static model truncates long texts; long_text='chunk' needs a transformer"
            raise InputError(msg)
        if options.pooling != "mean":
            msg = (
                f"a static model averages its token vectors; pooling={options.pooling!r} "
                "needs a transformer"
            )
            raise InputError(msg)

    def tokenize(self, items: list[str], options: CallOptions) -> Tokenized:
        """The windows the model's tokenizer makes of ``items`` (special tokens included)."""
        tokenized: Tokenized = self.files.windows(
            items, max_length=options.max_length, long_text="truncate"
        )
        return tokenized

    def encode(self, items: list[str], outputs: Sequence[str], options: CallOptions) -> Outputs:
        """Dense rows of checked, instructed ``items``; texts over ``max_length`` are counted."""
        from localembed.heads import Outputs

        unknown = set(outputs) - self.capabilities
        if unknown:
            msg = f"a static model makes dense vectors only, not {', '.join(sorted(unknown))}"
            raise InputError(msg)
        vectors, cut = self.static.encode(
            items, max_length=options.max_length, normalize=options.normalize
        )
        if cut:
            logger.warning(
                "%d of %d texts were longer than %d tokens and were truncated",
                cut,
                len(items),
                options.max_length,
            )
        return Outputs(dense=vectors)

    def token_embeddings(self, tokenized: Tokenized, options: CallOptions) -> list[TokenEmbeddings]:
        """Not available: a static model's token vectors do not depend on context."""
        msg = "output='token_embeddings' needs a transformer, not a static model"
        raise InputError(msg)
