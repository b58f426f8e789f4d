"""``localembed serve``: embeddings, sparse vectors and reranking over HTTP (extra ``serve``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from localembed.cli.common import (
    UsageError,
    add_command,
    add_model_options,
    config_from_args,
)
from localembed.errors import InputError

if TYPE_CHECKING:
    from localembed.cli.common import Commands
    from localembed.server.models import ModelSpec
    from localembed.server.settings import ServerSettings

EXAMPLES = """\
examples:
  localembed serve                                   # the embedded model on 127.0.0.1:8000
  localembed serve --model BAAI/bge-small-en-v1.5 --port 8080 --api-key s3cret
  localembed serve --model BAAI/bge-small-en-v1.5 --model BAAI/bge-m3 \\
      --reranker BAAI/bge-reranker-v2-m3 --lazy --max-loaded-models 2 --idle-unload 600
  localembed serve --config models.toml              # one [models.ID] table per model
  LOCALEMBED_API_KEY=s3cret localembed serve --max-queue 64 --no-truncate
  curl -s localhost:8000/v1/embeddings -d '{"input": ["hello", "world"]}'"""

SERVE_MODULES = ("fastapi", "uvicorn", "prometheus_client")
"""What ``localembed serve`` needs (the ``serve`` extra)."""


def register(commands: Commands) -> None:
    """Add ``serve`` to ``commands``."""
    from localembed.server.run import add_serve_arguments

    parser = add_command(
        commands,
        "serve",
        "Serve embedding models and rerankers over HTTP: OpenAI's embeddings API, Cohere-style "
        "rerank, and text-embeddings-inference's routes.",
        EXAMPLES,
        run,
    )
    add_model_options(parser, model=False)
    models = parser.add_argument_group("served models")
    models.add_argument(
        "--model",
        dest="models",
        action="append",
        default=None,
        metavar="MODEL",
        help="an embedding model to serve (repeat for several; the first is the default); the "
        "model options above apply to each (default: the embedded all-MiniLM-L6-v2)",
    )
    models.add_argument(
        "--reranker",
        dest="rerankers",
        action="append",
        default=None,
        metavar="MODEL",
        help="a cross-encoder (or bge-m3) to serve for POST /v1/rerank and /rerank (repeat for "
        "several); without one, a served bge-m3 reranks by its own heads",
    )
    models.add_argument(
        "--config",
        default=None,
        metavar="FILE.toml",
        help="a TOML file with one [models.ID] table per served model (and an optional "
        "[server] table); flags given too override its [server] settings",
    )
    models.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="an embedding cache (a directory or redis://...) for every served embedding model",
    )
    add_serve_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``localembed serve`` until SIGTERM or Ctrl-C (drains, then exits 0)."""
    from localembed.extras import require

    for module in SERVE_MODULES:  # before anything loads: say which extra to install
        require(module, "localembed serve")
    from localembed.server.run import serve

    try:
        settings, specs = _settings_and_models(args)
    except InputError as error:
        raise UsageError(str(error)) from error
    return serve(
        settings=settings,
        models=specs,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
    )


def _settings_and_models(args: argparse.Namespace) -> tuple[ServerSettings, list[ModelSpec]]:
    """The server settings and the served models of the flags (and --config)."""
    from localembed.config import EncoderConfig
    from localembed.server.models import (
        check_contexts,
        check_specs,
        embedding_spec,
        read_config_file,
        reranker_spec,
    )
    from localembed.server.run import settings_from_args

    file_options: dict[str, Any] = {}
    specs: list[ModelSpec] = []
    if args.config is not None:
        file_options, specs = read_config_file(args.config)
    base = config_from_args(args)
    names = args.models or ([] if specs else [None])
    for index, name in enumerate(names):
        config = (
            base if name is None else EncoderConfig(**{**base.explicit_options(), "model": name})
        )
        model_id = args.model_name if index == 0 else None
        specs.append(embedding_spec(config, model_id))
    for name in args.rerankers or []:
        specs.append(reranker_spec(name, base))
    if args.cache is not None:
        specs = [_with_cache(spec, args.cache) for spec in specs]
    settings = settings_from_args(args, file_options)
    if args.model_name is not None and len(names) != 1:
        message = "--model-name names one --model; with several, use a --config file's ids"
        raise InputError(message)
    return settings, check_contexts(check_specs(specs))  # a wrong context stops it here


def _with_cache(spec: ModelSpec, cache: str) -> ModelSpec:
    """``spec`` with ``cache`` in an embedding model's settings (rerankers have none)."""
    from dataclasses import replace

    from localembed.config import EncoderConfig

    if spec.kind != "embedding":
        return spec
    config = EncoderConfig(**{**spec.config.explicit_options(), "cache": cache})
    return replace(spec, config=config)
