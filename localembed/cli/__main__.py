"""``python -m localembed.cli``: the ``localembed`` command (see :mod:`localembed.__main__`)."""

from __future__ import annotations

import sys

from localembed.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
