"""EncoderConfig: every knob of the shared encoder, validated once.

Both framework adapters inherit these fields, so a setting has one name, one
type, one default and one docstring everywhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from localembed.errors import InputError
from localembed.pooling import POOLING_MODES

DType = Literal["auto", "float32", "bfloat16", "float16"]
DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")


def _one_model(cls: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """``model`` and its alias ``model_name`` given together: one value, or an error naming both.

    Equal values (a Path and its str count as equal) are one choice said twice, and a None is
    no choice; two different models are refused rather than one silently winning.
    """
    if "model" not in data or "model_name" not in data:
        return data
    model, name = data["model"], data["model_name"]
    if model is not None and name is not None and str(model) != str(name):
        msg = (
            f"model={str(model)!r} and model_name={str(name)!r} disagree; they are two names "
            f"of one option (the model directory or hub id): pass one of them"
        )
        raise ValueError(msg)
    chosen = model if model is not None else name
    data = {**data, "model": chosen}
    if "model_name" in cls.model_fields:  # a framework's own field (LlamaIndex): keep it equal
        return {**data, "model_name": str(chosen) if chosen is not None else name}
    return {key: value for key, value in data.items() if key != "model_name"}


CALL_TIME_OPTIONS = frozenset(
    {
        "batch_size",
        "max_batch_tokens",
        "long_text",
        "query_instruction",
        "document_instruction",
        "truncate_dim",
        "cache",
        "cache_max_bytes",
        "context",
    }
)
"""Settings an encoder applies per call: encoders differing only in these share one model."""


def did_you_mean(key: object, valid: Iterable[str]) -> str:
    """`` (did you mean 'X'?)`` for the valid name closest to an unknown ``key``, else "".

    Example:
        >>> did_you_mean("poolng", ["pooling", "device"]), did_you_mean("zzz", ["pooling"])
        (" (did you mean 'pooling'?)", '')

    """
    close = difflib.get_close_matches(str(key), list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class ModelOptions(BaseModel):
    """The options every local model shares (the encoder's and the reranker's), validated once.

    Subclasses add their own fields; unknown options are refused with a did-you-mean hint.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        protected_namespaces=(),
        use_attribute_docstrings=True,
        validate_default=True,
    )

    model: str | None = Field(default=None, validation_alias=AliasChoices("model", "model_name"))
    """Local directory, hub id, or None for the embedded all-MiniLM-L6-v2 (alias: `model_name`)."""

    max_length: int | None = Field(default=None, gt=0)
    """Tokens kept per input (longer ones are truncated and counted); None: the model's limit."""

    batch_size: int = Field(default=32, gt=0)
    """Inputs per forward pass (inputs are sorted by length first)."""

    max_batch_tokens: int | None = Field(default=None, gt=0)
    """Most padded tokens per forward pass (rows x longest); None: 2048 on CPU, 16384 on CUDA."""

    device: str = "auto"
    """"auto" (cuda, then mps, then cpu), "cpu", "cuda", "cuda:N" or "mps"."""

    dtype: DType = "auto"
    """Weights and compute precision; "auto" is float32 on CPU and float16 on CUDA."""

    quantize: Literal["int8"] | None = None
    """"int8": dynamic int8 Linear layers on the CPU (faster, slightly less accurate)."""

    threads: int | Literal["auto"] = "auto"
    """CPU threads for the model (torch intra-op / ONNX Runtime); "auto": the CPUs this process
    may use (affinity and cgroup quota), never more than torch's own count, and a count set
    with OMP_NUM_THREADS is kept. Loading sets torch's count (the last model loaded sets the
    process's default); each model's batches run on its own count, whichever thread runs them.
    With LOCALEMBED_ADAPTIVE_THREADS=1 (opt-in), "auto" also runs each torch batch on fewer
    threads while other processes keep the CPUs busy (``localembed.hardware.AdaptiveThreads``)."""

    allow_pickle_weights: bool = False
    """Load pickle weights (.bin/.pt) when a model has no safetensors; only files you trust."""

    trust_remote_code: bool = False
    """Run the model repository's own Python code; only for models that need it and you trust."""

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = _one_model(cls, data)
            valid = set()
            for name, field in cls.model_fields.items():
                valid.add(name)
                if isinstance(field.validation_alias, AliasChoices):
                    valid.update(a for a in field.validation_alias.choices if isinstance(a, str))
            unknown = [key for key in data if key not in valid]
            if unknown:
                key = unknown[0]
                hint = did_you_mean(key, valid)
                msg = f"unknown option {key!r}{hint}; valid options: {', '.join(sorted(valid))}"
                raise InputError(msg)
        return data

    @field_validator("model", mode="before")
    @classmethod
    def _model_as_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            msg = (
                "model must name a directory or a hub id, got an empty string; "
                "pass model=None for the embedded default model"
            )
            raise InputError(msg)
        return value

    @field_validator("threads", mode="before")
    @classmethod
    def _check_threads(cls, value: Any) -> Any:
        from localembed.hardware import check_threads

        return check_threads(value)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        kind, _, index = value.partition(":")
        if kind not in DEVICE_KINDS or (index and (kind != "cuda" or not index.isdigit())):
            msg = f"device must be one of {', '.join(DEVICE_KINDS)} or 'cuda:N', got {value!r}"
            raise InputError(msg)
        return value


