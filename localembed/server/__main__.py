"""``python -m localembed.server``: the same as ``localembed serve``."""

from __future__ import annotations

import sys

from localembed.server.run import main

if __name__ == "__main__":
    sys.exit(main())
