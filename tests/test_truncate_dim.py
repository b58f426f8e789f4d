"""Matryoshka truncate_dim and output precision on the encoder, against sentence-transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import quantize_embeddings

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding
from localembed import EncoderConfig, get_encoder

TEXTS = [
    "A man is playing a guitar.",
    "The new movie is awesome.",
    "Heavy rain is expected this weekend.",
    "",
    "word " * 300,  # truncated to the window
]


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dim", [32, 128, 384])
def test_truncate_dim_equals_sentence_transformers(
    default_model_dir: Path, dim: int, normalize: bool
) -> None:
    from sentence_transformers.models import Pooling, Transformer

    if normalize:
        reference = SentenceTransformer(str(default_model_dir), device="cpu", truncate_dim=dim)
    else:
        # Without normalizing, sentence-transformers' oracle is the model without its
        # Normalize module (localembed's normalize=False skips it).
        transformer = Transformer(str(default_model_dir), max_seq_length=256)
        pooling = Pooling(transformer.get_embedding_dimension(), "mean")
        reference = SentenceTransformer(
            modules=[transformer, pooling], device="cpu", truncate_dim=dim
        )
    expected = reference.encode(TEXTS, normalize_embeddings=normalize)
    encoder = get_encoder(model=str(default_model_dir), truncate_dim=dim, normalize=normalize)
    assert encoder.dimension == dim
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), dim)
    np.testing.assert_allclose(vectors, expected, atol=2e-5)


def test_truncate_dim_shares_the_loaded_model(default_model_dir: Path) -> None:
    full = get_encoder(model=str(default_model_dir))
    cut = get_encoder(model=str(default_model_dir), truncate_dim=64)
    assert cut is not full
    assert cut.dimension == 64 and full.dimension == 384
    assert cut.model is full.model  # one copy of the weights
    assert get_encoder(model=str(default_model_dir), truncate_dim=64) is cut


def test_truncate_dim_is_validated() -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        EncoderConfig(truncate_dim=0)
    with pytest.raises(ValueError, match=r"truncate_dim 512 is larger than .* dimension 384"):
        get_encoder(truncate_dim=512)


def test_truncate_dim_in_both_adapters() -> None:
    assert len(LocalEmbeddings(truncate_dim=48).embed_query("hello")) == 48
    assert len(LocalEmbedding(truncate_dim=48).get_text_embedding("hello")) == 48


def test_truncate_dim_with_chunked_long_texts() -> None:
    # The cut commutes with the windows' weighted mean: cutting the combined vector of the
    # unnormalized full-width encoder, then normalizing, is the answer.
    vectors = get_encoder(long_text="chunk", truncate_dim=96).encode(TEXTS)
    full = get_encoder(long_text="chunk", normalize=False).encode(TEXTS)[:, :96]
    expected = full / np.linalg.norm(full, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=2e-5)


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
def test_encode_precision_equals_sentence_transformers(
    st_default_model: SentenceTransformer, precision: str
) -> None:
    texts = [f"sentence {i} about {w}" for i, w in enumerate(["cats", "trains", "rain"] * 4)]
    expected = st_default_model.encode(texts, precision=precision)
    encoder = get_encoder()
    for encode in (encoder.encode, encoder.encode_documents, encoder.encode_queries):
        got = encode(texts, precision=precision)
        assert got.dtype == expected.dtype
        np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), atol=1)
    # int8 rounding can differ by one step where float32 vectors differ in the last bits;
    # the same floats give exactly sentence-transformers' codes.
    floats = encoder.encode(texts)
    np.testing.assert_array_equal(
        encoder.encode(texts, precision=precision),
        quantize_embeddings(floats, precision=precision),
    )


def test_encode_int8_with_corpus_ranges_for_a_query() -> None:
    from localembed.precision import calibration_ranges

    encoder = get_encoder()
    corpus = encoder.encode([f"document {i}" for i in range(20)])
    ranges = calibration_ranges(corpus)
    query = encoder.encode_queries(["a query"], precision="int8", ranges=ranges)
    expected = quantize_embeddings(encoder.encode_queries(["a query"]), "int8", ranges=ranges)
    np.testing.assert_array_equal(query, expected)
    with pytest.raises(ValueError, match="pass ranges"):
        encoder.encode_queries(["a query"], precision="int8")
    half = encoder.encode(["a"], precision="float16")
    assert half.dtype == np.float16
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        encoder.encode(["a"], precision="int4")  # type: ignore[arg-type]


def test_cli_truncate_dim(tmp_path: Path) -> None:
    from localembed.cli import main

    source = tmp_path / "texts.txt"
    source.write_text("a cat\na dog\n", encoding="utf-8")
    output = tmp_path / "vectors.npy"
    assert main(["embed", str(source), "-o", str(output), "--truncate-dim", "64", "--quiet"]) == 0
    vectors = np.load(output)
    np.testing.assert_allclose(vectors, get_encoder(truncate_dim=64).encode(["a cat", "a dog"]))


def test_truncate_dim_applies_to_the_dense_output_of_encode_m3(tiny_xlmr_dir: Path) -> None:
    cut = get_encoder(model=str(tiny_xlmr_dir), truncate_dim=8)
    output = cut.encode_m3(["a cat", "a dog"], dense=True, sparse=True)
    assert output.dense is not None
    np.testing.assert_allclose(output.dense, cut.encode(["a cat", "a dog"]), atol=1e-6)
    assert output.dense.shape == (2, 8)
