"""What every ``localembed`` command shares: registration, model flags, errors.

Nothing here imports torch, numpy or the encoder: ``localembed --help`` and every
``COMMAND --help`` stay fast, and nothing Unix-only is on this path.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from localembed.config import EncoderConfig, ModelOptions
from localembed.errors import LocalEmbedError
from localembed.pooling import POOLING_MODES
from localembed.texts import KINDS, Kind

C = TypeVar("C", bound=ModelOptions)

if TYPE_CHECKING:
    from localembed.encoder import LocalEncoder

    Commands = argparse._SubParsersAction[argparse.ArgumentParser]
    """The ``add_subparsers`` object each command module's ``register`` adds its parser to."""

Handler = Callable[[argparse.Namespace], int]
"""A command's body: parsed arguments in, exit status out."""

MODEL_FLAGS: tuple[tuple[str, str], ...] = (
    ("--model", "model"),
    ("--pooling", "pooling"),
    ("--dtype", "dtype"),
    ("--max-length", "max_length"),
    ("--truncate-dim", "truncate_dim"),
    ("--batch-size", "batch_size"),
    ("--max-batch-tokens", "max_batch_tokens"),
    ("--device", "device"),
    ("--backend", "backend"),
    ("--quantize", "quantize"),
    ("--long-text", "long_text"),
    ("--no-normalize", "normalize"),
    ("--trust-remote-code", "trust_remote_code"),
    ("--allow-pickle-weights", "allow_pickle_weights"),
    ("--context", "context"),
)
"""Command-line flag -> EncoderConfig field; help, type and choices come from the field."""

CACHE_FLAGS: tuple[tuple[str, str], ...] = (
    ("--cache", "cache"),
    ("--cache-max-bytes", "cache_max_bytes"),
)
"""The embedding cache's flags (commands that embed many texts add them: embed, serve)."""

HANDLED: tuple[type[BaseException], ...] = (
    LocalEmbedError,
    ValidationError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    MemoryError,
)
"""The user's errors, reported as one line with exit status 1 (their messages name the
problem): localembed's own (:class:`~localembed.errors.LocalEmbedError`), an invalid option
(pydantic's ``ValidationError``), a file that is missing, exists, or may not be read or
written, and memory the machine does not have. Anything else is a bug: its traceback is
printed."""


class UsageError(LocalEmbedError):
    """A wrong combination of arguments: exit status 2."""


class Interrupted(Exception):
    """Ctrl-C, reported already: exit status 130."""


class CommandError(LocalEmbedError):
    """An error whose one-line message is ready: exit status 1."""


def add_command(
    commands: Commands, name: str, summary: str, examples: str, handler: Handler
) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` (help, examples epilog) that runs ``handler``."""
    parser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def flag_options(name: str, config: type[ModelOptions] = EncoderConfig) -> dict[str, Any]:
    """The argparse keywords for a field of ``config``: its help, type and choices."""
    info = config.model_fields[name]
    text = " ".join((info.description or "").split()).replace("%", "%%")
    options: dict[str, Any] = {"dest": name, "default": None, "help": text}
    annotation = info.annotation
    if annotation in (bool, bool | None):
        # None when not given, so the config's default (and its "default" source) stays;
        # a default of True or None ("follow the model") is turned off by a --no- flag.
        options["action"] = "store_true" if info.default is False else "store_false"
        if info.default is not False:
            options["help"] = f"turn off: {text}"
        return options
    if name == "pooling":
        options["help"] += f" One of: auto, {', '.join(POOLING_MODES)}."
    if name == "context":
        options["metavar"] = "FILE"
        options["help"] = (
            "CDE models: a context file (saved by CorpusContext.save or --build-context) used "
            "for every text"
        )
    members = (
        typing.get_args(annotation)
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
        else (annotation,)
    )
    literals = [
        value
        for member in members
        if typing.get_origin(member) is typing.Literal
        for value in typing.get_args(member)
    ]
    if literals:
        options["choices"] = literals
    elif int in members:
        options["type"] = int
        options["metavar"] = "N"
    return options


def add_model_options(parser: argparse.ArgumentParser, *, model: bool = True) -> None:
    """Add the encoder's flags (from :data:`MODEL_FLAGS`), ``--instruction`` and ``--kind``."""
    group = parser.add_argument_group("model options (the same names as EncoderConfig)")
    for flag, name in MODEL_FLAGS:
        if name == "model" and not model:
            continue
        group.add_argument(flag, **flag_options(name))
    group.add_argument(
        "--instruction",
        default=None,
        help='prefix or "{text}" template put on every text: the query or document instruction '
        '(per --kind); default: the model\'s own; "" for none',
    )
    group.add_argument(
        "--kind",
        choices=KINDS,
        default="document",
        help="embed texts as documents or as queries (picks the instruction; default: document)",
    )


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--cache DIR|URL`` and ``--cache-max-bytes N`` (from :data:`CACHE_FLAGS`)."""
    group = parser.add_argument_group("embedding cache (the same names as EncoderConfig)")
    for flag, name in CACHE_FLAGS:
        options = flag_options(name)
        if name == "cache":
            options["metavar"] = "DIR|URL"
        group.add_argument(flag, **options)


def config_from_args(args: argparse.Namespace) -> EncoderConfig:
    """The EncoderConfig of the flags given (flags not given keep the config's defaults)."""
    options = {
        name: getattr(args, name)
        for _, name in MODEL_FLAGS + CACHE_FLAGS
        if getattr(args, name, None) is not None
    }
    if args.instruction is not None:
        options[f"{args.kind}_instruction"] = args.instruction
    return checked_config(EncoderConfig, options)


def checked_config(config: type[C], options: dict[str, Any]) -> C:
    """``config(**options)`` from flags; a value it refuses is a usage error naming the flag.

    Raises:
        UsageError: exit status 2, e.g. ``--batch-size: Input should be greater than 0``.
    """
    from pydantic import ValidationError

    try:
        return config(**options)
    except ValidationError as error:
        raise UsageError(error_message(error)) from None


def instruction_for(encoder: LocalEncoder, kind: Kind) -> str:
    """The encoder's resolved instruction for ``kind`` ("query" or "document")."""
    return encoder.settings.instruction(kind)


def error_message(error: BaseException) -> str:
    """One line for ``error``; a pydantic ValidationError names the flag."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        flags = {name: flag for flag, name in MODEL_FLAGS + CACHE_FLAGS}
        parts = []
        for item in error.errors():
            text = str(item["msg"]).removeprefix("Value error, ")
            where = ".".join(str(part) for part in item["loc"])
            parts.append(f"{flags.get(where, where)}: {text}" if where else text)
        return "; ".join(parts)
    return " ".join(str(error).split("\n")) or type(error).__name__


def short_label(text: str, width: int = 28) -> str:
    r"""``text`` on one line, cut to ``width`` characters with an ellipsis.

    Example:
        >>> short_label("A   cat\nsits on the mat, looking at the birds", 20)
        'A cat sits on the m…'

    """
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