class EncoderConfig(ModelOptions):
    """Settings of a :class:`~localembed.LocalEncoder`; the same settings share one model.

    Example:
        >>> from localembed import EncoderConfig
        >>> EncoderConfig(pooling="mean", batch_size=8).pooling
        'mean'
        >>> EncoderConfig(poolng="mean")
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for EncoderConfig
          Value error, unknown option 'poolng' (did you mean 'pooling'?); valid options: ...

    """

    pooling: str = "auto"
    """How token vectors become one; "auto": the model's metadata, then its family preset."""

    normalize: bool | None = None
    """L2-normalize each vector (a dot product is then the cosine similarity); None: follow the
    model (its sentence-transformers Normalize module, else its family preset, else True)."""

    query_instruction: str | None = None
    """Prefix or "{text}" template for queries; None: saved prompts, then preset; "": none."""

    document_instruction: str | None = None
    """Prefix or "{text}" template for documents; None: saved prompts, then preset; "": none."""

    truncate_dim: int | None = Field(default=None, gt=0)
    """Matryoshka: keep each vector's first N dimensions (cut after pooling, then normalized);
    at most the model's dimension. None: all. Encoders differing only here share one model."""

    long_text: Literal["truncate", "chunk"] = "truncate"
    """Over-long texts: "truncate" (counted, warned) or "chunk" (overlapping windows, pooled)."""

    backend: Literal["auto", "torch", "onnx", "flagembedding"] = "torch"
    """"torch" (the default): transformers on torch; "auto": "onnx" where it is exact (a
    BERT-family encoder in float32 on the CPU, ONNX Runtime installed: extra `onnx`), else
    "torch" (see the performance page for when it is faster);
    "onnx": an ONNX Runtime export with fused attention, skip-LayerNorm and GELU (CPU);
    "flagembedding": FlagEmbedding's BGEM3FlagModel (bge-m3 only, extra `m3`)."""

    cache: str | None = None
    """Embedding cache: a directory (SQLite in WAL mode, on this machine) or a ``redis://``
    URL (a shared Redis/Valkey server); None: no cache. Keyed by everything that shapes a
    vector (model files' content, settings, instruction, version) and the text."""

    cache_max_bytes: int | None = Field(default=None, gt=0)
    """A directory cache's size cap: least recently used entries are evicted above it;
    None: no cap. A Redis server's cap is its own ``maxmemory``."""

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_as_str(cls, value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, str) and not value.strip():
            msg = "cache must name a directory or a redis:// URL, got an empty string"
            raise ValueError(msg)
        return value

    context: Any = None
    """CDE models only: the corpus context (a :class:`~localembed.contextual.CorpusContext`, or
    the path of a file saved with ``.save``) used for every document and query; build one with
    ``encoder.build_context(corpus)``. Encoders differing only here share one model."""

    @field_validator("context", mode="before")
    @classmethod
    def _check_context(cls, value: Any) -> Any:
        if value is None:
            return None
        from localembed.corpus_context import CorpusContext, as_context

        if isinstance(value, CorpusContext):
            return value
        if isinstance(value, (str, Path)):
            if not str(value).strip():
                msg = "context must be a CorpusContext or a context file's path, got ''"
                raise ValueError(msg)
            # Absolute, so that encoders made from other working directories do not share it.
            return str(Path(value).expanduser().resolve())
        return as_context(value)  # inline data (from a serialized adapter), or an error

    @field_serializer("context")
    def _serialize_context(self, value: Any) -> Any:
        return value.serialized() if hasattr(value, "serialized") else value

    @field_validator("pooling")
    @classmethod
    def _check_pooling(cls, value: str) -> str:
        if value != "auto" and value not in POOLING_MODES:
            msg = f"unknown pooling {value!r}; valid: auto, {', '.join(POOLING_MODES)}"
            raise InputError(msg)
        return value

    def encoder_options(self) -> dict[str, Any]:
        """The encoder's settings alone (an adapter's own fields left out)."""
        return {name: getattr(self, name) for name in EncoderConfig.model_fields}

    def load_options(self) -> dict[str, Any]:
        """The settings the weights are loaded with (:data:`CALL_TIME_OPTIONS` left out)."""
        options = self.encoder_options()
        return {name: value for name, value in options.items() if name not in CALL_TIME_OPTIONS}

    def explicit_options(self) -> dict[str, Any]:
        """The encoder settings given explicitly (defaults left out, so "auto" rules apply).

        Example:
            >>> EncoderConfig(pooling="cls", normalize=True).explicit_options()
            {'normalize': True, 'pooling': 'cls'}

        """
        return {
            name: getattr(self, name)
            for name in sorted(self.model_fields_set)
            if name in EncoderConfig.model_fields
        }


