"""The embedded default gives sentence-transformers' vectors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from localembed import get_encoder

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "机器学习是人工智能的一个分支。",
    "Party time 🎉🥳🍕 with friends 👩‍👩‍👧",
    "",
    "   ",
    "A long text " + "about embeddings and retrieval " * 120,  # > 256 tokens
    "short",
    "مرحبا بالعالم",
]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_matches_sentence_transformers(st_default_model) -> None:
    ours = get_encoder().encode(TEXTS)
    reference = st_default_model.encode(TEXTS, convert_to_numpy=True)
    assert ours.shape == reference.shape == (len(TEXTS), 384)
    assert ours.dtype == np.float32
    assert cosine_rows(ours, reference).min() >= 0.99999
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_default_names_share_the_packaged_model() -> None:
    default = get_encoder()
    assert get_encoder(model="all-MiniLM-L6-v2") is default
    assert get_encoder(model="sentence-transformers/all-MiniLM-L6-v2") is default
    assert default.describe()["pooling"] == "mean"
    assert default.describe()["max_length"] == 256
    assert default.dimension == 384


def test_long_text_is_truncated_counted_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    encoder = get_encoder()
    long_text = "word " * 400
    with caplog.at_level(logging.WARNING, logger="localembed"):
        vectors = encoder.encode([long_text, "short", long_text])
    warnings = [r.getMessage() for r in caplog.records if r.name == "localembed"]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "2 of 3 texts were longer than 256 tokens and were truncated (rows 0, 2); "
        "split documents into chunks that fit with LocalEmbeddings.text_splitter()"
    )
    # Truncation keeps the first 256 tokens: same vector as the text cut by hand.
    np.testing.assert_allclose(vectors[0], vectors[2])
    with caplog.at_level(logging.WARNING, logger="localembed"):
        caplog.clear()
        encoder.encode([long_text])
    assert len([r for r in caplog.records if r.name == "localembed"]) == 1
