"""Run the server: ``localembed serve`` flags, uvicorn, and a graceful SIGTERM.

On SIGTERM (or Ctrl-C) the server stops accepting connections, refuses new requests on open
ones (503), lets the requests in progress finish and answer, then exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

from localembed.server.settings import ServerSettings

if TYPE_CHECKING:
    from types import FrameType

    from localembed.config import EncoderConfig

API_KEY_ENV = "LOCALEMBED_API_KEY"
"""Environment variable read for the API key when --api-key is not given."""

_FLAGS: tuple[tuple[str, str], ...] = (
    ("--max-client-batch", "max_client_batch"),
    ("--max-queue", "max_queue"),
    ("--max-request-bytes", "max_request_bytes"),
    ("--model-name", "model_name"),
    ("--reranker", "reranker"),
)
"""Command-line flag -> ServerSettings field; help and type come from the field."""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server's flags (the model's: ``localembed.cli.common.add_model_options``)."""
    fields = ServerSettings.model_fields
    group = parser.add_argument_group("server options")
    group.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    group.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    group.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}; unset: no key)",
    )
    for flag, name in _FLAGS:
        info = fields[name]
        kind = str if name in {"model_name", "reranker"} else int
        group.add_argument(
            flag,
            dest=name,
            type=kind,
            default=None,
            help=" ".join((info.description or "").split()),
        )
    group.add_argument(
        "--truncate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cut over-long inputs and count them in the X-Truncated-Inputs header (default), "
        "or refuse them with a 400 naming the input (--no-truncate)",
    )
    group.add_argument(
        "--max-wait-ms",
        type=float,
        default=None,
        help=" ".join((fields["max_wait_ms"].description or "").split()),
    )
    group.add_argument("--log-level", default="info", help="uvicorn's log level (default: info)")


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The ServerSettings of the flags given (and the API key from the environment)."""
    options: dict[str, Any] = {
        name: getattr(args, name) for _, name in _FLAGS if getattr(args, name) is not None
    }
    if args.max_wait_ms is not None:
        options["max_wait_ms"] = args.max_wait_ms
    options["truncate"] = args.truncate
    options["api_key"] = args.api_key or os.environ.get(API_KEY_ENV) or None
    return ServerSettings(**options)


def serve(
    config: EncoderConfig | None = None,
    settings: ServerSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
) -> int:
    """Serve the model until SIGTERM or Ctrl-C, then drain and return 0."""
    import uvicorn

    from localembed.server.app import create_app

    app = create_app(config, settings)
    state = app.state.localembed

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            state.draining = True  # requests arriving from now on get a 503
            super().handle_exit(sig, frame)

    server = DrainingServer(
        uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    )
    logging.getLogger("localembed").info("serving on http://%s:%d", host, port)
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again for the handler that was
    # there before it: make that one a no-op, so that a drained server exits with status 0.
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _drained)
    server.run()
    return 0


def _drained(signum: int, frame: FrameType | None) -> None:
    """Runs after uvicorn has drained: the exit status stays 0."""
