"""MkDocs hook: show the docs tests' not-run markers on the page.

A block the docs tests cannot run carries ``<!-- docs: not-run reason="..." -->`` on the line
before it (``tests/test_docs.py`` counts these). An HTML comment is invisible on the rendered
page, so this hook turns each marker into a visible note with the same reason.
"""

from __future__ import annotations

import re
from typing import Any

NOT_RUN = re.compile(r'^<!-- docs: not-run reason="(?P<reason>[^"]+)" -->$', re.M)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace every not-run marker with an admonition naming its reason."""
    return NOT_RUN.sub(
        lambda m: f'!!! note "Not run by the docs tests"\n    {m["reason"]}\n', markdown
    )
