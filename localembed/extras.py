"""Optional dependencies: one table of which extra brings which module, one import helper.

Example:
    >>> EXTRAS["fastapi"]
    'serve'
    >>> install_hint("fastapi")
    'pip install "localembed[serve]"'

"""

from __future__ import annotations

import importlib
from types import ModuleType

from localembed.errors import MissingExtraError

__all__ = ["EXTRAS", "install_hint", "require"]

EXTRAS: dict[str, str] = {
    "langchain_core": "langchain",
    "langchain_text_splitters": "langchain",
    "llama_index.core": "llamaindex",
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "FlagEmbedding": "m3",
    "ray": "ray",
    "ray.data": "ray",
    "ray.serve": "ray",
    "fastapi": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "matplotlib": "cli",
    "pyarrow": "cli",
    "redis": "cache",
    "model2vec": "distill",
    "sentence_transformers": "test",
}
"""Top-level module -> the localembed extra that installs it (``pip install "localembed[X]"``)."""


def install_hint(module: str) -> str:
    """The pip command that installs ``module`` through its extra."""
    extra = EXTRAS.get(module) or EXTRAS.get(module.split(".")[0])
    if extra is None:
        return f"pip install {module.split('.')[0]}"
    return f'pip install "localembed[{extra}]"'


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``purpose`` and the extra.

    Args:
        module: the module to import (a key of :data:`EXTRAS`, or a submodule of one).
        purpose: what needs it, as the start of the message ("localembed serve").

    Raises:
        MissingExtraError: the module (or one it imports) is not installed.

    Example:
        >>> require("json", "reading JSON").__name__
        'json'

    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        msg = f"{purpose} needs {module.split('.')[0]} ({error}): {install_hint(module)}"
        raise MissingExtraError(msg) from error
