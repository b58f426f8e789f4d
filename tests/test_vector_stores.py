"""Real vector stores over the local model: ingest a small corpus, query it, check the vectors.

LangChain: ``InMemoryVectorStore``, FAISS (``faiss-cpu``), Chroma (a persistent client on disk)
and ``CacheBackedEmbeddings`` over a ``LocalFileStore``. LlamaIndex: ``IngestionPipeline``
(with its cache and docstore) and ``VectorStoreIndex``. The stores run in this process, where
pytest-socket blocks the network, so each is also shown to need none.

The queries share few words with their answers: retrieval has to be semantic. Stored vectors
are compared with the single-process encoder (``get_encoder().encode_documents``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.api.client import Client as ChromaClient
from chromadb.api.collection_configuration import CreateCollectionConfiguration
from chromadb.config import Settings as ChromaSettings
from langchain_chroma import Chroma
from langchain_classic.embeddings import CacheBackedEmbeddings
from langchain_classic.storage import LocalFileStore
from langchain_community.vectorstores import FAISS
from langchain_community.vectorstores.utils import DistanceStrategy
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import Document as LlamaDocument
from llama_index.core import VectorStoreIndex
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.vector_stores import SimpleVectorStore
from pydantic import PrivateAttr

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding
from localembed import get_encoder
from tests import docs_harness

# topic -> key -> text: five topics, so a wrong hit is usually also the wrong topic.
TOPIC_TEXTS: dict[str, dict[str, str]] = {
    "cooking": {
        "risotto": "Stir arborio rice with warm stock, one ladle at a time, until creamy.",
        "sourdough": "A sourdough loaf rises slowly thanks to the wild yeast in its starter.",
        "searing": "Searing a steak in a very hot cast-iron pan builds a brown crust.",
    },
    "astronomy": {
        "black_hole": "A black hole's gravity is so strong that not even light escapes.",
        "mars": "Mars looks red because iron oxide dust covers its surface.",
        "eclipse": "A solar eclipse happens when the Moon passes between Sun and Earth.",
    },
    "python": {
        "comprehension": "A list comprehension builds a new list in a single expression.",
        "gil": "CPython's global interpreter lock lets one thread run bytecode at a time.",
        "virtualenv": "A virtual environment keeps each project's packages isolated.",
    },
    "football": {
        "offside": "An attacker is offside when beyond the ball and the second-last defender.",
        "world_cup": "Brazil has won the men's World Cup five times, more than any nation.",
        "penalty": "A penalty kick is taken from twelve yards after a foul inside the box.",
    },
    "medicine": {
        "insulin": "Insulin lowers blood sugar by helping cells absorb glucose.",
        "antibiotics": "Antibiotics kill bacteria but do nothing against a viral cold or flu.",
        "vaccine": "Vaccines train the immune system to recognise a pathogen in advance.",
        "fracture": "A broken bone heals as new tissue bridges the fracture over weeks.",
    },
}
TOPICS = list(TOPIC_TEXTS)
TOPIC = {key: topic for topic, texts in TOPIC_TEXTS.items() for key in texts}
TEXT = {key: text for texts in TOPIC_TEXTS.values() for key, text in texts.items()}
KEYS = list(TEXT)
TEXTS = list(TEXT.values())
DOCUMENTS = [Document(page_content=TEXT[k], metadata={"key": k, "topic": TOPIC[k]}) for k in KEYS]

# Each query and the key of the document that answers it.
QUERIES: dict[str, str] = {
    "What makes bread dough rise without store-bought yeast?": "sourdough",
    "Why does the fourth planet look rusty?": "mars",
    "Where is gravity strong enough to trap light?": "black_hole",
    "Can several threads run Python code in parallel?": "gil",
    "How do I stop two projects' dependencies clashing?": "virtualenv",
    "Which country has lifted the soccer trophy most often?": "world_cup",
    "Will penicillin cure my flu?": "antibiotics",
    "What hormone do diabetics inject?": "insulin",
}
QUERY_TEXTS = list(QUERIES)
EXPECTED = list(QUERIES.values())


@pytest.fixture(scope="module")
def embeddings() -> LocalEmbeddings:
    return LocalEmbeddings()


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The corpus through the single-process encoder: what every store should hold."""
    return get_encoder().encode_documents(TEXTS)


@pytest.fixture(scope="module")
def query_vectors() -> np.ndarray:
    return get_encoder().encode_queries(QUERY_TEXTS)


