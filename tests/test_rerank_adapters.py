"""LocalCrossEncoder and LocalRerank in real LangChain and LlamaIndex retrieve-then-rerank chains.

The oracle is sentence-transformers' CrossEncoder on the same tiny cross-encoder: the pipelines
must return the retrieved documents in its order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from langchain_localembed import LocalCrossEncoder, LocalEmbeddings
from llamaindex_localembed import LocalEmbedding, LocalRerank
from localembed import available_adapters, load_adapter
from tests import model_factory
from tests.event_loop import loop_lag

QUERY = "where do cats sleep"
CORPUS = [
    "Cats sleep in warm places such as a sunny windowsill.",
    "A cat often sleeps on the sofa or the bed.",
    "Dogs like to sleep in their baskets.",
    "Paris is the capital of France.",
    "Kittens sleep most of the day.",
    "The river Seine runs through Paris.",
    "Cats purr when they are content.",
    "Bananas are rich in potassium.",
]
CANDIDATES = 6
TOP_N = 3


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_factory.build_tiny_xlm_roberta_reranker(tmp_path_factory.mktemp("xlmr-rr"))


def _oracle_order(reranker_dir: Path, documents: list[str]) -> list[str]:
    from sentence_transformers import CrossEncoder

    scores = CrossEncoder(str(reranker_dir), device="cpu").predict(
        [(QUERY, document) for document in documents]
    )
    order = np.argsort(-scores, kind="stable")
    return [documents[i] for i in order[:TOP_N]]


# -- LangChain --------------------------------------------------------------------------------


def _langchain_retriever(reranker_dir: Path) -> tuple[Any, Any]:
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore.from_texts(CORPUS, LocalEmbeddings())
    base = store.as_retriever(search_kwargs={"k": CANDIDATES})
    compressor = CrossEncoderReranker(
        model=LocalCrossEncoder(model=str(reranker_dir), device="cpu"), top_n=TOP_N
    )
    return base, ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)


def test_langchain_retrieve_then_rerank_follows_the_oracle(reranker_dir: Path) -> None:
    base, retriever = _langchain_retriever(reranker_dir)
    candidates = [doc.page_content for doc in base.invoke(QUERY)]
    assert len(candidates) == CANDIDATES
    reranked = [doc.page_content for doc in retriever.invoke(QUERY)]
    assert reranked == _oracle_order(reranker_dir, candidates)
    assert reranked != candidates[:TOP_N]  # the reranker changed the retriever's order


async def test_langchain_async_pipeline_and_score(reranker_dir: Path) -> None:
    base, retriever = _langchain_retriever(reranker_dir)
    candidates = [doc.page_content for doc in await base.ainvoke(QUERY)]
    reranked = [doc.page_content for doc in await retriever.ainvoke(QUERY)]
    assert reranked == _oracle_order(reranker_dir, candidates)
    cross_encoder = LocalCrossEncoder(model=str(reranker_dir), device="cpu")
    pairs = [(QUERY, text) for text in CORPUS]
    assert await cross_encoder.ascore(pairs) == cross_encoder.score(pairs)


async def test_langchain_ascore_keeps_the_event_loop_responsive(reranker_dir: Path) -> None:
    cross_encoder = LocalCrossEncoder(model=str(reranker_dir), device="cpu")
    pairs = [(f"query {i} about cats", "a long document about cats " * 12) for i in range(3000)]
    counts: list[int] = []

    async def score() -> None:
        counts.append(len(await cross_encoder.ascore(pairs)))

    async with loop_lag(0.01) as lag:
        await score()
    assert counts == [len(pairs)]
    assert lag.seconds > 0.2, "the call should take long enough to observe the loop"
    assert len(lag.gaps) > 5
    assert lag.worst < 0.1 + lag.seconds / 4, lag.summary()


def test_langchain_cross_encoder_options_and_errors(reranker_dir: Path) -> None:
    cross_encoder = LocalCrossEncoder(model_name=str(reranker_dir), device="cpu")
    assert cross_encoder.reranker is LocalCrossEncoder(model=str(reranker_dir)).reranker
    assert cross_encoder.score([]) == []
    with pytest.raises(ValueError, match="unknown option 'top_k'"):
        LocalCrossEncoder(model=str(reranker_dir), top_k=3)
    with pytest.raises(TypeError, match="pair 0: the document is int"):
        cross_encoder.score([("q", 1)])  # type: ignore[list-item]


# -- LlamaIndex -------------------------------------------------------------------------------


def _llamaindex_engine(reranker_dir: Path, *, keep_retrieval_score: bool) -> tuple[Any, Any]:
    from llama_index.core import VectorStoreIndex
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.response_synthesizers.no_text import NoText
    from llama_index.core.schema import TextNode

    index = VectorStoreIndex(
        [TextNode(text=text, id_=f"doc-{i}") for i, text in enumerate(CORPUS)],
        embed_model=LocalEmbedding(),
    )
    retriever = index.as_retriever(similarity_top_k=CANDIDATES)
    engine = RetrieverQueryEngine(
        retriever=retriever,
        # response_mode="no_text": the reranked source nodes without an answer. Its LLM is
        # never called; MockLLM keeps LlamaIndex from looking for OpenAI's (the factory's
        # get_response_synthesizer(response_mode="no_text") drops the llm argument).
        response_synthesizer=NoText(llm=MockLLM()),
        node_postprocessors=[
            LocalRerank(
                model=str(reranker_dir),
                top_n=TOP_N,
                device="cpu",
                keep_retrieval_score=keep_retrieval_score,
            )
        ],
    )
    return retriever, engine


def test_llamaindex_query_engine_reranks_like_the_oracle(reranker_dir: Path) -> None:
    retriever, engine = _llamaindex_engine(reranker_dir, keep_retrieval_score=True)
    retrieved = retriever.retrieve(QUERY)
    candidates = [node.node.get_content() for node in retrieved]
    retrieval_scores = {node.node.node_id: node.score for node in retrieved}
    response = engine.query(QUERY)
    kept = response.source_nodes
    assert [node.node.get_content() for node in kept] == _oracle_order(reranker_dir, candidates)
    assert [node.node.get_content() for node in kept] != candidates[:TOP_N]
    reranker = LocalRerank(model=str(reranker_dir), device="cpu").reranker
    expected = reranker.score([(QUERY, node.node.get_content()) for node in kept])
    np.testing.assert_allclose([node.score for node in kept], expected, atol=1e-6)
    for node in kept:
        assert node.node.metadata["retrieval_score"] == pytest.approx(
            retrieval_scores[node.node.node_id]
        )


async def test_llamaindex_async_query(reranker_dir: Path) -> None:
    retriever, engine = _llamaindex_engine(reranker_dir, keep_retrieval_score=False)
    candidates = [node.node.get_content() for node in await retriever.aretrieve(QUERY)]
    response = await engine.aquery(QUERY)
    kept = [node.node.get_content() for node in response.source_nodes]
    assert kept == _oracle_order(reranker_dir, candidates)
    assert all("retrieval_score" not in node.node.metadata for node in response.source_nodes)


def test_llamaindex_postprocessor_edge_cases(reranker_dir: Path) -> None:
    rerank = LocalRerank(model=str(reranker_dir), top_n=2, device="cpu")
    assert rerank.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ValueError, match="needs the query"):
        rerank.postprocess_nodes([])
    with pytest.raises(ValueError, match="did you mean 'top_n'"):
        LocalRerank(model=str(reranker_dir), top_m=2)
    assert LocalRerank.class_name() == "LocalRerank"
    for value in (True, 1.0, "1", 0):
        with pytest.raises(ValueError, match="top_n"):
            LocalRerank(model=str(reranker_dir), top_n=value)
        with pytest.raises(ValueError, match="top_n"):
            rerank.top_n = value  # checked on assignment too
    assert rerank.top_n == 2


# -- registry ---------------------------------------------------------------------------------


def test_registry_lists_and_loads_the_rerankers(reranker_dir: Path) -> None:
    assert {"langchain-reranker", "llamaindex-reranker"} <= set(available_adapters())
    langchain = load_adapter("langchain-reranker", model=str(reranker_dir), device="cpu")
    llamaindex = load_adapter("llamaindex-reranker", model=str(reranker_dir), device="cpu")
    assert isinstance(langchain, LocalCrossEncoder)
    assert isinstance(llamaindex, LocalRerank)
    assert langchain.reranker is llamaindex.reranker  # one model for both frameworks
    torch.testing.assert_close(
        torch.tensor(langchain.score([(QUERY, CORPUS[0])])),
        torch.tensor(llamaindex.reranker.score([(QUERY, CORPUS[0])]).tolist()),
    )
