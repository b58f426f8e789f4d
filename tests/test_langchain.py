"""LangChain adapter: the standard suites, a real vector store, bad input, async."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from langchain_localembed import LocalEmbeddings
from localembed import get_encoder
from tests.event_loop import lag_against_cpu_thread


class TestLocalEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model_name": "all-MiniLM-L6-v2"}


class TestLocalEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {}


CORPUS = {
    "paris": "Paris is the capital and largest city of France.",
    "python": "Python is a programming language that emphasises readability.",
    "photosynthesis": "Plants turn sunlight, water and carbon dioxide into sugar.",
    "football": "The World Cup is the most watched football tournament.",
}


def test_retrieves_through_in_memory_vector_store() -> None:
    store = InMemoryVectorStore(LocalEmbeddings())
    store.add_documents([Document(page_content=t, metadata={"id": k}) for k, t in CORPUS.items()])
    for query, expected in [
        ("What is the capital of France?", "paris"),
        ("Which language is easy to read for coders?", "python"),
        ("How do plants make food from light?", "photosynthesis"),
        ("soccer championship viewers", "football"),
    ]:
        (best,) = store.similarity_search(query, k=1)
        assert best.metadata["id"] == expected, query


def test_model_name_is_an_alias_of_model() -> None:
    assert LocalEmbeddings(model_name="all-MiniLM-L6-v2").model == "all-MiniLM-L6-v2"
    assert LocalEmbeddings(model="all-MiniLM-L6-v2").encoder is LocalEmbeddings().encoder


def test_vectors_equal_the_encoder() -> None:
    texts = ["one", "two three"]
    np.testing.assert_array_equal(
        np.asarray(LocalEmbeddings().embed_documents(texts), dtype=np.float32),
        get_encoder().encode(texts),
    )


def test_unknown_option_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown option 'poolng' \(did you mean 'pooling'\?\)"):
        LocalEmbeddings(poolng="mean")
    with pytest.raises(ValueError, match="valid: auto, cls, mean, max, last_token, weighted_mean"):
        LocalEmbeddings(pooling="median")


def test_bad_input() -> None:
    embeddings = LocalEmbeddings()
    assert embeddings.embed_documents([]) == []
    (empty,) = embeddings.embed_documents([""])
    assert len(empty) == 384
    assert np.isclose(np.linalg.norm(empty), 1.0, atol=1e-5)
    with pytest.raises(TypeError, match="item 2 is int"):
        embeddings.embed_documents(["a", "b", 3])
    with pytest.raises(TypeError, match="single str"):
        embeddings.embed_documents("not a list")
    with pytest.raises(TypeError, match="query must be a str"):
        embeddings.embed_query(None)


def test_empty_list_makes_no_model_call() -> None:
    encoder = get_encoder(backend="torch")  # a torch model to hook
    calls = []
    hook = encoder.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        assert LocalEmbeddings(backend="torch").embed_documents([]) == []
        assert calls == []
        LocalEmbeddings(backend="torch").embed_documents(["x"])
        assert calls == [1]
    finally:
        hook.remove()


async def test_async_keeps_the_event_loop_responsive() -> None:
    """The loop stalls no more than beside a plain CPU thread (x3) or 100 ms (event_loop.py)."""
    embeddings = LocalEmbeddings()
    texts = [f"document number {i} about a topic " * 8 for i in range(600)]
    vectors = await embeddings.aembed_documents(texts)
    assert len(vectors) == len(texts)
    assert np.allclose(vectors[5], embeddings.embed_documents([texts[5]])[0], atol=1e-5)
    lag = await lag_against_cpu_thread(lambda: embeddings.aembed_documents(texts))
    assert lag.ours.seconds > 0.3, "the batch should take long enough to observe the loop"
    assert len(lag.ours.gaps) > 10
    assert lag.holds, str(lag)
    assert await embeddings.aembed_query("hello") == embeddings.embed_query("hello")
