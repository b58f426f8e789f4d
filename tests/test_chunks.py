"""Chunks that fit the model (text splitters) and late chunking."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding
from localembed import get_encoder
from localembed.late_chunks import chunk_char_spans
from localembed.pooling import pool

# A long markdown text: every page of the documentation site, one after another.
README = "\n\n".join(
    path.read_text(encoding="utf-8")
    for path in sorted((Path(__file__).resolve().parent.parent / "docs").glob("*.md"))
)
INSTRUCTION = "Represent this document for retrieval: "


def assert_fits_and_covers(encoder, chunks: list[str]) -> None:
    """Every chunk, as the encoder tokenizes it, fits the window; together they cover README."""
    instruction = encoder.settings.document_instruction
    limit = encoder.settings.max_length
    lengths = [len(encoder.tokenizer(instruction + chunk)["input_ids"]) for chunk in chunks]
    assert max(lengths) <= limit, f"{sum(n > limit for n in lengths)} chunks over {limit}"
    assert max(lengths) > limit * 0.7, "chunks should use the window, not be tiny"
    covered = np.zeros(len(README), dtype=bool)
    for start, stop in chunk_char_spans(README, chunks):
        covered[start:stop] = True
    missed = [char for char, seen in zip(README, covered, strict=True) if not seen]
    assert not "".join(missed).strip(), "some README text is in no chunk"


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_langchain_splitter_chunks_are_never_truncated(instruction: str | None) -> None:
    embeddings = LocalEmbeddings(document_instruction=instruction)
    encoder = embeddings.encoder
    splitter = embeddings.text_splitter(chunk_overlap=16)
    chunks = splitter.split_text(README)
    assert len(chunks) > 10
    assert_fits_and_covers(encoder, chunks)
    # The size is the window minus special and instruction tokens.
    expected = encoder.settings.max_length - 2 - encoder.count_tokens(instruction or "")
    assert encoder.chunk_size() == expected
    assert splitter._chunk_size == expected


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_llamaindex_node_parser_chunks_are_never_truncated(instruction: str | None) -> None:
    from llama_index.core import Document

    embed_model = LocalEmbedding(document_instruction=instruction)
    parser = embed_model.node_parser(chunk_overlap=16)
    nodes = parser.get_nodes_from_documents([Document(text=README)])
    assert len(nodes) > 10
    assert_fits_and_covers(embed_model.encoder, [node.get_content() for node in nodes])


def test_truncation_warning_names_rows_and_points_to_the_splitters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    encoder = get_encoder()
    long = "word " * 400
    with caplog.at_level(logging.WARNING, logger="localembed"):
        encoder.encode(["short", long, "short", long])
    message = caplog.text
    assert "2 of 4 texts" in message
    assert "1, 3" in message
    assert "text_splitter" in message
    assert "node_parser" in message


def hand_pooled(encoder, text: str, chunks: list[str]) -> np.ndarray:
    """Pool each chunk's tokens from ``encode(output="token_embeddings")`` by hand."""
    tokens, vectors = encoder.encode([text], output="token_embeddings")[0]
    offsets = encoder.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    assert len(offsets) == len(tokens)
    rows = []
    for start, stop in chunk_char_spans(text, chunks):
        inside = [i for i, (a, b) in enumerate(offsets) if b > a and a < stop and b > start]
        span = torch.from_numpy(vectors[inside])[None]
        pooled = pool(encoder.settings.pooling, span, torch.ones(1, len(inside)))[0].numpy()
        rows.append(pooled / np.linalg.norm(pooled))
    return np.asarray(rows)


TEXT = (
    "Berlin is the capital and largest city of Germany. Its more than 3.85 million "
    "inhabitants make it the most populous city of the European Union. The city is also "
    "one of the states of Germany."
)
CHUNKS = [
    "Berlin is the capital and largest city of Germany.",
    "Its more than 3.85 million inhabitants make it the most populous city of the European Union.",
    "The city is also one of the states of Germany.",
]


def test_late_chunks_equal_hand_pooled_token_embeddings() -> None:
    encoder = get_encoder()
    late = encoder.encode_late_chunks(TEXT, CHUNKS)
    assert late.shape == (3, encoder.dimension)
    assert late.dtype == np.float32
    np.testing.assert_allclose(late, hand_pooled(encoder, TEXT, CHUNKS), atol=1e-5)
    # Each chunk now carries its document: it differs from the chunk embedded alone.
    alone = encoder.encode_documents(CHUNKS)
    assert np.all(np.sum(late * alone, axis=1) < 0.99)


def test_late_chunks_with_cls_pooling_and_overlapping_chunks(tiny_bert_dir: Path) -> None:
    encoder = get_encoder(model=str(tiny_bert_dir), pooling="cls")
    chunks = [TEXT[:60], TEXT[40:120], TEXT[100:]]
    np.testing.assert_allclose(
        encoder.encode_late_chunks(TEXT, chunks), hand_pooled(encoder, TEXT, chunks), atol=1e-5
    )


def test_long_documents_use_overlapping_windows() -> None:
    encoder = get_encoder(max_length=24)
    late = encoder.encode_late_chunks(TEXT, CHUNKS)
    whole = get_encoder().encode_late_chunks(TEXT, CHUNKS)
    assert late.shape == whole.shape
    np.testing.assert_allclose(np.linalg.norm(late, axis=1), 1.0, atol=1e-5)
    # A 24-token window sees less of the document than one pass: close, not equal.
    similarity = np.sum(late * whole, axis=1)
    assert np.all(similarity > 0.7), similarity
    assert not np.allclose(late, whole, atol=1e-3)


def test_chunks_not_in_the_text_are_named() -> None:
    encoder = get_encoder()
    with pytest.raises(ValueError, match=r"chunk 1 \('Paris is nice.'\) is not found in the text"):
        encoder.encode_late_chunks(TEXT, [CHUNKS[0], "Paris is nice."])
    with pytest.raises(ValueError, match=r"chunk 1 .* not found after the previous chunk"):
        encoder.encode_late_chunks(TEXT, [CHUNKS[1], CHUNKS[0]])
    with pytest.raises(ValueError, match="chunk 0 is empty"):
        encoder.encode_late_chunks(TEXT, [" "])
    with pytest.raises(TypeError, match="chunk 0 is int"):
        encoder.encode_late_chunks(TEXT, [3])  # type: ignore[list-item]


def test_late_chunks_through_the_adapters() -> None:
    from llama_index.core import Document

    embeddings = LocalEmbeddings()
    vectors = embeddings.embed_late_chunks(TEXT, CHUNKS)
    np.testing.assert_allclose(vectors, get_encoder().encode_late_chunks(TEXT, CHUNKS), atol=1e-6)
    nodes = LocalEmbedding().late_chunk_nodes(Document(text=TEXT))
    assert nodes and all(node.embedding is not None for node in nodes)


@pytest.mark.slow
def test_late_chunking_example_ranks_answers_higher(tmp_path: Path) -> None:
    from tests import docs_harness

    # The command docs/chunks.md shows (its block is marked run-by this test), compared there.
    name = "test_late_chunking_example_ranks_answers_higher"
    output = docs_harness.run_marked_block(docs_harness.run_by_id(Path(__file__), name), tmp_path)
    last = output.strip().splitlines()[-1]
    alone, late = (float(part.split()[-1]) for part in last.split(","))
    assert late > alone, output
