"""Our cache under the frameworks' own: LangChain's CacheBackedEmbeddings, LlamaIndex's
IngestionPipeline cache. Each keys on less than ours; these tests pin down what each one
does on top of ours (see docs/cache.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from localembed import clear_encoder_cache, get_encoder
from localembed.cache import cache_namespace

DOCS = [f"Note {i}: the library opens at {8 + i % 4} am on day {i}." for i in range(10)]


@pytest.fixture(autouse=True)
def _fresh_encoders() -> None:
    clear_encoder_cache()


def _retrained(model: Path, target: Path) -> Path:
    """A copy of ``model`` with one weight changed: the same name, other vectors."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(model, target)
    tensors = load_file(target / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone() + 0.25
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_langchain_cache_backed_embeddings_over_ours(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from langchain_classic.embeddings import CacheBackedEmbeddings
    from langchain_classic.storage import InMemoryByteStore

    from langchain_localembed import LocalEmbeddings

    model = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model)
    ours = LocalEmbeddings(model=str(model), cache=str(tmp_path / "ours"))
    theirs = InMemoryByteStore()
    # CacheBackedEmbeddings keys on namespace + hash(text) alone (namespace defaults to "").
    lc = CacheBackedEmbeddings.from_bytes_store(ours, theirs, key_encoder="sha256")
    first = lc.embed_documents(DOCS)
    assert ours.encoder.cache_stats()["computed"] == len(DOCS)
    assert lc.embed_documents(DOCS) == first  # served by LangChain's store
    assert ours.encoder.cache_stats()["hits"] == 0  # ours was not even asked
    # A fresh LangChain store (another process, a cleared store): ours serves it, same vectors.
    fresh = CacheBackedEmbeddings.from_bytes_store(ours, InMemoryByteStore(), key_encoder="sha256")
    assert fresh.embed_documents(DOCS) == first
    assert ours.encoder.cache_stats()["hits"] == len(DOCS)
    # Queries are not cached by LangChain unless query_embedding_cache is given; ours caches them.
    lc.embed_query("when does it open?")
    lc.embed_query("when does it open?")
    assert ours.encoder.cache_stats()["hits"] == len(DOCS) + 1

    # The hazard: the model's files change, the name and LangChain's namespace do not.
    shutil.rmtree(model)
    _retrained(tiny_bert_dir, model)
    clear_encoder_cache()
    retrained = LocalEmbeddings(model=str(model), cache=str(tmp_path / "ours"))
    stale = CacheBackedEmbeddings.from_bytes_store(retrained, theirs, key_encoder="sha256")
    assert stale.embed_documents(DOCS) == first  # LangChain serves the old model's vectors
    right = retrained.embed_documents(DOCS)  # ours: the fingerprint changed, all miss
    assert retrained.encoder.cache_stats()["computed"] == len(DOCS)
    assert not np.allclose(np.array(right), np.array(first), atol=1e-4)
    # The fix: LangChain's namespace from ours, which covers the model files and settings.
    keyed = CacheBackedEmbeddings.from_bytes_store(
        retrained,
        theirs,
        namespace=cache_namespace(retrained.encoder, "document"),
        key_encoder="sha256",
    )
    assert keyed.embed_documents(DOCS) == right


def test_llamaindex_ingestion_cache_over_ours(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionCache, IngestionPipeline

    from llamaindex_localembed import LocalEmbedding

    model = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model)
    cache_dir = str(tmp_path / "ours")
    embed = LocalEmbedding(model=str(model), cache=cache_dir)
    theirs = IngestionCache()
    docs = [Document(text=text, id_=f"d{i}") for i, text in enumerate(DOCS)]

    def run(documents: list[Document], embedding: LocalEmbedding) -> list[list[float]]:
        pipeline = IngestionPipeline(transformations=[embedding], cache=theirs)
        return [node.embedding for node in pipeline.run(documents=documents)]

    first = run(docs, embed)
    assert embed.encoder.cache_stats()["computed"] == len(DOCS)
    assert run(docs, embed) == first  # LlamaIndex's cache: the whole list, one key
    assert embed.encoder.cache_stats()["hits"] == 0
    # One changed document: LlamaIndex's key covers every node's text, so its cache misses
    # for the whole list; ours computes only the changed one.
    changed = [*docs[:-1], Document(text="A changed note.", id_="d9")]
    out = run(changed, embed)
    stats = embed.encoder.cache_stats()
    assert (stats["hits"], stats["computed"]) == (len(DOCS) - 1, len(DOCS) + 1)
    assert out[:-1] == first[:-1]

    # The hazard: new weights under the same path; LlamaIndex's key (node text + the
    # component's settings) does not change, ours (the files' content) does.
    shutil.rmtree(model)
    _retrained(tiny_bert_dir, model)
    clear_encoder_cache()
    retrained = LocalEmbedding(model=str(model), cache=cache_dir)
    assert run(docs, retrained) == first  # stale, from LlamaIndex's cache
    right = IngestionPipeline(transformations=[retrained]).run(documents=docs)
    assert retrained.encoder.cache_stats()["computed"] == len(DOCS)
    assert not np.allclose(np.array([n.embedding for n in right]), np.array(first), atol=1e-4)
    assert get_encoder(model=str(model)).fingerprint == retrained.encoder.fingerprint
