"""Adapter discovery through the ``localembed.adapters`` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from localembed.errors import InputError

ENTRY_POINT_GROUP = "localembed.adapters"
_EXTRAS = {
    "langchain": "langchain",
    "llamaindex": "llamaindex",
    "langchain-reranker": "langchain",
    "llamaindex-reranker": "llamaindex",
}


def available_adapters() -> list[str]:
    """Names of the installed framework adapters: embeddings and rerankers.

    Example:
        >>> from localembed import available_adapters
        >>> available_adapters()
        ['langchain', 'langchain-reranker', 'llamaindex', 'llamaindex-reranker']

    """
    return sorted(point.name for point in entry_points(group=ENTRY_POINT_GROUP))


def load_adapter(name: str, **options: Any) -> Any:
    """Build the adapter registered as ``name`` with the encoder ``options``.

    Example:
        >>> from localembed import load_adapter
        >>> type(load_adapter("langchain", pooling="mean")).__name__
        'LocalEmbeddings'

    Raises:
        ValueError: no adapter has that name; the message lists the installed ones.
        ImportError: the adapter's framework is not installed; the message names the extra.

    """
    points = {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in points:
        msg = (
            f"no adapter named {name!r}; installed adapters: {', '.join(sorted(points)) or 'none'}"
        )
        raise InputError(msg)
    try:
        adapter_class = points[name].load()
    except ImportError as error:
        from localembed.errors import MissingExtraError
        from localembed.extras import EXTRAS, install_hint

        module = next((m for m, extra in EXTRAS.items() if extra == _EXTRAS.get(name)), name)
        msg = f"the {name!r} adapter needs its framework ({error}): {install_hint(module)}"
        raise MissingExtraError(msg) from error
    return adapter_class(**options)
