"""Model-family presets: the one table of pooling, normalization, instructions and length.

Embedding models and rerankers (cross-encoders, ``kind="reranker"``) share the table.

Instruction strings are copied verbatim from the model authors' cards and code; a test pins
each one. A preset is the last resort: explicit arguments win, then what the model directory
itself says (sentence-transformers metadata and saved prompts), then the preset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from localembed.texts import apply_instruction

__all__ = [
    "HEAD_FILES",
    "PRESETS",
    "SCORES",
    "WEB_SEARCH_TASK",
    "Preset",
    "apply_instruction",
    "find_preset",
]

WEB_SEARCH_TASK = "Given a web search query, retrieve relevant passages that answer the query"
"""The retrieval task the gte-Qwen2 and Qwen3-Embedding cards use in their examples."""


@dataclass(frozen=True)
class Preset:
    """How one model family embeds text."""

    family: str
    """Short family name shown by ``localembed info``."""
    pattern: str
    """Regular expression searched (case-insensitively) in the model id or directory path."""
    pooling: str
    """Pooling mode (a key of :data:`localembed.pooling.POOLING_FUNCTIONS`)."""
    normalize: bool = True
    """Whether the authors L2-normalize the vectors."""
    query_instruction: str = ""
    """Prefix, or template with ``{text}`` (and ``{task}``), for queries."""
    document_instruction: str = ""
    """Prefix, or template with ``{text}``, for documents."""
    max_length: int | None = None
    """Tokens per text the authors use; None: the model's own limit."""
    task: str = ""
    """Fills ``{task}`` in the instruction templates."""
    kind: str = "embedding"
    """"embedding" (for :class:`~localembed.LocalEncoder`) or "reranker" (a cross-encoder)."""
    activation: str | None = None
    """Rerankers: "sigmoid" or "none" (raw logits) on the scores; None: the model's own rule."""
    heads: tuple[tuple[str, str], ...] = ()
    """Extra output heads saved next to the weights: (output name, file name) pairs."""
    scores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """How a query scores against a document from the family's outputs: (score mode, the
    outputs it combines) pairs. A mode of one output is that output's own score (dense: dot
    product, sparse: lexical matching, colbert: MaxSim); a mode of several is the weighted
    mean of theirs, summed in the order listed (see :func:`localembed.m3.hybrid_score`)."""

    def instruction(self, kind: str) -> str:
        """The query or document instruction with ``{task}`` filled in."""
        template = self.query_instruction if kind == "query" else self.document_instruction
        return template.replace("{task}", self.task)


PRESETS: tuple[Preset, ...] = (
    Preset(
        family="bge-reranker-v2-m3",
        pattern=r"bge-reranker-v2-m3",
        pooling="cls",
        kind="reranker",
        max_length=512,
    ),
    Preset(
        family="bge-reranker",
        pattern=r"bge-reranker-(base|large)",
        pooling="cls",
        kind="reranker",
        max_length=512,
    ),
    Preset(
        family="ms-marco-cross-encoder",
        pattern=r"ms-marco-(minilm|tinybert|electra)",
        pooling="cls",
        kind="reranker",
        activation="none",
        max_length=512,
    ),
    Preset(
        family="bge-m3",
        pattern=r"bge-m3",
        pooling="cls",
        heads=(("sparse", "sparse_linear.pt"), ("colbert", "colbert_linear.pt")),
        # FlagEmbedding's BGEM3FlagModel.compute_score modes, in its order.
        scores=(
            ("dense", ("dense",)),
            ("sparse", ("sparse",)),
            ("colbert", ("colbert",)),
            ("sparse+dense", ("sparse", "dense")),
            ("colbert+sparse+dense", ("colbert", "sparse", "dense")),
        ),
        max_length=8192,
    ),
    Preset(
        family="bge-en-v1.5",
        pattern=r"bge-(small|base|large)-en-v1\.5",
        pooling="cls",
        query_instruction="Represent this sentence for searching relevant passages: ",
        max_length=512,
    ),
    Preset(
        family="bge-zh-v1.5",
        pattern=r"bge-(small|base|large)-zh-v1\.5",
        pooling="cls",
        query_instruction="为这个句子生成表示以用于检索相关文章：",
        max_length=512,
    ),
    Preset(
        family="multilingual-e5",
        pattern=r"multilingual-e5-(small|base|large)$",
        pooling="mean",
        query_instruction="query: ",
        document_instruction="passage: ",
        max_length=512,
    ),
    Preset(
        family="e5",
        pattern=r"(^|/)e5-(small|base|large)(-v2)?$",
        pooling="mean",
        query_instruction="query: ",
        document_instruction="passage: ",
        max_length=512,
    ),
    Preset(
        family="gte-qwen2-instruct",
        pattern=r"gte-qwen2-.*-instruct",
        pooling="last_token",
        query_instruction="Instruct: {task}\nQuery: {text}",
        task=WEB_SEARCH_TASK,
        max_length=8192,
    ),
    Preset(
        family="qwen3-embedding",
        pattern=r"qwen3-embedding",
        pooling="last_token",
        query_instruction="Instruct: {task}\nQuery:{text}",
        task=WEB_SEARCH_TASK,
        max_length=8192,
    ),
    Preset(
        family="nomic-embed-text",
        pattern=r"nomic-embed-text-v1",
        pooling="mean",
        query_instruction="search_query: ",
        document_instruction="search_document: ",
        max_length=8192,
    ),
    Preset(
        # Contextual document embeddings (jxm/cde-small-v1, v2): the card's prefixes and the
        # 512 tokens its notebook truncates to; the model pools itself (see
        # localembed.backends.contextual), so pooling is not used.
        family="cde",
        pattern=r"cde-small-v\d",
        pooling="mean",
        query_instruction="search_query: ",
        document_instruction="search_document: ",
        max_length=512,
    ),
    Preset(
        family="all-minilm-l6",
        pattern=r"all-minilm-l6-v\d",
        pooling="mean",
        max_length=256,
    ),
    Preset(
        family="all-minilm-l12",
        pattern=r"all-minilm-l12-v\d",
        pooling="mean",
        max_length=128,
    ),
    Preset(
        family="all-mpnet",
        pattern=r"all-mpnet-base-v\d",
        pooling="mean",
        max_length=384,
    ),
)
"""Model families, most specific first; the first match wins."""

HEAD_FILES: dict[str, str] = {name: file for p in PRESETS for name, file in p.heads}
"""Output head name -> the file it is saved in next to the weights (bge-m3's two heads): the
one place head files are named (loading and ``localembed download`` fetch them)."""

SCORES: dict[str, tuple[str, ...]] = {mode: parts for p in PRESETS for mode, parts in p.scores}
"""Score mode -> the outputs it combines (bge-m3's modes): the one place the score table is
read (:func:`localembed.m3.hybrid_score` scores by it)."""


def find_preset(*names: str, kind: str = "embedding") -> Preset | None:
    """The first preset of ``kind`` whose pattern occurs in any of ``names`` (ids or paths).

    Example:
        >>> find_preset("BAAI/bge-small-en-v1.5").query_instruction
        'Represent this sentence for searching relevant passages: '
        >>> find_preset("my-own-model") is None
        True
        >>> find_preset("BAAI/bge-reranker-v2-m3", kind="reranker").max_length
        512

    """
    for preset in PRESETS:
        if preset.kind != kind:
            continue
        if any(re.search(preset.pattern, name, flags=re.IGNORECASE) for name in names if name):
            return preset
    return None