@pytest.fixture(scope="module")
def cosine(reference: np.ndarray, query_vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of each query (row) with each document (column): vectors are unit."""
    similarity: np.ndarray = query_vectors @ reference.T
    return similarity


def keys_of(documents: list[Document]) -> list[str]:
    return [doc.metadata["key"] for doc in documents]


def test_in_memory_vector_store(embeddings: LocalEmbeddings, reference: np.ndarray) -> None:
    store = InMemoryVectorStore(embeddings)
    store.add_documents(DOCUMENTS, ids=KEYS)
    for query, key in QUERIES.items():
        assert keys_of(store.similarity_search(query, k=1)) == [key], query
    stored = np.array([store.store[key]["vector"] for key in KEYS])
    np.testing.assert_allclose(stored, reference, rtol=0, atol=1e-6)


def test_faiss_scores_with_both_distance_strategies(
    embeddings: LocalEmbeddings,
    reference: np.ndarray,
    query_vectors: np.ndarray,
    cosine: np.ndarray,
) -> None:
    # Default: IndexFlatL2, whose score is the *squared* L2 distance (lower is better). For
    # unit vectors that is 2 - 2 cos, so the ranking is exactly the cosine ranking.
    l2 = FAISS.from_documents(DOCUMENTS, embeddings, ids=KEYS)
    # MAX_INNER_PRODUCT: IndexFlatIP, whose score is the dot product, here the cosine itself.
    # LangChain's relevance function for it reads that score as a distance (a better match
    # would get a lower relevance), so name one: cos mapped to [0, 1].
    ip = FAISS.from_documents(
        DOCUMENTS,
        embeddings,
        ids=KEYS,
        distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
        relevance_score_fn=lambda cos: (1 + cos) / 2,
    )
    assert type(l2.index).__name__ == "IndexFlatL2"
    assert type(ip.index).__name__ == "IndexFlatIP"
    n = len(KEYS)
    for row, (vector, key) in enumerate(zip(query_vectors.tolist(), EXPECTED, strict=True)):
        by_l2 = l2.similarity_search_with_score_by_vector(vector, k=n)
        by_ip = ip.similarity_search_with_score_by_vector(vector, k=n)
        assert keys_of([doc for doc, _ in by_l2])[0] == key
        assert keys_of([doc for doc, _ in by_l2]) == keys_of([doc for doc, _ in by_ip])
        expected = cosine[row, [KEYS.index(doc.metadata["key"]) for doc, _ in by_ip]]
        np.testing.assert_allclose([s for _, s in by_ip], expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose([s for _, s in by_l2], 2 - 2 * expected, rtol=0, atol=2e-5)
    for store in (l2, ip):
        assert [store.index_to_docstore_id[i] for i in range(n)] == KEYS
        np.testing.assert_allclose(store.index.reconstruct_n(0, n), reference, rtol=0, atol=1e-6)

    ranked = ip.similarity_search_with_relevance_scores(QUERY_TEXTS[0], k=n)
    assert keys_of([doc for doc, _ in ranked])[0] == EXPECTED[0]
    relevance = [score for _, score in ranked]
    assert relevance == sorted(relevance, reverse=True)
    np.testing.assert_allclose(relevance[0], (1 + cosine[0].max()) / 2, rtol=0, atol=1e-5)


def test_faiss_save_load_and_retriever(
    embeddings: LocalEmbeddings, reference: np.ndarray, tmp_path: Path
) -> None:
    strategy = DistanceStrategy.MAX_INNER_PRODUCT
    store = FAISS.from_documents(DOCUMENTS, embeddings, ids=KEYS, distance_strategy=strategy)
    store.save_local(str(tmp_path / "faiss"))
    # The docstore is a pickle: loading it is an explicit opt-in, for files you wrote yourself.
    with pytest.raises(ValueError, match="allow_dangerous_deserialization"):
        FAISS.load_local(str(tmp_path / "faiss"), embeddings)
    # The distance strategy is not saved: name it again, or scores are read as L2 distances.
    loaded = FAISS.load_local(
        str(tmp_path / "faiss"),
        embeddings,
        allow_dangerous_deserialization=True,
        distance_strategy=strategy,
    )
    np.testing.assert_allclose(
        loaded.index.reconstruct_n(0, len(KEYS)), reference, rtol=0, atol=1e-6
    )
    retriever = loaded.as_retriever(search_kwargs={"k": 1})
    assert [keys_of(docs) for docs in retriever.batch(QUERY_TEXTS)] == [[k] for k in EXPECTED]
    query = QUERY_TEXTS[0]
    assert loaded.similarity_search_with_score(query) == store.similarity_search_with_score(query)


def test_chroma_persists_and_reopens(
    embeddings: LocalEmbeddings,
    reference: np.ndarray,
    query_vectors: np.ndarray,
    cosine: np.ndarray,
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "chroma")
    settings = ChromaSettings(anonymized_telemetry=False)
    # Cosine space: Chroma's distance is 1 - cos. (Its default, l2, would also rank right.)
    configuration: CreateCollectionConfiguration = {"hnsw": {"space": "cosine"}}

    def open_client() -> ChromaClient:
        client = chromadb.PersistentClient(path=path, settings=settings)
        assert isinstance(client, ChromaClient)  # typed as ClientAPI, which has no close()
        return client

    def stored(store: Chroma) -> np.ndarray:
        got = store.get(include=["embeddings"])
        by_id = dict(zip(got["ids"], got["embeddings"], strict=True))
        return np.array([by_id[key] for key in KEYS])

    with open_client() as client:
        store = Chroma(
            collection_name="corpus",
            embedding_function=embeddings,
            client=client,
            collection_configuration=configuration,
        )
        store.add_documents(DOCUMENTS, ids=KEYS)
        first = [store.similarity_search_with_score(query, k=1)[0] for query in QUERY_TEXTS]
        assert [doc.metadata["key"] for doc, _ in first] == EXPECTED
        best = [cosine[row, KEYS.index(key)] for row, key in enumerate(EXPECTED)]
        np.testing.assert_allclose([d for _, d in first], 1 - np.array(best), atol=2e-5)
        np.testing.assert_allclose(stored(store), reference, rtol=0, atol=1e-6)
        # A metadata filter narrows the search to one topic.
        (hit,) = store.similarity_search(QUERY_TEXTS[0], k=1, filter={"topic": "medicine"})
        assert hit.metadata["topic"] == "medicine"

    # Closing the last client stops its system, so this one reads everything back from disk.
    with open_client() as client:
        reopened = Chroma(
            collection_name="corpus",
            embedding_function=embeddings,
            client=client,
            create_collection_if_not_exists=False,
        )
        # (The name is LangChain's; the scores are Chroma's distances, as above.)
        again = [
            reopened.similarity_search_by_vector_with_relevance_scores(vector, k=1)[0]
            for vector in query_vectors.tolist()
        ]
        assert [doc for doc, _ in again] == [doc for doc, _ in first]
        np.testing.assert_allclose([d for _, d in again], [d for _, d in first], atol=2e-5)
        np.testing.assert_allclose(stored(reopened), reference, rtol=0, atol=1e-6)


class CountingEmbeddings(LocalEmbeddings):
    """``LocalEmbeddings`` that records every text reaching the encoder; nothing else changes."""

    _documents: list[str] = PrivateAttr(default_factory=list)
    _queries: list[str] = PrivateAttr(default_factory=list)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self._documents.extend(texts)
        return super().embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        self._queries.append(text)
        return super().embed_query(text)


def test_cache_backed_embeddings_embed_each_text_once(
    reference: np.ndarray, tmp_path: Path
) -> None:
    counting = CountingEmbeddings()

    def cached() -> CacheBackedEmbeddings:
        # New store objects each time: all that carries over between ingestions is the files.
        # Queries get their own store: a query and a document with the same text may need
        # different vectors (models with a query instruction).
        return CacheBackedEmbeddings.from_bytes_store(
            counting,
            LocalFileStore(tmp_path / "documents"),
            namespace="all-MiniLM-L6-v2",
            query_embedding_cache=LocalFileStore(tmp_path / "queries"),
            key_encoder="sha256",
        )

    n = len(KEYS)
    first = FAISS.from_documents(DOCUMENTS, cached(), ids=KEYS)
    assert counting._documents == TEXTS
    assert len(list((tmp_path / "documents").iterdir())) == n
    second = FAISS.from_documents(DOCUMENTS, cached(), ids=KEYS)
    assert counting._documents == TEXTS  # the second ingestion embedded nothing
    # Cached vectors are the computed ones exactly (JSON keeps every float32 digit).
    np.testing.assert_array_equal(second.index.reconstruct_n(0, n), first.index.reconstruct_n(0, n))
    np.testing.assert_allclose(second.index.reconstruct_n(0, n), reference, rtol=0, atol=1e-6)

    # Only the new text reaches the encoder.
    new = "Jupiter is the largest planet in the solar system."
    vectors = cached().embed_documents([*TEXTS, new])
    assert counting._documents == [*TEXTS, new]
    np.testing.assert_array_equal(
        np.array(vectors[:n], np.float32), first.index.reconstruct_n(0, n)
    )

    # Each query is embedded once, though both stores are searched with it.
    for store in (first, second):
        for query, key in QUERIES.items():
            assert keys_of(store.similarity_search(query, k=1)) == [key], query
    assert counting._queries == QUERY_TEXTS
    fresh = get_encoder().encode_queries(QUERY_TEXTS[:1])[0]
    np.testing.assert_allclose(cached().embed_query(QUERY_TEXTS[0]), fresh, rtol=0, atol=1e-6)
    assert counting._queries == QUERY_TEXTS


class CountingEmbedding(LocalEmbedding):
    """``LocalEmbedding`` that records every text reaching the encoder; nothing else changes."""

    _texts: list[str] = PrivateAttr(default_factory=list)

    def _get_text_embedding(self, text: str) -> list[float]:
        self._texts.append(text)
        return super()._get_text_embedding(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        self._texts.extend(texts)
        return super()._get_text_embeddings(texts)


def topic_documents(edit: str | None = None) -> list[LlamaDocument]:
    """One LlamaIndex document per topic (id = topic); ``edit`` appends a sentence to one."""
    documents = []
    for topic in TOPICS:
        text = " ".join(TOPIC_TEXTS[topic].values())
        if topic == edit:
            text += " This sentence was added later."
        documents.append(LlamaDocument(text=text, id_=topic, metadata={"topic": topic}))
    return documents


def splitter() -> SentenceSplitter:
    # Small chunks (tokens, metadata included): one to three sentences each.
    return SentenceSplitter(chunk_size=54, chunk_overlap=0)


def embedded_texts(nodes: Sequence[BaseNode]) -> list[str]:
    """What LlamaIndex embeds for each node: its text with the metadata in front."""
    return [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]


def test_llamaindex_pipeline_and_vector_store_index(query_vectors: np.ndarray) -> None:
    embed_model = CountingEmbedding()
    pipeline = IngestionPipeline(transformations=[splitter(), embed_model])
    nodes = list(pipeline.run(documents=topic_documents()))
    assert len(TOPICS) < len(nodes) < len(KEYS)  # split, into chunks of more than a sentence
    texts = embedded_texts(nodes)
    assert embed_model._texts == texts
    assert texts[0].startswith("topic: cooking\n\n")

    index = VectorStoreIndex(nodes=nodes, embed_model=embed_model)
    assert embed_model._texts == texts  # the index keeps the pipeline's vectors
    store = index.vector_store
    assert isinstance(store, SimpleVectorStore)
    stored = np.array([store.get(node.node_id) for node in nodes])
    np.testing.assert_allclose(stored, get_encoder().encode_documents(texts), rtol=0, atol=1e-6)

    retriever = index.as_retriever(similarity_top_k=1)
    node_ids = [node.node_id for node in nodes]
    hits = {}
    for (query, key), vector in zip(QUERIES.items(), query_vectors, strict=True):
        (hit,) = retriever.retrieve(query)
        assert hit.node.ref_doc_id == TOPIC[key], query
        assert TEXT[key] in hit.node.get_content(), query
        cosine = vector @ stored[node_ids.index(hit.node.node_id)]
        assert hit.score == pytest.approx(float(cosine), abs=2e-5)
        hits[query] = hit.node.get_content()

    # from_documents runs the same splitter and model: the same chunks, the same vectors.
    direct = VectorStoreIndex.from_documents(
        topic_documents(), embed_model=LocalEmbedding(), transformations=[splitter()]
    )
    direct_store = direct.vector_store
    assert isinstance(direct_store, SimpleVectorStore)
    direct_nodes = direct.docstore.docs.values()
    by_text = {node.get_content(): direct_store.get(node.node_id) for node in direct_nodes}
    assert by_text == {node.get_content(): store.get(node.node_id) for node in nodes}
    (hit,) = direct.as_retriever(similarity_top_k=1).retrieve(QUERY_TEXTS[0])
    assert hit.node.get_content() == hits[QUERY_TEXTS[0]]


def test_llamaindex_ingestion_cache_and_docstore_skip_re_embedding(tmp_path: Path) -> None:
    embed_model = CountingEmbedding()
    documents = topic_documents()

    # The ingestion cache, persisted and loaded into a new pipeline: nothing is re-embedded.
    first = IngestionPipeline(transformations=[splitter(), embed_model])
    nodes = first.run(documents=documents)
    assert embed_model._texts == embedded_texts(nodes)
    first.persist(str(tmp_path / "cache"))
    second = IngestionPipeline(transformations=[splitter(), embed_model])
    second.load(str(tmp_path / "cache"))
    again = second.run(documents=documents)
    assert embed_model._texts == embedded_texts(nodes)
    assert [node.embedding for node in again] == [node.embedding for node in nodes]
    # Its key is the whole batch of nodes: one edited document re-embeds every chunk, the
    # unchanged documents' chunks included.
    edited = second.run(documents=topic_documents(edit="football"))
    assert embed_model._texts == embedded_texts(nodes) + embedded_texts(edited)
    unchanged = [text for text in embedded_texts(nodes) if not text.startswith("topic: football")]
    assert [t for t in embedded_texts(edited) if not t.startswith("topic: football")] == unchanged

    # A docstore dedupes per document: only the edited document's chunks are embedded again.
    embed_model._texts.clear()

    def with_docstore() -> IngestionPipeline:
        return IngestionPipeline(
            transformations=[splitter(), embed_model],
            docstore=SimpleDocumentStore(),
            # UPSERTS, the default, needs a vector store in the pipeline.
            docstore_strategy=DocstoreStrategy.DUPLICATES_ONLY,
        )

    third = with_docstore()
    third.run(documents=documents)
    third.persist(str(tmp_path / "docstore"))
    fourth = with_docstore()
    fourth.load(str(tmp_path / "docstore"))
    seen = list(embed_model._texts)
    assert fourth.run(documents=documents) == []
    assert embed_model._texts == seen
    changed = fourth.run(documents=topic_documents(edit="football"))
    assert {node.ref_doc_id for node in changed} == {"football"}
    assert embed_model._texts == seen + embedded_texts(changed)
    reference = get_encoder().encode_documents(embedded_texts(changed))
    np.testing.assert_allclose(
        [node.get_embedding() for node in changed], reference, rtol=0, atol=1e-6
    )


def top_results(output: str) -> dict[str, str]:
    """``{question: key of the top document}`` from an example's ``Q:``/``->`` lines."""
    pairs = re.findall(r"^Q: (.+)\n\s+-> [-\d.]+\s+\[(\w+)\]", output, flags=re.MULTILINE)
    return dict(pairs)


EXAMPLE_TESTS = ("test_langchain_rag_example", "test_llamaindex_quickstart_example")


@pytest.fixture(scope="module")
def example_output(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each example's stdout, run as docs/examples.md shows it (the blocks marked run-by these
    tests) and compared with the page; the two subprocesses run side by side."""

    def run(name: str) -> str:
        folder = tmp_path_factory.mktemp(name.removeprefix("test_"))
        return docs_harness.run_marked_block(docs_harness.run_by_id(Path(__file__), name), folder)

    with ThreadPoolExecutor(max_workers=len(EXAMPLE_TESTS)) as pool:
        return dict(zip(EXAMPLE_TESTS, pool.map(run, EXAMPLE_TESTS), strict=True))


def test_langchain_rag_example(example_output: dict[str, str]) -> None:
    out = example_output["test_langchain_rag_example"]
    assert top_results(out) == {
        "Is there a penalty for overdue books?": "fees",
        "Can I read books on my tablet?": "ebooks",
        "Where can I leave my car?": "parking",
        "Where can my study group meet?": "rooms",
    }
    assert "retrieval only" in out


def test_llamaindex_quickstart_example(example_output: dict[str, str]) -> None:
    out = example_output["test_llamaindex_quickstart_example"]
    assert "3 documents -> 6 chunks" in out
    # The right document, and within it the chunk that answers.
    expected = {
        "What is the dance of the bees for?": ("bees", "waggle dance"),
        "What is molten rock called after it comes out of the ground?": ("volcanoes", "lava"),
        "Which chess piece never changes square colour?": ("chess", "bishop stays"),
    }
    assert top_results(out) == {query: key for query, (key, _) in expected.items()}
    for query, (_, words) in expected.items():
        answer = out.split(f"Q: {query}\n", 1)[1].split("\n", 1)[0]
        assert words in answer, query
