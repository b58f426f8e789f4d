"""The settings both LlamaIndex adapters share: encoder options plus LlamaIndex's own."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator

from localembed.config import EncoderConfig
from localembed.loading import DEFAULT_MODEL_ID


class LlamaIndexEncoderConfig(EncoderConfig):
    """Every :class:`~localembed.EncoderConfig` option, mutable as LlamaIndex components are."""

    # LlamaIndex assigns attributes after construction (e.g. callback_manager in Settings).
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
