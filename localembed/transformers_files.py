"""A transformers model folder's config.json and tokenizer: checked, then loaded.

The checks come before transformers reads anything: config.json present and valid, remote
code only when trusted (:func:`check_model_files`), a fast tokenizer that fits the model's
vocabulary (:func:`load_tokenizer`); then the config (:func:`load_model_config`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localembed.model_errors import (
    MissingModelFileError,
    ModelFileError,
    RemoteCodeError,
    UnsupportedModelError,
)
from localembed.model_origins import display_path, fix_for, origin_of, scrub

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

__all__ = ["TOKENIZER_VOCAB_FILES", "check_model_files", "load_model_config", "load_tokenizer"]

TOKENIZER_VOCAB_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
    "spm.model",
    "sentencepiece.model",
)
"""Files that hold a tokenizer's vocabulary; tokenizer_config.json alone is not a tokenizer."""


def check_model_files(directory: Path, *, trust_remote_code: bool) -> dict[str, Any]:
    """Check config.json (present, valid JSON) and remote code; return the parsed config.

    Raises:
        MissingModelFileError: config.json is missing.
        ModelFileError: config.json (or tokenizer_config.json) is not valid JSON.
        RemoteCodeError: the model maps classes to its own code (``auto_map``) and
            ``trust_remote_code`` is False.

    """
    config_file = directory / "config.json"
    if not config_file.is_file():
        msg = (
            f"{display_path(config_file)} is missing: a transformers model directory needs its "
            f"config.json (architecture and sizes); {fix_for(config_file)}"
        )
        raise MissingModelFileError(msg)
    config = _read_json_file(config_file)
    auto_map: dict[str, Any] = {}
    if isinstance(config.get("auto_map"), dict):
        auto_map.update(config["auto_map"])
    tokenizer_config_file = directory / "tokenizer_config.json"
    if tokenizer_config_file.is_file():
        tokenizer_auto_map = _read_json_file(tokenizer_config_file).get("auto_map")
        if isinstance(tokenizer_auto_map, dict):
            auto_map.update({k: v for k, v in tokenizer_auto_map.items() if k not in auto_map})
    if auto_map and not trust_remote_code:
        origin = origin_of(directory)
        name = repr(origin[1]) if origin else display_path(directory)
        classes = ", ".join(f"{key} -> {value}" for key, value in sorted(auto_map.items()))
        msg = (
            f"model {name} ships its own Python code: its auto_map ({classes}) names classes "
            f"that are not built into transformers. localembed does not run a model's code "
            f"unless you pass trust_remote_code=True (CLI: --trust-remote-code); without it the "
            f"model would fail to load, or load as a stock architecture and give wrong vectors. "
            f"Pass it only for a repository you trust, after reading its .py files"
        )
        raise RemoteCodeError(msg)
    return config


def _read_json_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        msg = (
            f"{display_path(path)} is not valid JSON ({scrub(str(error))}): the file is "
            f"truncated or corrupt; {fix_for(path)}"
        )
        raise ModelFileError(msg) from error
    if not isinstance(data, dict):
        msg = f"{display_path(path)} is not a JSON object; {fix_for(path)}"
        raise ModelFileError(msg)
    return data


def load_tokenizer(directory: Path, *, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    """Load the model's fast tokenizer and check that it fits the model's vocabulary.

    Raises:
        MissingModelFileError: config.json or every tokenizer vocabulary file is missing.
        ModelFileError: a tokenizer file is corrupt, or the tokenizer has more tokens than
            the model's ``vocab_size`` (a tokenizer from another model).
        RemoteCodeError: the model needs its own code and ``trust_remote_code`` is False.

    """
    from transformers import AutoTokenizer

    config = check_model_files(directory, trust_remote_code=trust_remote_code)
    vocab_files = [directory / name for name in TOKENIZER_VOCAB_FILES]
    present = [path for path in vocab_files if path.is_file()]
    if not present:
        msg = (
            f"no tokenizer in {display_path(directory)}: none of "
            f"{', '.join(TOKENIZER_VOCAB_FILES)} is there (tokenizer_config.json alone holds no "
            f"vocabulary); {fix_for(directory)}"
        )
        raise MissingModelFileError(msg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(directory), trust_remote_code=trust_remote_code, use_fast=True
        )
    except ImportError:
        raise
    except Exception as error:  # JSONDecodeError, the Rust tokenizers' Exception, OSError...
        msg = (
            f"cannot load the tokenizer from {display_path(present[0])}: "
            f"{type(error).__name__}: {scrub(str(error))}; the file is truncated or corrupt; "
            f"{fix_for(directory)}"
        )
        raise ModelFileError(msg) from error
    if not tokenizer.is_fast:
        msg = (
            f"{display_path(directory)} has no fast tokenizer (tokenizer.json); localembed "
            f"needs one"
        )
        raise UnsupportedModelError(msg)
    vocab_size = config.get("vocab_size")
    if isinstance(vocab_size, int) and len(tokenizer) > vocab_size:
        msg = (
            f"the tokenizer does not match the model: {display_path(present[0])} has "
            f"{len(tokenizer)} tokens but {display_path(directory / 'config.json')} has "
            f"vocab_size={vocab_size}, so token ids {vocab_size} to {len(tokenizer) - 1} have no "
            f"embedding (a crash or wrong vectors); fix: use the tokenizer files saved with "
            f"this model (same directory or hub revision)"
        )
        raise ModelFileError(msg)
    return tokenizer


def load_model_config(directory: Path, *, trust_remote_code: bool) -> PretrainedConfig:
    """Load the transformer's config.json (architecture, sizes, position limit)."""
    from transformers import AutoConfig

    check_model_files(directory, trust_remote_code=trust_remote_code)
    config_file = directory / "config.json"
    try:
        config: PretrainedConfig = AutoConfig.from_pretrained(
            str(directory), trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError) as error:
        msg = (
            f"cannot load {display_path(config_file)}: {type(error).__name__}: "
            f"{scrub(str(error))}; {fix_for(config_file)} (or upgrade transformers if the "
            f"model_type is newer than it)"
        )
        raise ModelFileError(msg) from error
    return config
