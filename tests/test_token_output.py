"""encode(..., output="token_embeddings"): per-text tokens and their contextual vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from localembed import TokenEmbeddings, get_encoder

TEXTS = ["The cat sat on the mat.", "Quantum chromodynamics 🎉", "", "深度学习"]


def test_token_vectors_equal_sentence_transformers(st_default_model) -> None:
    results = get_encoder().encode(TEXTS, output="token_embeddings")
    expected = st_default_model.encode(TEXTS, output_value="token_embeddings")
    assert len(results) == len(TEXTS)
    for result, reference in zip(results, expected, strict=True):
        assert isinstance(result, TokenEmbeddings)
        assert result.vectors.dtype == np.float32
        assert result.vectors.shape == (len(result.tokens), 384)
        np.testing.assert_allclose(result.vectors, reference.numpy(), atol=2e-5)


def test_tokens_are_the_tokenizers_pieces_and_pool_to_the_sentence_vector() -> None:
    encoder = get_encoder()
    sentences = encoder.encode(TEXTS)
    for text, (tokens, vectors), sentence in zip(
        TEXTS, encoder.encode(TEXTS, output="token_embeddings"), sentences, strict=True
    ):
        ids = encoder.tokenizer(text)["input_ids"]
        assert tokens == encoder.tokenizer.convert_ids_to_tokens(ids)
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        mean = vectors.mean(axis=0)
        np.testing.assert_allclose(mean / np.linalg.norm(mean), sentence, atol=1e-6)


def test_batch_composition_does_not_change_token_vectors() -> None:
    encoder = get_encoder()
    together = encoder.encode(TEXTS, output="token_embeddings", batch_size=4)
    for text, joint in zip(TEXTS, together, strict=True):
        alone = encoder.encode([text], output="token_embeddings")[0]
        assert alone.tokens == joint.tokens
        np.testing.assert_allclose(alone.vectors, joint.vectors, atol=1e-5)


def test_instruction_tokens_are_included(tiny_bert_dir: Path) -> None:
    encoder = get_encoder(model=str(tiny_bert_dir), query_instruction="query: ")
    plain = encoder.encode(["cats"], output="token_embeddings")[0]
    instructed = encoder.encode(["cats"], "query: ", output="token_embeddings")[0]
    assert len(instructed.tokens) > len(plain.tokens)
    assert instructed.tokens[-2:] == plain.tokens[-2:]


def test_decoder_models_give_token_vectors(tiny_qwen2_dir: Path) -> None:
    encoder = get_encoder(model=str(tiny_qwen2_dir), pooling="last_token", normalize=False)
    texts = ["a short one", "a much longer text than the first"]
    results = encoder.encode(texts, output="token_embeddings")
    pooled = encoder.encode(texts)
    for (_, vectors), sentence in zip(results, pooled, strict=True):
        np.testing.assert_allclose(vectors[-1], sentence, atol=1e-5)


def test_long_texts_are_truncated_like_sentence_output() -> None:
    tokens, vectors = get_encoder().encode(["word " * 1000], output="token_embeddings")[0]
    assert len(tokens) == 256 and vectors.shape == (256, 384)


def test_empty_and_invalid_requests() -> None:
    encoder = get_encoder()
    assert encoder.encode([], output="token_embeddings") == []
    with pytest.raises(ValueError, match="'sentence_embedding', 'token_embeddings'"):
        encoder.encode(["x"], output="tokens")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="item 1 is int"):
        encoder.encode(["x", 3], output="token_embeddings")  # type: ignore[list-item]
    with pytest.raises(ValueError, match="long_text='truncate'"):
        get_encoder(long_text="chunk").encode(["x"], output="token_embeddings")
