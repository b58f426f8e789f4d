"""The drop-in path from langchain-huggingface and llama-index-embeddings-huggingface.

The same keyword arguments build a localembed adapter that returns the Hugging Face
adapter's vectors (sentence-transformers underneath is the oracle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_huggingface import HuggingFaceEmbeddings
from llama_index.embeddings.huggingface import HuggingFaceEmbedding

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding
from localembed.migration import CONSTRUCTOR_KEYS, ENCODE_KEYS, from_sentence_transformers

DOCUMENTS = [
    "Paris is the capital of France.",
    "The Amazon is the largest river by discharge.",
    "Cats sleep for most of the day.",
    "",
]
QUERY = "Which river carries the most water?"

LANGCHAIN_KWARGS: list[dict[str, Any]] = [
    {
        "model_kwargs": {"device": "cpu"},
        "encode_kwargs": {"normalize_embeddings": True, "batch_size": 2},
    },
    {
        "model_kwargs": {"device": "cpu", "truncate_dim": 96},
        "encode_kwargs": {"normalize_embeddings": True, "prompt": "passage: "},
        "query_encode_kwargs": {"normalize_embeddings": True, "prompt": "query: "},
        "show_progress": True,
    },
    {
        "model_kwargs": {"device": "cpu", "model_kwargs": {"torch_dtype": "float32"}},
        "encode_kwargs": {"normalize_embeddings": False},
    },
    {
        "model_kwargs": {"trust_remote_code": False, "backend": "torch"},
        "encode_kwargs": {"prompt": "Represent this sentence: ", "precision": "float32"},
    },
]


@pytest.mark.parametrize("kwargs", LANGCHAIN_KWARGS)
def test_langchain_same_kwargs_same_vectors(
    default_model_dir: Path, kwargs: dict[str, Any]
) -> None:
    same = {"model_name": str(default_model_dir), **kwargs}
    theirs = HuggingFaceEmbeddings(**same)
    ours = LocalEmbeddings(**same)
    np.testing.assert_allclose(
        ours.embed_documents(DOCUMENTS), theirs.embed_documents(DOCUMENTS), atol=2e-5
    )
    np.testing.assert_allclose(ours.embed_query(QUERY), theirs.embed_query(QUERY), atol=2e-5)


def test_llamaindex_same_kwargs_same_vectors(default_model_dir: Path) -> None:
    same: dict[str, Any] = {
        "model_name": str(default_model_dir),
        "device": "cpu",
        "embed_batch_size": 2,
        "query_instruction": "query: ",
        "text_instruction": "passage: ",
        "truncate_dim": 64,
        "max_length": 32,
        "show_progress_bar": False,
        "model_kwargs": {"torch_dtype": "float32"},
    }
    theirs = HuggingFaceEmbedding(**same)
    ours = LocalEmbedding(**same)
    texts = [text for text in DOCUMENTS if text]
    np.testing.assert_allclose(
        ours.get_text_embedding_batch(texts), theirs.get_text_embedding_batch(texts), atol=2e-5
    )
    np.testing.assert_allclose(
        ours.get_query_embedding(QUERY), theirs.get_query_embedding(QUERY), atol=2e-5
    )
    assert ours.document_instruction == "passage: "
    assert ours.show_progress is False


def test_a_key_without_meaning_names_it_and_the_supported_keys() -> None:
    with pytest.raises(
        ValueError, match="model_kwargs key 'revision' has no localembed meaning"
    ) as error:
        LocalEmbeddings(model_kwargs={"device": "cpu", "revision": "main"})
    assert ", ".join(sorted(CONSTRUCTOR_KEYS)) in str(error.value)
    with pytest.raises(ValueError, match="encode_kwargs key 'convert_to_tensor'") as error:
        LocalEmbeddings(encode_kwargs={"convert_to_tensor": True})
    assert ", ".join(sorted(ENCODE_KEYS)) in str(error.value)
    with pytest.raises(ValueError, match="model_kwargs key 'attn_implementation'"):
        LocalEmbedding(model_kwargs={"attn_implementation": "sdpa"})


def test_values_localembed_cannot_give_are_refused(tiny_bert_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"adapters keep float32; quantize with get_encoder"):
        LocalEmbeddings(encode_kwargs={"precision": "int8"})
    with pytest.raises(ValueError, match=r"different truncate_dim \(64 vs 128\)"):
        LocalEmbeddings(
            encode_kwargs={"truncate_dim": 64}, query_encode_kwargs={"truncate_dim": 128}
        )
    with pytest.raises(ValueError, match="different normalize"):
        # (all-MiniLM-L6-v2 normalizes either way: its modules end in Normalize.)
        from_sentence_transformers(
            str(tiny_bert_dir), {}, {"normalize_embeddings": True}, {"normalize_embeddings": False}
        )
    with pytest.raises(ValueError, match="backend 'openvino'"):
        LocalEmbeddings(model_kwargs={"backend": "openvino"})
    with pytest.raises(ValueError, match="given twice"):
        LocalEmbeddings(device="cpu", model_kwargs={"device": "cuda"})


def test_queries_follow_encode_kwargs_when_query_encode_kwargs_is_empty() -> None:
    options = from_sentence_transformers(None, {}, {"prompt": "passage: ", "batch_size": 8})
    assert options == {
        "batch_size": 8,
        "document_instruction": "passage: ",
        "query_instruction": "passage: ",
    }


def test_show_progress_draws_a_bar_over_the_texts(capsys: pytest.CaptureFixture[str]) -> None:
    LocalEmbeddings(show_progress=True).embed_documents(["one", "two", "three"])
    assert "3/3" in capsys.readouterr().err
    LocalEmbedding(show_progress_bar=True).get_text_embedding_batch(["one", "two"])
    assert "2/2" in capsys.readouterr().err
    LocalEmbeddings().embed_documents(["one", "two", "three"])
    assert "3/3" not in capsys.readouterr().err
