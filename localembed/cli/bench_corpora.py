"""The benchmark's corpora: the STS Benchmark pairs, generated sentences, mixed documents."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from localembed.errors import InputError

__all__ = ["STS_SOURCE", "builtin_sentences", "mixed_documents", "read_pairs", "sts_file"]

STS_SOURCE = (
    "the STS Benchmark's tab-separated files as released in stsbenchmark.tar.gz "
    "(the same pairs are the sentence-transformers/stsb dataset on the Hugging Face hub, "
    "in another layout)"
)
"""Where the STS Benchmark folder comes from (named in the error for a bad ``--data``)."""


def sts_file(data: Path, split: str = "test") -> Path:
    """The STS Benchmark file of ``split`` in the folder ``data``, checked to hold pairs.

    Raises:
        InputError: the folder or the file is missing, or holds no scored pairs; the message
            says what the folder must contain and where the data set comes from.
    """
    path = data / f"sts-{split}.csv"
    problem = None
    if not data.is_dir():
        problem = "is not a folder"
    elif not path.is_file():
        problem = f"has no {path.name}"
    else:
        try:
            if not read_pairs(path)[0]:
                problem = f"has a {path.name} with no scored sentence pairs"
        except (OSError, ValueError) as error:
            problem = f"has an unreadable {path.name} ({error})"
    if problem is not None:
        msg = (
            f"--data {data} {problem}: it must contain sts-{split}.csv (lines of genre, file, "
            f"year, id, score, sentence 1, sentence 2, tab-separated): {STS_SOURCE}"
        )
        raise InputError(msg)
    return path


def read_pairs(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Sentence pairs and gold scores of one STS Benchmark split (tab-separated, unquoted).

    Lines with fewer than seven fields are skipped.
    """
    first, second, scores = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) >= 7:
            scores.append(float(fields[4]))
            first.append(fields[5])
            second.append(fields[6])
    return first, second, np.asarray(scores)


_SUBJECTS = (
    "A man",
    "A woman",
    "The child",
    "A brown dog",
    "A small cat",
    "The old farmer",
    "A student",
    "The orchestra",
    "A group of tourists",
    "The engineer",
    "My neighbour",
    "A red car",
)
_VERBS = (
    "is playing",
    "is reading",
    "walks past",
    "is looking at",
    "cleans",
    "is painting",
    "carries",
    "is cooking",
    "repairs",
    "photographs",
    "sells",
    "is waiting near",
)
_OBJECTS = (
    "a guitar",
    "the newspaper",
    "a wooden bridge",
    "an old map",
    "the kitchen floor",
    "a large canvas",
    "a basket of apples",
    "some noodles",
    "a bicycle",
    "the sunset",
    "fresh bread",
    "the train station",
)
_PLACES = (
    "in the park.",
    "on a rainy morning.",
    "near the river.",
    "at the market.",
    "in a quiet room.",
    "under the bridge.",
    "before dinner.",
    "in the city centre.",
    "on the beach.",
    "after school.",
    "in the garden.",
    "at night.",
)


def builtin_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct generated English sentences of 6-14 words (deterministic).

    Example:
        >>> builtin_sentences(2)[1]
        'A brown dog is playing a guitar in the park.'

    """
    rng = np.random.default_rng(seed)
    limit = len(_SUBJECTS) * len(_VERBS) * len(_OBJECTS) * len(_PLACES)
    if count > limit:
        msg = f"the built-in corpus has {limit} sentences; asked for {count} (use --data)"
        raise InputError(msg)
    seen: dict[str, None] = {}
    while len(seen) < count:
        parts = (_SUBJECTS, _VERBS, _OBJECTS, _PLACES)
        seen.setdefault(" ".join(p[int(rng.integers(len(p)))] for p in parts), None)
    return list(seen)


def bench_sentences(data: Path | None, count: int = 1000) -> list[str]:
    """The benchmarks' sentences: STS Benchmark's, or ``count`` generated ones.

    ``data``: the STS Benchmark folder (its test split, each distinct sentence once); None:
    :func:`builtin_sentences`.
    """
    if data is not None:
        first, second, _ = read_pairs(sts_file(data))
        return list(dict.fromkeys(first + second))
    return builtin_sentences(count)


def mixed_documents(sentences: list[str], count: int, seed: int = 0) -> list[str]:
    """Documents of 16-512 tokens (log-normal lengths, median ~90 tokens, long tail)."""
    rng = np.random.default_rng(seed)
    words_per_token = 0.75
    documents = []
    for _ in range(count):
        target = int(np.clip(rng.lognormal(mean=np.log(90), sigma=0.8), 16, 512))
        words: list[str] = []
        while len(words) < target * words_per_token:
            words.extend(sentences[int(rng.integers(len(sentences)))].split())
        documents.append(" ".join(words[: int(target * words_per_token)]))
    return documents
