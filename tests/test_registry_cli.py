"""Entry points and load_adapter (the `localembed` command's tests are in test_cli.py)."""

from __future__ import annotations

import pytest

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding
from localembed import available_adapters, load_adapter


def test_available_adapters() -> None:
    assert available_adapters() == [
        "langchain",
        "langchain-reranker",
        "llamaindex",
        "llamaindex-reranker",
    ]


def test_load_adapter_builds_each_framework() -> None:
    langchain = load_adapter("langchain", pooling="mean")
    llamaindex = load_adapter("llamaindex", pooling="mean")
    assert isinstance(langchain, LocalEmbeddings)
    assert isinstance(llamaindex, LocalEmbedding)
    assert langchain.encoder is llamaindex.encoder


def test_load_adapter_unknown_name() -> None:
    with pytest.raises(
        ValueError, match="installed adapters: langchain, langchain-reranker, llamaindex"
    ):
        load_adapter("haystack")
