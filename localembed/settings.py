"""Settings stage: one precedence for every setting, with where each value came from.

Stage API (pure: reads the model's config and tokenizer, never its weights):

- :func:`resolve_settings` applies argument > sentence-transformers metadata > family preset
  > model > fallback to pooling, normalize, both instructions and max_length, and returns a
  :class:`ResolvedSettings` whose ``sources`` says which rule won for each;
- :func:`model_length_limit` is the most tokens the model's positions and tokenizer allow;
- :func:`is_causal` tells a decoder (causal) model from an encoder.

A decoder model with nothing to say about pooling falls back to ``last_token`` with a
warning (its first token is the same for every text, so ``cls`` would give every text the
same vector); an encoder falls back to ``cls``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from localembed.errors import InputError
from localembed.presets import find_preset

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from localembed.config import EncoderConfig
    from localembed.presets import Preset
    from localembed.st_metadata import SentenceTransformersMetadata
    from localembed.texts import Kind

__all__ = [
    "ResolvedSettings",
    "is_causal",
    "model_length_limit",
    "resolve_max_length",
    "resolve_settings",
]

logger = logging.getLogger("localembed")

# Models whose position ids start after the padding index (RoBERTa-style): usable length is
# max_position_embeddings - (pad_token_id + 1).
_OFFSET_POSITION_MODELS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "data2vec-text"}
)
FALLBACK_MAX_LENGTH = 512
"""Tokens per text when neither the arguments, the metadata, a preset nor the model say."""


@dataclass(frozen=True)
class ResolvedSettings:
    """What the encoder actually does, after arguments, model metadata and presets."""

    pooling: str
    normalize: bool
    query_instruction: str
    document_instruction: str
    max_length: int
    sources: dict[str, str]
    """Where each setting came from: argument, sentence-transformers, saved prompts,
    preset <family>, model, fallback, none."""

    def instruction(self, kind: Kind) -> str:
        """The instruction for a ``"query"`` or a ``"document"``.

        Raises:
            InputError: ``kind`` is neither.
        """
        if kind == "query":
            return self.query_instruction
        if kind == "document":
            return self.document_instruction
        msg = f"kind must be 'query' or 'document', got {kind!r}"
        raise InputError(msg)


def is_causal(model_config: PretrainedConfig) -> bool:
    """Whether the model is a decoder (causal attention: a token sees only those before it).

    A model type transformers knows as a causal LM and not as a masked LM (Llama, Qwen2,
    Mistral, GPT-2...), an architecture named ``*ForCausalLM``/``*LMHeadModel``, or a config
    with ``is_decoder``.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(model_config, "is_decoder", False):
        return True
    architectures = getattr(model_config, "architectures", None) or []
    if any(str(name).endswith(("ForCausalLM", "LMHeadModel")) for name in architectures):
        return True
    model_type = str(getattr(model_config, "model_type", ""))
    return (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def model_length_limit(
    tokenizer: PreTrainedTokenizerBase, model_config: PretrainedConfig
) -> int | None:
    """The most tokens per text the model's position embeddings and tokenizer allow."""
    limits = []
    tokenizer_limit = tokenizer.model_max_length
    if isinstance(tokenizer_limit, int) and tokenizer_limit < 1_000_000:
        limits.append(tokenizer_limit)
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        if model_config.model_type in _OFFSET_POSITION_MODELS:
            positions -= (model_config.pad_token_id or 0) + 1
        limits.append(positions)
    return min(limits) if limits else None


def resolve_max_length(
    requested: int | None, *, saved: int | None, preset: Preset | None, limit: int | None
) -> tuple[int, str]:
    """Tokens per input: argument > sentence-transformers > preset > model > fallback.

    The one rule for encoders and rerankers; the result never exceeds the model's ``limit``.

    Args:
        requested: the user's ``max_length`` (None: follow the model).
        saved: sentence-transformers' ``max_seq_length`` (None or 0: not saved).
        preset: the model's family preset, if any.
        limit: :func:`model_length_limit` (None: unknown).

    Returns:
        The length and where it came from.

    Raises:
        InputError: ``requested`` exceeds the model's limit.
    """
    length: int
    if requested is not None:
        if limit is not None and requested > limit:
            msg = f"max_length={requested} exceeds the model's limit of {limit} tokens"
            raise InputError(msg)
        length, source = requested, "argument"
    elif saved:
        length, source = saved, "sentence-transformers"
    elif preset and preset.max_length:
        length, source = preset.max_length, f"preset {preset.family}"
    elif limit is not None:
        length, source = limit, "model"
    else:
        length, source = FALLBACK_MAX_LENGTH, "fallback"
    return (min(length, limit) if limit is not None else length), source


def resolve_settings(
    config: EncoderConfig,
    *,
    names: Sequence[str],
    identity: Sequence[str] = (),
    metadata: SentenceTransformersMetadata,
    tokenizer: PreTrainedTokenizerBase,
    model_config: PretrainedConfig,
) -> ResolvedSettings:
    """Resolve every setting: argument > sentence-transformers > preset > model > fallback.

    Args:
        config: the user's settings ("auto"/None mean: follow the model).
        names: model id and paths to match presets against.
        identity: the hub ids the model's own files give (model card, download record;
            :func:`localembed.loading.identity_names`), matched when ``names`` match no preset.
        metadata: what the model directory's sentence-transformers files say.
        tokenizer: the model's tokenizer (length limit, special tokens).
        model_config: the model's config (length limit, decoder or encoder).

    Returns:
        The settings and, in ``sources``, where each came from.

    Raises:
        ValueError: ``max_length`` exceeds the model's limit or cannot hold its special tokens.
    """
    preset = find_preset(*names, str(getattr(model_config, "_name_or_path", "") or ""))
    from localembed.corpus_context import is_contextual

    if preset is None and is_contextual(model_config):
        # Any contextual document embedding model: the CDE family's prefixes and length.
        preset = find_preset("cde-small-v2")
    family = f"preset {preset.family}" if preset else ""
    if preset is None:
        preset = find_preset(*identity)
        family = f"preset {preset.family} (model card)" if preset else ""
    sources: dict[str, str] = {}
    display = names[0] if names else "model"

    pooling: str
    if config.pooling != "auto":
        pooling, sources["pooling"] = config.pooling, "argument"
    elif metadata.pooling:
        pooling, sources["pooling"] = metadata.pooling, "sentence-transformers"
    elif preset:
        pooling, sources["pooling"] = preset.pooling, family
    elif is_causal(model_config):
        pooling, sources["pooling"] = "last_token", "fallback"
        logger.warning(
            "%s: a decoder (causal) model with no pooling in its metadata and no family preset; "
            "using last_token pooling (cls would give every text the same vector). Pass "
            "pooling='last_token' (or 'mean', ...) to choose and silence this warning",
            display,
        )
    else:
        pooling, sources["pooling"] = "cls", "fallback"
        logger.info(
            "%s: no pooling in the model's metadata and no family preset; using cls pooling "
            "(pass pooling=... to choose)",
            display,
        )

    normalize: bool
    if config.normalize is not None:
        normalize, sources["normalize"] = config.normalize, "argument"
    elif metadata.normalize is not None:
        normalize, sources["normalize"] = metadata.normalize, "sentence-transformers"
    elif preset:
        normalize, sources["normalize"] = preset.normalize, family
    else:
        normalize, sources["normalize"] = True, "fallback"

    instructions = {}
    for kind, explicit, saved_keys in (
        ("query", config.query_instruction, ("query",)),
        ("document", config.document_instruction, ("document", "passage", "corpus")),
    ):
        saved = next((metadata.prompts[k] for k in saved_keys if k in metadata.prompts), None)
        key = f"{kind}_instruction"
        if explicit is not None:
            instructions[kind], sources[key] = explicit, "argument"
        elif saved is not None:
            instructions[kind], sources[key] = saved, "saved prompts"
        elif preset:
            instructions[kind], sources[key] = preset.instruction(kind), family
        else:
            instructions[kind], sources[key] = "", "none"

    if preset is None and sources["query_instruction"] == "none":
        _warn_unconfirmed_family(display, metadata, model_config)

    max_length, sources["max_length"] = resolve_max_length(
        config.max_length,
        saved=metadata.max_seq_length,
        preset=preset,
        limit=model_length_limit(tokenizer, model_config),
    )
    special = _special_tokens(tokenizer)
    if max_length <= special:
        msg = (
            f"max_length={max_length} ({sources['max_length']}) cannot hold the model's "
            f"{special} special tokens and any text; use max_length >= {special + 1}"
        )
        raise InputError(msg)

    return ResolvedSettings(
        pooling=pooling,
        normalize=normalize,
        query_instruction=instructions["query"],
        document_instruction=instructions["document"],
        max_length=max_length,
        sources=sources,
    )


_CLS_FAMILY_TYPES = frozenset({"bert", "xlm-roberta"})
"""Architectures of the CLS-pooled families with a query instruction (BGE v1.5 en/zh)."""


def _warn_unconfirmed_family(
    display: str, metadata: SentenceTransformersMetadata, model_config: PretrainedConfig
) -> None:
    """Warn when a model looks like a preset family that nothing confirmed.

    The fingerprint: sentence-transformers metadata that pools the [CLS] token, a BERT or
    XLM-R encoder, and no saved prompts. In the preset table the CLS-pooled embedding
    families are BGE's, whose English and Chinese v1.5 models embed queries with an
    instruction; a copy in a folder not named like its hub id, without a model card,
    would silently lose it.
    """
    if metadata.pooling != "cls" or model_config.model_type not in _CLS_FAMILY_TYPES:
        return
    english = find_preset("bge-small-en-v1.5")
    instruction = english.query_instruction if english else ""
    logger.warning(
        "%s: pools the [CLS] token like the BGE family, but neither its name, a model card "
        "(README.md) nor a `localembed download` record says which model it is, so queries "
        "get no instruction. If it is a BGE v1.5 English model, pass query_instruction=%r "
        "(or load it by its hub id, e.g. BAAI/bge-small-en-v1.5); pass query_instruction='' "
        "if it needs none (this also silences the warning)",
        display,
        instruction,
    )


def _special_tokens(tokenizer: Any) -> int:
    try:
        return int(tokenizer.num_special_tokens_to_add(pair=False))
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - exotic tokenizers
        return 0
