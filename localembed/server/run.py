"""Run the server: ``localembed serve`` flags, uvicorn, and a graceful SIGTERM.

On SIGTERM (or Ctrl-C) the server stops accepting connections, refuses new requests on open
ones (503), lets the requests in progress finish and answer, then exits with status 0.
Requests waiting for a model to load get a 503 at once, and a load still running (in its
own thread) is not waited for: the process exits without it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any

from localembed.errors import InputError
from localembed.server.settings import ServerSettings

if TYPE_CHECKING:
    from types import FrameType

    from localembed.config import EncoderConfig
    from localembed.server.models import ModelSpec

API_KEY_ENV = "LOCALEMBED_API_KEY"
"""Environment variable read for the API key when --api-key is not given."""

_FLAGS: tuple[tuple[str, str, type], ...] = (
    ("--max-client-batch", "max_client_batch", int),
    ("--max-queue", "max_queue", int),
    ("--max-request-bytes", "max_request_bytes", int),
    ("--model-name", "model_name", str),
    ("--max-wait-ms", "max_wait_ms", float),
    ("--load-timeout", "load_timeout_s", float),
    ("--max-loaded-models", "max_loaded_models", int),
    ("--max-loaded-mb", "max_loaded_mb", float),
    ("--idle-unload", "idle_unload_s", float),
    ("--keep-alive", "keep_alive_s", float),
)
"""Command-line flag -> ServerSettings field, and its type; help comes from the field."""


def port_number(value: str) -> int:
    """``--port``: an integer in 0..65535 (0: any free port), else a usage error (exit 2).

    Example:
        >>> port_number("8080")
        8080

    """
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        message = f"--port must be an integer from 0 to 65535, got {value!r}"
        raise argparse.ArgumentTypeError(message)
    return port


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server's flags (the models' are ``localembed.cli.serve``'s)."""
    fields = ServerSettings.model_fields
    group = parser.add_argument_group("server options")
    group.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    group.add_argument(
        "--port", type=port_number, default=8000, help="port to bind, 0-65535 (default: 8000)"
    )
    group.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}; unset: no key)",
    )
    for flag, name, kind in _FLAGS:
        info = fields[name]
        group.add_argument(
            flag,
            dest=name,
            type=kind,
            default=None,
            metavar="N" if kind is not str else None,
            help=" ".join((info.description or "").split()).replace("%", "%%"),
        )
    group.add_argument(
        "--truncate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cut over-long inputs and count them in the X-Truncated-Inputs header (default), "
        "or refuse them with a 400 naming the input (--no-truncate)",
    )
    group.add_argument(
        "--lazy",
        dest="preload",
        action="store_false",
        default=None,
        help="load each model on its first request (default: all at start, up to the caps)",
    )
    group.add_argument("--log-level", default="info", help="uvicorn's log level (default: info)")


def settings_from_args(
    args: argparse.Namespace, file_options: dict[str, Any] | None = None
) -> ServerSettings:
    """The ServerSettings of a config file's [server] table, then the flags given."""
    options: dict[str, Any] = dict(file_options or {})
    options.update(
        {name: getattr(args, name) for _, name, _ in _FLAGS if getattr(args, name) is not None}
    )
    for name in ("truncate", "preload"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    key = args.api_key or os.environ.get(API_KEY_ENV) or options.get("api_key")
    options["api_key"] = key or None
    from pydantic import ValidationError

    try:
        return ServerSettings(**options)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        message = f"server setting {where}: {first.get('msg')}"
        raise InputError(message) from error


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a one-line InputError naming the problem.

    The server binds before it loads anything, so a port in use is reported at once (exit
    status 1), and uvicorn serves on this very socket (no window for another process).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is already in use; pick another with --port"
        elif error.errno == errno.EACCES:
            message = f"no permission to listen on {host}:{port} (ports below 1024 need root)"
        else:
            message = f"cannot listen on {host}:{port}: {error.strerror or error}"
        raise InputError(message) from error
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    config: EncoderConfig | None = None,
    settings: ServerSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    models: list[ModelSpec] | None = None,
) -> int:
    """Serve the models until SIGTERM or Ctrl-C, then drain and return 0."""
    from localembed.extras import require

    uvicorn = require("uvicorn", "localembed serve")
    from localembed.server.app import create_app
    from localembed.server.memory import bound_heap

    settings = settings or ServerSettings()
    sock = bind(host, port)
    bound_heap()  # before torch allocates: batches of new shapes must not grow the RSS
    app = create_app(config, settings, models=models)
    state = app.state.localembed

    class DrainingServer(uvicorn.Server):  # type: ignore[name-defined,misc]
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            state.drain()  # new requests, and those waiting for a load, get a 503
            super().handle_exit(sig, frame)

    server = DrainingServer(
        uvicorn.Config(
            app,
            log_level=log_level,
            lifespan="on",
            timeout_keep_alive=settings.keep_alive_s,
        )
    )
    bound = sock.getsockname()[1]
    logging.getLogger("localembed").info("serving on http://%s:%d", host, bound)
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again for the handler that was
    # there before it: make that one a no-op, so that a drained server exits with status 0.
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _drained)
    server.run(sockets=[sock])
    loading = state.loading_threads
    if loading:  # a model still loading: exit now, not when its load ends
        shown = logging.getLogger("uvicorn.error")  # the logger uvicorn prints
        shown.info("exiting without waiting for %s", ", ".join(loading))
        _exit_now(0)
    return 0


def _exit_now(status: int) -> None:
    """Flush the output and leave the process now (no waiting for threads)."""
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def _drained(signum: int, frame: FrameType | None) -> None:
    """Runs after uvicorn has drained: the exit status stays 0."""
