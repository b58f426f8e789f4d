"""Late chunking places chunks in order and pools their own tokens (issue 19 item 1).

The reference is hand pooling: ``encode(output="token_embeddings")`` of the whole text, each
chunk's tokens picked by their character offsets from a span known by construction (never from
the placement under test), then the model's pooling and normalization.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding
from localembed import get_encoder
from localembed.late_chunks import chunk_char_spans
from localembed.pooling import pool


def hand_pooled(encoder, text: str, spans: list[tuple[int, int]]) -> np.ndarray:
    """Each span's tokens of one pass over the (instructed) text, pooled by hand."""
    instruction = encoder.settings.document_instruction
    tokens, vectors = encoder.encode([text], instruction or None, output="token_embeddings")[0]
    instructed = instruction + text
    offsets = encoder.tokenizer(instructed, return_offsets_mapping=True)["offset_mapping"]
    assert len(offsets) == len(tokens), "the text must fit one window"
    shift = len(instruction)
    rows = []
    for start, stop in spans:
        inside = [
            i
            for i, (a, b) in enumerate(offsets)
            if b > a and a - shift < stop and b - shift > start and a >= shift
        ]
        span = torch.from_numpy(vectors[inside])[None]
        pooled = pool(encoder.settings.pooling, span, torch.ones(1, len(inside)))[0].numpy()
        rows.append(pooled / np.linalg.norm(pooled) if encoder.settings.normalize else pooled)
    return np.asarray(rows)


def joined(pieces: list[str], separator: str = " ") -> tuple[str, list[tuple[int, int]]]:
    """The text of ``pieces`` joined and each piece's span in it (known by construction)."""
    spans, position = [], 0
    for piece in pieces:
        spans.append((position, position + len(piece)))
        position += len(piece) + len(separator)
    return separator.join(pieces), spans


REPETITIVE = ["ok ok.", "ok.", "ok ok.", "ok.", "ok ok ok."]
TEMPLATED = [
    f"Name: {name}. Role: {role}. Status: active."
    for name, role in [("Ann", "admin"), ("Bob", "admin"), ("Ann", "admin"), ("Cy", "user")]
]
# A chunk that is the tail of the one before it: a naive search finds it inside that one.
NESTED = ["Total: 5. Total: 5.", "Total: 5.", "Total: 6."]


@pytest.mark.parametrize("pieces", [REPETITIVE, TEMPLATED, NESTED], ids=["rep", "tpl", "nested"])
def test_repeated_chunks_are_placed_after_the_previous_end(pieces: list[str]) -> None:
    text, spans = joined(pieces)
    assert chunk_char_spans(text, pieces) == spans
    encoder = get_encoder()
    np.testing.assert_allclose(
        encoder.encode_late_chunks(text, pieces), hand_pooled(encoder, text, spans), atol=1e-5
    )


def test_overlapping_chunks_of_a_repetitive_text(tiny_bert_dir: Path) -> None:
    """Overlaps as a splitter makes them: each chunk starts inside the previous one."""
    text = "alpha beta gamma. alpha beta delta. alpha beta gamma. alpha beta epsilon."
    spans = [(0, 35), (18, 53), (36, 73)]
    chunks = [text[a:b] for a, b in spans]
    assert chunk_char_spans(text, chunks) == spans
    encoder = get_encoder(model=str(tiny_bert_dir), pooling="cls")
    np.testing.assert_allclose(
        encoder.encode_late_chunks(text, chunks), hand_pooled(encoder, text, spans), atol=1e-5
    )


def test_placement_prefers_covering_the_whole_text() -> None:
    # "x x" twice covers "x x x x" without overlap; three times needs overlaps of one "x".
    assert chunk_char_spans("x x x x", ["x x", "x x"]) == [(0, 3), (4, 7)]
    assert chunk_char_spans("x x x x", ["x x", "x x", "x x"]) == [(0, 3), (2, 5), (4, 7)]
    # Chunks of part of the text (trailing text left out) are still placed.
    assert chunk_char_spans("a. b. a. c.", ["a.", "b."]) == [(0, 2), (3, 5)]


def test_a_chunk_that_cannot_follow_is_named() -> None:
    text = "one two. three four. one two."
    with pytest.raises(ValueError, match=r"chunk 2 \('three four.'\) is not found after"):
        chunk_char_spans(text, ["one two.", "three four.", "three four."])
    with pytest.raises(ValueError, match=r"chunk 1 \('five'\) is not found in the text"):
        chunk_char_spans(text, ["one two.", "five"])
    # Text other than whitespace between two chunks: a lost part, refused.
    with pytest.raises(ValueError, match=r"chunk 1 \('one two.'\) is not found after"):
        chunk_char_spans("one two. three four. one two.", ["one two.", "one two."])


def test_placement_of_a_long_periodic_text_is_fast_and_exact() -> None:
    text = "The cat sat. " * 400
    spans = [(start, start + 260) for start in range(0, len(text) - 260, 260)]
    chunks = [text[a:b].strip() for a, b in spans]
    placed = chunk_char_spans(text, chunks)
    assert [text[a:b] for a, b in placed] == chunks
    assert all(b <= a2 for (_, b), (a2, _) in itertools.pairwise(placed))
    # An impossible chunk late in a long periodic text is refused quickly (bounded search).
    with pytest.raises(ValueError, match="chunk 15"):
        chunk_char_spans(text, [*chunks[:15], "The dog sat."])


def splitter_texts() -> str:
    rows = [
        f"Record {i % 3}. The customer asked about the order. The agent said the order ships "
        f"today. The customer asked about the order again."
        for i in range(8)
    ]
    return "\n\n".join(rows)


def assert_placement_is_a_cover(text: str, chunks: list[str], spans: list[tuple[int, int]]) -> None:
    assert [text[a:b] for a, b in spans] == chunks
    for (start, stop), (next_start, next_stop) in itertools.pairwise(spans):
        assert next_start > start and next_stop > stop
        assert not text[stop:next_start].strip(), "text between chunks belongs to no chunk"
    assert not text[: spans[0][0]].strip() and not text[spans[-1][1] :].strip()


@pytest.mark.parametrize("overlap", [0, 12])
def test_langchain_splitter_chunks_are_placed_as_a_cover(overlap: int) -> None:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    embeddings = LocalEmbeddings()
    encoder = embeddings.encoder
    text = splitter_texts()
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=30, chunk_overlap=overlap, length_function=encoder.count_tokens
    )
    chunks = splitter.split_text(text)
    assert len(chunks) > 5
    spans = chunk_char_spans(text, chunks)
    assert_placement_is_a_cover(text, chunks, spans)
    vectors = np.asarray(embeddings.embed_late_chunks(text, chunks))
    np.testing.assert_allclose(vectors, hand_pooled(encoder, text, spans), atol=1e-5)


def test_llamaindex_late_chunk_nodes_carry_their_placement() -> None:
    from llama_index.core import Document
    from llama_index.core.node_parser import SentenceSplitter

    embed_model = LocalEmbedding()
    encoder = embed_model.encoder
    text = splitter_texts()
    parser = SentenceSplitter(chunk_size=30, chunk_overlap=10, tokenizer=encoder.token_ids)
    nodes = embed_model.late_chunk_nodes(Document(text=text), parser)
    contents = [node.get_content() for node in nodes]
    spans = [(node.start_char_idx, node.end_char_idx) for node in nodes]
    assert spans == chunk_char_spans(text, contents)
    assert_placement_is_a_cover(text, contents, spans)
    np.testing.assert_allclose(
        [node.embedding for node in nodes], hand_pooled(encoder, text, spans), atol=1e-5
    )
