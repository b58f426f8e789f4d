"""What a sentence-transformers model folder says about how to embed: its metadata files.

modules.json (the modules, their folders), the Pooling config, ``max_seq_length`` and the
saved prompts, every file and field checked (:func:`read_sentence_transformers_metadata`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localembed.model_errors import ModelFileError
from localembed.model_origins import display_path, fix_for, scrub

__all__ = [
    "ST_MODULE_PREFIX",
    "ST_POOLING_FLAGS",
    "SentenceTransformersMetadata",
    "read_sentence_transformers_metadata",
]

# sentence-transformers Pooling config flag -> our pooling mode.
ST_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "last_token",
    "pooling_mode_weightedmean_tokens": "weighted_mean",
}


ST_MODULE_PREFIX = "sentence_transformers."
"""Module classes in modules.json must be sentence-transformers' own
(``sentence_transformers.models.X`` or its newer module paths); a custom class is refused."""


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


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        msg = f"cannot read {display_path(path)}: {scrub(str(error))}; {fix_for(path)}"
        raise ModelFileError(msg) from error


def _bad_field(path: Path, field: str, expected: str, value: Any) -> ModelFileError:
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    msg = (
        f"{display_path(path)}: {field} must be {expected}, got {shown} "
        f"({type(value).__name__}); {fix_for(path)}"
    )
    return ModelFileError(msg)


def _read_object(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise _bad_field(path, "the file", "a JSON object", data)
    return data


def _module_directory(directory: Path, modules_file: Path, index: int, relative: Any) -> Path:
    """The folder of module ``index`` of modules.json, which must lie inside ``directory``."""
    field = f"module {index} 'path'"
    if not isinstance(relative, str):
        raise _bad_field(modules_file, field, "a relative folder name (str)", relative)
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts or relative.startswith("~"):
        raise _bad_field(modules_file, field, "a folder inside the model directory", relative)
    resolved = (directory / candidate).resolve()
    if not resolved.is_relative_to(directory.resolve()):
        raise _bad_field(
            modules_file, field, "a folder inside the model directory (a link leaves it)", relative
        )
    return directory / candidate


def read_sentence_transformers_metadata(directory: Path) -> SentenceTransformersMetadata:
    """Read modules.json, the Pooling config, max_seq_length and saved prompts when present.

    Every file and field is checked: a wrong JSON type, a ``max_seq_length`` that is not a
    positive integer, prompts that are not strings, a module folder outside the model
    directory, or a module class that is not sentence-transformers' own is a
    :class:`ModelFileError` naming the file and the field.
    """
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return SentenceTransformersMetadata(transformer_path=directory)
    modules = _read_json(modules_file)
    if not isinstance(modules, list):
        raise _bad_field(modules_file, "the file", "a JSON list of modules", modules)
    transformer_path = directory
    pooling = None
    normalize = False
    unsupported = []
    for index, module in enumerate(modules):
        if not isinstance(module, dict):
            raise _bad_field(modules_file, f"module {index}", "a JSON object", module)
        module_type = module.get("type")
        if not isinstance(module_type, str) or not module_type:
            raise _bad_field(modules_file, f"module {index} 'type'", "a class name", module_type)
        if not module_type.startswith(ST_MODULE_PREFIX):
            msg = (
                f"{display_path(modules_file)}: module {index} 'type' is {module_type!r}, a "
                f"custom class, not one of sentence-transformers' own ({ST_MODULE_PREFIX}...); "
                f"localembed does not run a model's own code and will not treat it as the "
                f"stock class (it may compute something else)"
            )
            raise ModelFileError(msg)
        kind = module_type.rsplit(".", 1)[-1]
        module_dir = _module_directory(directory, modules_file, index, module.get("path", ""))
        if kind == "Transformer":
            transformer_path = module_dir
        elif kind == "Pooling":
            pooling_file = module_dir / "config.json"
            config = _read_object(pooling_file)
            for key, value in config.items():
                if key.startswith("pooling_mode_") and not isinstance(value, bool):
                    raise _bad_field(pooling_file, repr(key), "true or false", value)
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
        config_file = transformer_path / name
        if config_file.is_file():
            value = _read_object(config_file).get("max_seq_length")
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise _bad_field(config_file, "'max_seq_length'", "a positive integer", value)
            max_seq_length = value
            break
    prompts: dict[str, str] = {}
    prompts_file = directory / "config_sentence_transformers.json"
    if prompts_file.is_file():
        saved = _read_object(prompts_file).get("prompts")
        if saved is not None and not isinstance(saved, dict):
            raise _bad_field(prompts_file, "'prompts'", "an object of name: prompt", saved)
        for key, value in (saved or {}).items():
            if not isinstance(value, str):
                raise _bad_field(prompts_file, f"prompt {key!r}", "a string", value)
            prompts[str(key)] = value
    return SentenceTransformersMetadata(
        transformer_path=transformer_path,
        pooling=pooling,
        normalize=normalize,
        max_seq_length=max_seq_length,
        prompts=prompts,
        unsupported_modules=tuple(unsupported),
    )
