"""Output precision: localembed.precision against sentence-transformers' quantize_embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers.util import quantize_embeddings

from localembed.precision import PRECISIONS, calibration_ranges, check_precision, quantize

TEXTS = [f"sentence number {i} about {topic}" for i, topic in enumerate(["cats", "rivers"] * 60)]


@pytest.fixture(scope="module")
def corpus(st_default_model) -> np.ndarray:
    vectors: np.ndarray = st_default_model.encode(TEXTS, normalize_embeddings=True)
    return vectors


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
def test_quantize_equals_sentence_transformers(corpus: np.ndarray, precision: str) -> None:
    ours = quantize(corpus, precision)
    theirs = quantize_embeddings(corpus, precision=precision)
    assert ours.dtype == theirs.dtype
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_ranges_from_a_corpus_quantize_later_queries(corpus: np.ndarray, precision: str) -> None:
    ranges = calibration_ranges(corpus)
    assert ranges.shape == (2, corpus.shape[1])
    query = corpus[:1] * 1.5  # partly outside the corpus's ranges: clipped, as there
    ours = quantize(query, precision, ranges)
    np.testing.assert_array_equal(ours, quantize_embeddings(query, precision, ranges=ranges))
    # Ranges from the corpus give the same codes for the corpus as computing them inside.
    np.testing.assert_array_equal(quantize(corpus, precision, ranges), quantize(corpus, precision))


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_a_single_vector_without_ranges_is_refused(corpus: np.ndarray, precision: str) -> None:
    with pytest.raises(ValueError, match="single embedding"):
        quantize_embeddings(corpus[:1], precision)
    with pytest.raises(ValueError, match=r"from 1 embedding\(s\); pass ranges"):
        quantize(corpus[:1], precision)


def test_float16_is_a_cast(corpus: np.ndarray) -> None:
    half = quantize(corpus, "float16")
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, corpus.astype(np.float16))


def test_binary_packs_eight_dimensions_per_byte(corpus: np.ndarray) -> None:
    packed = quantize(corpus[:3, :10], "ubinary")
    assert packed.shape == (3, 2)
    bits = np.unpackbits(packed, axis=-1)[:, :10]
    np.testing.assert_array_equal(bits, (corpus[:3, :10] > 0).astype(np.uint8))


def test_bad_inputs_name_the_problem(corpus: np.ndarray) -> None:
    with pytest.raises(ValueError, match="valid: float32, float16, int8, uint8, binary, ubinary"):
        check_precision("int4")
    with pytest.raises(ValueError, match=r"ranges must have shape \(2, 384\)"):
        quantize(corpus, "int8", np.zeros((2, 3)))
    with pytest.raises(TypeError, match="must be float"):
        quantize(quantize(corpus, "int8"), "int8")
    with pytest.raises(ValueError, match="2-D"):
        quantize(corpus[0], "binary")
    assert PRECISIONS[0] == "float32"
    assert quantize(corpus[:0], "int8").shape == (0, 384)
