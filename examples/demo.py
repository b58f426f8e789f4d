"""localembed demo: the same local model answers a query through LangChain and LlamaIndex.

Runs offline on the embedded all-MiniLM-L6-v2:  make demo
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from langchain_core.documents import Document as LangChainDocument
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import Document as LlamaDocument
from llama_index.core import Settings, VectorStoreIndex

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding

DOCUMENTS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Photosynthesis turns sunlight, water and carbon dioxide into glucose and oxygen.",
    "Python was created by Guido van Rossum and first released in 1991.",
    "The Great Barrier Reef is the largest coral reef system on Earth.",
    "A sourdough starter is a culture of wild yeast and lactic acid bacteria.",
]
QUERY = "Who made the Python language?"


def main() -> None:
    embeddings = LocalEmbeddings()
    print(
        "model:", embeddings.encoder.describe()["model"], f"({embeddings.encoder.dimension} dims)"
    )

    store = InMemoryVectorStore(embeddings)
    store.add_documents([LangChainDocument(page_content=text) for text in DOCUMENTS])
    ((hit, score),) = store.similarity_search_with_score(QUERY, k=1)
    print(f"LangChain  InMemoryVectorStore -> {score:.3f}  {hit.page_content}")

    Settings.embed_model = LocalEmbedding()
    index = VectorStoreIndex.from_documents([LlamaDocument(text=text) for text in DOCUMENTS])
    (node,) = index.as_retriever(similarity_top_k=1).retrieve(QUERY)
    print(f"LlamaIndex VectorStoreIndex    -> {node.score:.3f}  {node.node.get_content()}")

    shared = embeddings.encoder is Settings.embed_model.encoder
    print("one model in memory for both frameworks:", shared)


if __name__ == "__main__":
    main()
