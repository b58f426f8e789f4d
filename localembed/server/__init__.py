"""``localembed serve``: an OpenAI-compatible embeddings server over the shared encoder.

``create_app(config, settings)`` builds the FastAPI app (extra ``serve``);
:func:`localembed.server.run.serve` (``localembed serve``) runs it with uvicorn and a graceful
SIGTERM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localembed.server.settings import ServerSettings

if TYPE_CHECKING:
    from localembed.server.app import create_app

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from localembed.server.app import create_app

        return create_app
    msg = f"module 'localembed.server' has no attribute {name!r}"
    raise AttributeError(msg)
