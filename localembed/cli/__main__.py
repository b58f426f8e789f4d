"""``python -m localembed.cli``: the ``localembed`` command (see :mod:`localembed.__main__`)."""

from __future__ import annotations

import runpy

if __name__ == "__main__":
    # Run the top-level entry as a script: importing it here would make cli and
    # localembed.__main__ import each other.
    runpy.run_module("localembed", run_name="__main__", alter_sys=True)
