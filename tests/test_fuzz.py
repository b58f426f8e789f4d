"""Property-based fuzzing (hypothesis) of the encoder and both adapters over arbitrary unicode.

About 2,000 examples in all, on the tiny BERT, XLM-RoBERTa and Qwen2 fixtures (real
WordPiece, Unigram and byte-level BPE tokenizers) with ``max_length=16`` so that truncation
is exercised too. Properties: one row per text, finite values, unit norm when normalizing,
the same text gives the same vector (in one call, in any order, at any batch size), and input
that is not a list of str is a TypeError, never another error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding
from localembed import get_encoder
from localembed.encoder import LocalEncoder

# Every code point: controls, format characters, private use, unassigned and surrogates.
ANY_CHARACTER = st.characters(codec=None, exclude_categories=())
SPECIAL = st.sampled_from(
    [
        "\x00",
        "\x1b",
        "\x7f",
        "\u200b",
        "\u202e",
        "\ufeff",
        "\ufffd",
        "\ud800",
        "\udfff",
        "\U0001f600",
        "\u0301",
        "\n",
        " ",
        "\u3000",
        "你",
        "ا",
    ]
)
TEXT = st.one_of(
    st.text(ANY_CHARACTER, max_size=24),
    st.text(st.one_of(ANY_CHARACTER, SPECIAL), min_size=40, max_size=120),  # truncated
    st.text(SPECIAL, max_size=8),
    st.text(max_size=24),  # hypothesis' default: readable text
)
TEXTS = st.lists(TEXT, min_size=1, max_size=8)

FUZZ = settings(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Shared settings; each test sets its own number of examples (about 2,000 in all)."""


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # Tiny matrices: one intra-op thread is fastest, and immune to an oversubscribed CPU.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module", autouse=True)
def quiet_warnings() -> Iterator[None]:
    # Truncation and invalid-unicode warnings on thousands of examples; their counts are
    # tested elsewhere.
    logger = logging.getLogger("localembed")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.fixture(scope="module")
def fuzz_encoders(tiny_bert_dir: Path, tiny_xlmr_dir: Path, tiny_qwen2_dir: Path):
    return {
        "bert-mean": get_encoder(model=str(tiny_bert_dir), pooling="mean", max_length=16),
        "xlmr-cls": get_encoder(model=str(tiny_xlmr_dir), pooling="cls", max_length=16),
        "qwen2-last": get_encoder(model=str(tiny_qwen2_dir), pooling="last_token", max_length=16),
        "bert-max-raw": get_encoder(
            model=str(tiny_bert_dir), pooling="max", max_length=16, normalize=False
        ),
    }


def check_rows(vectors: np.ndarray, texts: list[str], encoder: LocalEncoder) -> None:
    assert vectors.shape == (len(texts), encoder.dimension)
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    if encoder.settings.normalize:
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    first: dict[str, int] = {}
    for row, text in enumerate(texts):  # the same text, the same vector
        if text in first:
            np.testing.assert_allclose(vectors[row], vectors[first[text]], atol=1e-6)
        first.setdefault(text, row)


@settings(FUZZ, max_examples=1200)
@given(
    texts=TEXTS,
    name=st.sampled_from(["bert-mean", "xlmr-cls", "qwen2-last", "bert-max-raw"]),
    batch_size=st.integers(1, 8),
)
def test_encoder_properties(fuzz_encoders, texts: list[str], name: str, batch_size: int) -> None:
    encoder = fuzz_encoders[name]
    vectors = encoder.encode(texts, batch_size=batch_size)
    check_rows(vectors, texts, encoder)
    again = encoder.encode(texts[::-1], batch_size=9 - batch_size)[::-1]
    assert np.abs(again - vectors).max() <= 1e-5  # order and batch size do not matter


@pytest.fixture(scope="module")
def fuzz_adapters(tiny_qwen2_dir: Path):
    options = {"model": str(tiny_qwen2_dir), "pooling": "last_token", "max_length": 16}
    return LocalEmbeddings(**options), LocalEmbedding(**options)


@settings(FUZZ, max_examples=200)
@given(texts=TEXTS)
def test_adapter_properties(fuzz_adapters, texts: list[str]) -> None:
    langchain, llamaindex = fuzz_adapters
    documents = np.asarray(langchain.embed_documents(texts), dtype=np.float32)
    check_rows(documents, texts, langchain.encoder)
    batch = np.asarray(llamaindex.get_text_embedding_batch(texts), dtype=np.float32)
    assert np.abs(batch - documents).max() <= 1e-5
    query = np.asarray(langchain.embed_query(texts[0]), dtype=np.float32)
    np.testing.assert_allclose(query, np.asarray(llamaindex.get_query_embedding(texts[0])))
    assert np.abs(query - documents[0]).max() <= 1e-5  # no instructions on this model
    asynchronous = asyncio.run(langchain.aembed_documents(texts))
    assert np.abs(np.asarray(asynchronous, dtype=np.float32) - documents).max() <= 1e-5


ANYTHING = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.binary(max_size=8),
        TEXT,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=3), children, max_size=3),
        st.frozensets(st.text(max_size=3), max_size=3),
    ),
    max_leaves=8,
)


def expected_type_error(value: Any) -> str | None:
    """None when ``value`` is a valid list of texts, else the TypeError message expected."""
    if isinstance(value, (str, bytes)):
        return "single"
    if isinstance(value, (dict, frozenset)):
        return "no position"
    if not isinstance(value, (list, tuple)):
        return f"got {type(value).__name__}"
    for index, item in enumerate(value):
        if not isinstance(item, str):
            return f"item {index} is {type(item).__name__}, not str"
    return None


@settings(FUZZ, max_examples=600)
@given(value=ANYTHING)
def test_any_input_gives_vectors_or_a_type_error(fuzz_encoders, value: Any) -> None:
    encoder = fuzz_encoders["bert-mean"]
    message = expected_type_error(value)
    if message is None:
        check_rows(encoder.encode(value), list(value), encoder)
    else:
        with pytest.raises(TypeError, match=message.replace("(", r"\(")):
            encoder.encode(value)
