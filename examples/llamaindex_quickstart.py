"""LlamaIndex quickstart: Documents -> IngestionPipeline -> VectorStoreIndex -> retriever.

The pipeline splits each document into sentence chunks and embeds them with LocalEmbedding;
the index keeps those vectors, and the retriever returns the chunk closest to each query.
Retrieval needs no LLM, so none is configured.

Runs offline on the embedded all-MiniLM-L6-v2:
    python examples/llamaindex_quickstart.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter

from llamaindex_localembed import LocalEmbedding

DOCUMENTS = {
    "bees": (
        "Honey bees live in colonies of tens of thousands of workers and a single queen. "
        "Workers build the comb from wax that they secrete from glands on their abdomen. "
        "A forager that finds flowers performs a waggle dance: the angle of the dance gives "
        "the direction of the food and its length gives the distance. "
        "Bees turn nectar into honey by adding enzymes and fanning away most of its water."
    ),
    "volcanoes": (
        "A volcano forms where molten rock rises from the mantle through cracks in the crust. "
        "Below ground the molten rock is called magma; once it erupts it is called lava. "
        "Lava flows cool and harden into new rock such as basalt or obsidian. "
        "Ash clouds from large eruptions can ground aircraft thousands of kilometres away."
    ),
    "chess": (
        "Chess is played by two players on a board of sixty-four squares. "
        "The rook moves in straight lines and the bishop moves along diagonals, so a bishop "
        "stays on squares of one colour for the whole game. "
        "The knight moves in an L shape and is the only piece that can jump over others. "
        "A game ends in checkmate when the king is attacked and has no escape."
    ),
}
QUERIES = [
    "What is the dance of the bees for?",
    "What is molten rock called after it comes out of the ground?",
    "Which chess piece never changes square colour?",
]


def main() -> None:
    embed_model = LocalEmbedding()
    Settings.embed_model = embed_model  # what LlamaIndex uses wherever no model is passed
    documents = [Document(text=text, id_=key) for key, text in DOCUMENTS.items()]

    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0), embed_model]
    )
    nodes = pipeline.run(documents=documents)
    print(
        f"{len(documents)} documents -> {len(nodes)} chunks, embedded by {embed_model.model_name}"
    )

    index = VectorStoreIndex(nodes=nodes)  # the nodes carry their vectors: no re-embedding
    retriever = index.as_retriever(similarity_top_k=1)
    for query in QUERIES:
        (hit,) = retriever.retrieve(query)
        print(
            f"Q: {query}\n   -> {hit.score:.3f}  [{hit.node.ref_doc_id}] {hit.node.get_content()}"
        )


if __name__ == "__main__":
    main()