class RerankerConfig(ModelOptions):
    """Settings of a :class:`LocalReranker`; the same settings share one model.

    Example:
        >>> from localembed.reranker import RerankerConfig
        >>> RerankerConfig(model="BAAI/bge-reranker-base", activation="none").activation
        'none'
        >>> RerankerConfig(model="m", activaton="none")
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for RerankerConfig
          Value error, unknown option 'activaton' (did you mean 'activation'?); valid options: ...

    """

    model: str = Field(validation_alias=AliasChoices("model", "model_name"))
    """Local directory or hub id of a cross-encoder, or of bge-m3 (alias: `model_name`)."""

    activation: Literal["auto", "sigmoid", "none"] = "auto"
    """On the logits: "auto" (the model's saved choice, its preset, else sigmoid for one
    label and none for several, as sentence-transformers' CrossEncoder), "sigmoid", or
    "none" (raw logits)."""

    backend: Literal["torch", "onnx"] = "torch"
    """"torch": transformers on torch; "onnx": an ONNX Runtime export (CPU, extra `onnx`)."""

    scoring: Literal["auto", "cross-encoder", "bge-m3"] = "auto"
    """"auto": a classification head makes a cross-encoder, bge-m3's sparse and ColBERT heads
    make "bge-m3" (dense + sparse + ColBERT scores, see `m3_weights`)."""

    m3_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """bge-m3 scoring: weights of (dense, sparse, ColBERT) in the mix; FlagEmbedding's
    compute_score default [1, 1, 1] (its model card suggests [0.4, 0.2, 0.4])."""

    m3_score: Literal["dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"] = (
        "colbert+sparse+dense"
    )
    """bge-m3 scoring: which of FlagEmbedding's compute_score results ranks."""

    def reranker_options(self) -> dict[str, Any]:
        """The reranker's settings alone (an adapter's own fields left out)."""
        return {name: getattr(self, name) for name in RerankerConfig.model_fields}

    def explicit_options(self) -> dict[str, Any]:
        """The reranker settings given explicitly (defaults left out, so "auto" rules apply)."""
        return {
            name: getattr(self, name)
            for name in sorted(self.model_fields_set)
            if name in RerankerConfig.model_fields
        }
