"""``python -m localembed``: the ``localembed`` command."""

from __future__ import annotations

from localembed.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
