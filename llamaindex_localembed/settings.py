"""The settings both LlamaIndex adapters share: encoder options plus LlamaIndex's own."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator

from localembed.adapters import EncoderAdapter, check_texts
from localembed.default_model import DEFAULT_MODEL_ID


class LlamaIndexEncoderConfig(EncoderAdapter):
    """Every :class:`~localembed.EncoderConfig` option, mutable as LlamaIndex components are.

    Also the input checks both LlamaIndex adapters need on LlamaIndex's own batch and
    aggregate methods, which would iterate a bare ``str`` character by character.
    """

    # LlamaIndex assigns attributes after construction (e.g. callback_manager in Settings);
    # assignments are validated like construction.
    model_config = ConfigDict(frozen=False, arbitrary_types_allowed=True)

    embed_batch_size: int = Field(default=64, gt=0, le=2048)
    """Texts LlamaIndex hands over per call (the encoder batches them again by length)."""

    @model_validator(mode="before")
    @classmethod
    def _name_the_model(cls, data: Any) -> Any:
        # LlamaIndex shows `model_name`; keep it equal to the model we load.
        if isinstance(data, dict) and "model_name" not in data:
            data = {**data, "model_name": data.get("model") or DEFAULT_MODEL_ID}
        return data


class CheckedInputs:
    """Checks the texts of LlamaIndex's inherited batch and aggregate methods, then defers.

    Put before LlamaIndex's ``BaseEmbedding`` / ``BaseSparseEmbedding`` in the bases.
    """

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> Any:
        """Embed a list of texts (a bare str is refused, not embedded letter by letter)."""
        return super().get_text_embedding_batch(  # type: ignore[misc]
            check_texts(texts), show_progress=show_progress, **kwargs
        )

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> Any:
        """Async :meth:`get_text_embedding_batch`, computed in worker threads."""
        return await super().aget_text_embedding_batch(  # type: ignore[misc]
            check_texts(texts), show_progress=show_progress, **kwargs
        )

    def get_agg_embedding_from_queries(self, queries: list[str], agg_fn: Any = None) -> Any:
        """The aggregate of several queries' embeddings (a bare str is refused)."""
        return super().get_agg_embedding_from_queries(  # type: ignore[misc]
            check_texts(queries), agg_fn=agg_fn
        )

    async def aget_agg_embedding_from_queries(self, queries: list[str], agg_fn: Any = None) -> Any:
        """Async :meth:`get_agg_embedding_from_queries`."""
        return await super().aget_agg_embedding_from_queries(  # type: ignore[misc]
            check_texts(queries), agg_fn=agg_fn
        )
