"""``localembed serve``: an OpenAI-compatible embeddings server (extra ``serve``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from localembed.cli.common import add_command, add_model_options, config_from_args

if TYPE_CHECKING:
    from localembed.cli.common import Commands

EXAMPLES = """\
examples:
  localembed serve                                   # the embedded model on 127.0.0.1:8000
  localembed serve --model BAAI/bge-small-en-v1.5 --port 8080 --api-key s3cret
  LOCALEMBED_API_KEY=s3cret localembed serve --max-queue 64 --no-truncate
  curl -s localhost:8000/v1/embeddings -H 'Content-Type: application/json' \\
      -d '{"input": ["hello", "world"]}'"""


def register(commands: Commands) -> None:
    """Add ``serve`` to ``commands``."""
    from localembed.server.run import add_serve_arguments

    parser = add_command(
        commands,
        "serve",
        "Serve a model over HTTP with OpenAI's embeddings API (POST /v1/embeddings).",
        EXAMPLES,
        run,
    )
    add_model_options(parser)
    add_serve_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``localembed serve`` until SIGTERM or Ctrl-C (drains, then exits 0)."""
    from localembed.server.run import serve, settings_from_args

    return serve(
        config_from_args(args),
        settings_from_args(args),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
    )
