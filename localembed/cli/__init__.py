"""The ``localembed`` command: one module per subcommand, registered in :data:`COMMANDS`.

Exit status: 0 done, 1 an error (one line on stderr for the user's errors, see
:data:`localembed.cli.common.HANDLED`; a traceback for a bug), 2 a usage error, 130
interrupted (Ctrl-C / SIGINT).

A subcommand is a module ``localembed/cli/NAME.py`` with ``EXAMPLES`` (the epilog of its help)
and ``register(commands)``, which adds its parser with :func:`localembed.cli.common.add_command`
(that binds the function that runs it); adding its name to :data:`COMMANDS` makes it part of
the command. Command modules import only light modules at the top; torch, the encoder and the
benchmark machinery are imported when a command runs.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from types import FrameType, ModuleType

from localembed import __version__
from localembed.cli.common import (
    HANDLED,
    CommandError,
    Interrupted,
    UsageError,
    error_message,
)
from localembed.hardware import configure_process

COMMANDS = (
    "embed",
    "similarity",
    "rerank",
    "serve",
    "tokens",
    "info",
    "bench",
    "download",
    "distill",
)
"""The subcommands, in the order ``localembed --help`` lists them: one line per module."""

OVERVIEW = """\
examples:
  localembed embed docs.txt -o docs.npy
  localembed similarity "A cat sits on the mat." "A kitten rests on a rug."
  localembed rerank "where do cats sleep?" --file docs.txt --model BAAI/bge-reranker-base
  localembed serve --model BAAI/bge-small-en-v1.5 --port 8000
  localembed tokens "Embeddings turn text into vectors."
  localembed info --json
  localembed bench --contenders "localembed fp32" --rounds 1 --no-stream
  localembed download BAAI/bge-small-en-v1.5 --to models/bge-small
  localembed distill -o models/minilm-static

Run `localembed COMMAND --help` for a command's options and examples."""


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"localembed.cli.{name}")


EXAMPLES: dict[str, str] = {name: str(_module(name).EXAMPLES) for name in COMMANDS}
"""Each command's examples (the epilog of its ``--help``)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``localembed`` command."""
    parser = argparse.ArgumentParser(
        prog="localembed",
        description="Local text embeddings (offline-first).",
        epilog=OVERVIEW,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"localembed {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        _module(name).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``localembed`` command; returns the exit status.

    Ctrl-C (SIGINT) gives 130 every time: the first one interrupts the command (a
    KeyboardInterrupt, reported by the command) and later ones wait for its clean-up; an
    interrupt that Python lost (raised inside a finalizer, which Python ignores) is still
    reported, and, run as the ``localembed`` process (``argv`` None), one that arrives after the
    command finished exits 130 at once.
    """
    entered = threading.Event()  # set as the command's own handling begins (in _run)
    try:
        with _sigint_guard(process=argv is None) as interrupted:
            status = _run(argv, entered)
            if interrupted.is_set() and status != 130:
                _say_finished_then_interrupted(f" (it would have exited {status})")
                status = 130
    except KeyboardInterrupt:
        # The Ctrl-C came between two steps outside the command's own handling: as the guard
        # put its handler in place (nothing has run), or as the command returned.
        if entered.is_set():
            _say_finished_then_interrupted("")
        else:
            print("localembed: interrupted; no output was written", file=sys.stderr)
        status = 130
    return status


def _say_finished_then_interrupted(would_have: str) -> None:
    print(
        f"localembed: interrupted (Ctrl-C) as the command finished{would_have}; "
        f"what it wrote is complete",
        file=sys.stderr,
    )


@contextlib.contextmanager
def _sigint_guard(*, process: bool) -> Iterator[threading.Event]:
    """Count SIGINT while a command runs; the first raises KeyboardInterrupt, later ones wait.

    Only in the main thread (signal handlers live there); elsewhere it changes nothing.
    """
    received = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        first = not received.is_set()
        received.set()
        if first:
            raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT)
    try:
        # Inside the try: a SIGINT the moment the handler is in place (its KeyboardInterrupt
        # is raised as signal.signal returns) still goes through the clean-up below.
        signal.signal(signal.SIGINT, interrupt)
        yield received
    finally:
        if process:
            # The command is done: a Ctrl-C now (during Python's shut-down, which would
            # ignore a KeyboardInterrupt and exit 0) ends the process with 130 at once; said
            # once (not again after an interrupt the command reported).

            def exit_interrupted(signum: int, frame: FrameType | None) -> None:
                with contextlib.suppress(OSError, ValueError):
                    sys.stdout.flush()
                    if not received.is_set():
                        message = "localembed: interrupted (Ctrl-C) after the command finished"
                        print(message, file=sys.stderr)
                    sys.stderr.flush()
                os._exit(130)

            signal.signal(signal.SIGINT, exit_interrupted)
            # Python's finalization puts the default SIGINT handler back after the atexit
            # handlers, so a Ctrl-C then would kill the process by signal; ignored from the
            # atexit stage on, the process exits with its status.
            atexit.register(_block_sigint)
        elif previous is not None:  # None: a handler not set from Python, left as it is
            signal.signal(signal.SIGINT, previous)


def _block_sigint() -> None:
    """Ignore SIGINT for the rest of the process's shut-down (an atexit handler).

    Ignored, not blocked: a signal mask is per thread, and torch's threads would still take it.
    """
    with contextlib.suppress(OSError, ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(argv: list[str] | None, entered: threading.Event) -> int:
    # Before torch loads (no command has imported it yet): a passive OpenMP wait policy and,
    # on AMD CPUs with AVX-512, oneDNN Linear layers, unless the user set them. When main()
    # runs inside a process that already imported torch (tests), it changes nothing.
    command = "command"
    try:
        entered.set()  # from here on a KeyboardInterrupt is reported below
        configure_process(warn_after_torch=False)
        args = build_parser().parse_args(argv)
        command = args.command
        status: int = args.handler(args)
    except UsageError as error:
        print(f"localembed {command}: error: {error}", file=sys.stderr)
        return 2
    except Interrupted:
        return 130
    except KeyboardInterrupt:
        print("localembed: interrupted; no output was written", file=sys.stderr)
        return 130
    except CommandError as error:
        print(f"localembed: {error}", file=sys.stderr)
        return 1
    except HANDLED as error:
        print(f"localembed: {error_message(error)}", file=sys.stderr)
        return 1
    except Exception:  # a bug (in localembed or a library it calls): show where
        traceback.print_exc()
        print(
            "localembed: an unexpected error (the traceback above is a bug; please report it)",
            file=sys.stderr,
        )
        return 1
    return status
