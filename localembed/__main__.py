"""``python -m localembed`` and the ``localembed`` console script: the ``localembed`` command.

The first thing the command does is take Ctrl-C: until the command's own handling is in
place (:func:`localembed.cli.main`), a SIGINT while Python imports it (pydantic, numpy, the
command modules: 1-4 s on a busy machine) ends the process with status 130 and one line,
not a ``KeyboardInterrupt`` traceback. Nothing has been written then. This module imports
only the standard library before that.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

STARTING_MESSAGE = "localembed: interrupted (Ctrl-C) while starting; nothing was done\n"
"""What a Ctrl-C before the command runs prints (on stderr)."""


def _interrupted_while_starting(signum: int, frame: FrameType | None) -> None:
    try:
        os.write(2, STARTING_MESSAGE.encode())
    finally:
        os._exit(130)


def main() -> int:
    """Take Ctrl-C, then import and run the command; returns its exit status."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    from localembed.cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
