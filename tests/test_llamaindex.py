"""LlamaIndex adapter: a real VectorStoreIndex, to_dict/from_dict, async, shared model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from llama_index.core import Document, Settings, VectorStoreIndex

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding

CORPUS = {
    "paris": "Paris is the capital and largest city of France.",
    "python": "Python is a programming language that emphasises readability.",
    "photosynthesis": "Plants turn sunlight, water and carbon dioxide into sugar.",
    "football": "The World Cup is the most watched football tournament.",
}


def test_vector_store_index_retrieves_with_settings_embed_model() -> None:
    previous = Settings._embed_model
    Settings.embed_model = LocalEmbedding()
    try:
        index = VectorStoreIndex.from_documents(
            [Document(text=t, metadata={"id": k}) for k, t in CORPUS.items()]
        )
        retriever = index.as_retriever(similarity_top_k=1)
        for query, expected in [
            ("What is the capital of France?", "paris"),
            ("How do plants make food from light?", "photosynthesis"),
            ("soccer championship viewers", "football"),
        ]:
            (best,) = retriever.retrieve(query)
            assert best.node.metadata["id"] == expected, query
    finally:
        Settings._embed_model = previous


def test_to_dict_from_dict_round_trip() -> None:
    original = LocalEmbedding(pooling="cls", query_instruction="query: ", max_length=64)
    data = original.to_dict()
    assert data["class_name"] == "LocalEmbedding"
    rebuilt = LocalEmbedding.from_dict(data)
    assert rebuilt.pooling == "cls" and rebuilt.max_length == 64
    assert rebuilt.encoder is original.encoder
    assert rebuilt.get_query_embedding("hi") == original.get_query_embedding("hi")
    assert LocalEmbedding.from_json(original.to_json()).encoder is original.encoder


def test_model_name() -> None:
    assert LocalEmbedding().model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert LocalEmbedding(model_name="all-MiniLM-L6-v2").model == "all-MiniLM-L6-v2"
    assert LocalEmbedding.class_name() == "LocalEmbedding"


def test_adapters_share_one_model_and_give_identical_vectors() -> None:
    options = {"pooling": "cls", "query_instruction": "q: ", "document_instruction": "d: "}
    langchain = LocalEmbeddings(**options)
    llamaindex = LocalEmbedding(**options)
    assert langchain.encoder is llamaindex.encoder
    texts = ["alpha", "beta gamma", ""]
    assert llamaindex.get_text_embedding_batch(texts) == langchain.embed_documents(texts)
    assert llamaindex.get_query_embedding("delta") == langchain.embed_query("delta")
    assert llamaindex.get_text_embedding("alpha") == langchain.embed_documents(["alpha"])[0]


async def test_async_methods() -> None:
    embed_model = LocalEmbedding()
    texts = ["one", "two", "three"]
    assert await embed_model.aget_text_embedding_batch(
        texts
    ) == embed_model.get_text_embedding_batch(texts)
    assert await embed_model.aget_query_embedding("q") == embed_model.get_query_embedding("q")
    assert await embed_model.aget_text_embedding("t") == embed_model.get_text_embedding("t")


async def test_a_split_async_batch_keeps_every_row_in_order_and_every_event() -> None:
    """Over one batch, aget_text_embedding_batch runs LlamaIndex's method per batch, many at once.

    Every text's row comes back at its index (duplicates and empty texts included), within
    1e-5 of the serial method; LlamaIndex's events are one start and one end per batch of
    ``embed_batch_size`` texts, whose chunks are the texts in order and whose embeddings are
    the rows returned.
    """
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
    from llama_index.core.callbacks.schema import EventPayload

    debug = LlamaDebugHandler()
    embed_model = LocalEmbedding(embed_batch_size=3, callback_manager=CallbackManager([debug]))
    texts = [f"text {i % 11} " + "word " * (i % 7) for i in range(61)] + ["", "text 0 "]
    expected = embed_model.get_text_embedding_batch(texts)
    debug.flush_event_logs()
    vectors = await embed_model.aget_text_embedding_batch(texts)
    assert len(vectors) == len(texts)
    np.testing.assert_allclose(np.array(vectors), np.array(expected), atol=1e-5)
    pairs = debug.get_event_pairs(CBEventType.EMBEDDING)
    assert len(pairs) == 21  # 63 texts in batches of 3
    ends = [end.payload for _, end in pairs if end.payload is not None]
    assert [text for end in ends for text in end[EventPayload.CHUNKS]] == texts
    assert [row for end in ends for row in end[EventPayload.EMBEDDINGS]] == vectors


def test_bad_input() -> None:
    embed_model = LocalEmbedding()
    assert embed_model.get_text_embedding_batch([]) == []
    assert np.isclose(np.linalg.norm(embed_model.get_text_embedding("")), 1.0, atol=1e-5)
    with pytest.raises(TypeError, match="item 1 is bytes"):
        embed_model._get_text_embeddings(["a", b"b"])
    with pytest.raises(TypeError, match="query must be a str"):
        embed_model.get_query_embedding(42)
    with pytest.raises(ValueError, match="unknown option 'batchsize'"):
        LocalEmbedding(batchsize=3)


@pytest.mark.slow  # 8,000 texts, up to three times
async def test_a_large_async_batch_keeps_the_event_loop_responsive(tmp_path: Path) -> None:
    """aget_text_embedding_batch of 8,000 texts (LlamaIndex: 125 concurrent calls of 64).

    Their rows are finished in the micro-batcher's worker and converted to lists off the
    loop, released as their batches complete; the loop only awaits. LlamaIndex itself
    validates and reports every batch on the loop (its floor: the same call on a model that
    answers at once); ours may add no more than a plain CPU thread's stall (x3) or 100 ms
    on top of it (tests/event_loop.py). benchmarks/loop_lag.py measures the numbers.
    """
    from tests.event_loop import instant_llamaindex_embedding, lag_against_cpu_thread
    from tests.model_factory import build_wide_bert

    embed_model = LocalEmbedding(model=str(build_wide_bert(tmp_path / "wide")), max_length=16)
    instant = instant_llamaindex_embedding(384, embed_model.embed_batch_size)
    texts = [f"node {i} on subject {i % 23} and more" for i in range(8_000)]
    vectors = await embed_model.aget_text_embedding_batch(texts)
    assert len(vectors) == 8_000 and len(vectors[0]) == 384
    del vectors
    lag = await lag_against_cpu_thread(
        lambda: embed_model.aget_text_embedding_batch(texts),
        floor=lambda: instant.aget_text_embedding_batch(texts),
    )
    assert lag.holds, str(lag)
