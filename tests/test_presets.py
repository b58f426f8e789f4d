"""Every preset string is pinned, verbatim from the model authors; precedence and templates."""

from __future__ import annotations

import pytest

from localembed.pooling import POOLING_MODES
from localembed.presets import PRESETS, apply_instruction, find_preset

WEB = "Given a web search query, retrieve relevant passages that answer the query"


@pytest.mark.parametrize(
    ("model", "family", "pooling", "query", "document", "max_length"),
    [
        ("BAAI/bge-m3", "bge-m3", "cls", "", "", 8192),
        (
            "BAAI/bge-small-en-v1.5",
            "bge-en-v1.5",
            "cls",
            "Represent this sentence for searching relevant passages: ",
            "",
            512,
        ),
        (
            "BAAI/bge-large-en-v1.5",
            "bge-en-v1.5",
            "cls",
            "Represent this sentence for searching relevant passages: ",
            "",
            512,
        ),
        (
            "BAAI/bge-base-zh-v1.5",
            "bge-zh-v1.5",
            "cls",
            "为这个句子生成表示以用于检索相关文章：",
            "",
            512,
        ),
        ("intfloat/e5-base-v2", "e5", "mean", "query: ", "passage: ", 512),
        ("intfloat/multilingual-e5-large", "multilingual-e5", "mean", "query: ", "passage: ", 512),
        (
            "Alibaba-NLP/gte-Qwen2-1.5B-instruct",
            "gte-qwen2-instruct",
            "last_token",
            f"Instruct: {WEB}\nQuery: {{text}}",
            "",
            8192,
        ),
        (
            "Qwen/Qwen3-Embedding-0.6B",
            "qwen3-embedding",
            "last_token",
            f"Instruct: {WEB}\nQuery:{{text}}",
            "",
            8192,
        ),
        (
            "nomic-ai/nomic-embed-text-v1.5",
            "nomic-embed-text",
            "mean",
            "search_query: ",
            "search_document: ",
            8192,
        ),
        # The CDE card's prefixes and the 512 tokens its notebook truncates to.
        ("jxm/cde-small-v1", "cde", "mean", "search_query: ", "search_document: ", 512),
        ("jxm/cde-small-v2", "cde", "mean", "search_query: ", "search_document: ", 512),
        ("sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6", "mean", "", "", 256),
        ("sentence-transformers/all-MiniLM-L12-v2", "all-minilm-l12", "mean", "", "", 128),
        ("sentence-transformers/all-mpnet-base-v2", "all-mpnet", "mean", "", "", 384),
    ],
)
def test_preset_is_pinned(model, family, pooling, query, document, max_length) -> None:
    preset = find_preset(model)
    assert preset is not None
    assert preset.family == family
    assert preset.pooling == pooling
    assert preset.normalize is True
    assert preset.instruction("query") == query
    assert preset.instruction("document") == document
    assert preset.max_length == max_length


def test_raw_templates_are_verbatim() -> None:
    by_family = {p.family: p for p in PRESETS}
    assert by_family["gte-qwen2-instruct"].query_instruction == "Instruct: {task}\nQuery: {text}"
    assert by_family["qwen3-embedding"].query_instruction == "Instruct: {task}\nQuery:{text}"
    assert by_family["gte-qwen2-instruct"].task == WEB


def test_every_preset_uses_a_real_pooling_mode() -> None:
    assert {p.pooling for p in PRESETS} <= set(POOLING_MODES)
    assert len({p.family for p in PRESETS}) == len(PRESETS)


@pytest.mark.parametrize(
    "name", ["my-model", "intfloat/e5-mistral-7b-instruct", "", "bge-reranker"]
)
def test_unknown_names_have_no_preset(name: str) -> None:
    assert find_preset(name) is None


def test_multilingual_e5_instruct_is_not_plain_e5() -> None:
    assert find_preset("intfloat/multilingual-e5-large-instruct") is None


def test_apply_instruction() -> None:
    assert apply_instruction("query: ", "x") == "query: x"
    assert apply_instruction("", "x") == "x"
    assert apply_instruction("<{text}>", "x") == "<x>"
    assert apply_instruction("a {text} b {text}", "x") == "a x b x"
    # Braces in the text are text, not a format string.
    assert apply_instruction("Q: {text}", "{text} {0}") == "Q: {text} {0}"
