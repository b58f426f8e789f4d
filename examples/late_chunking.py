"""Late chunking: chunk vectors that remember their document.

A retrieval index stores chunks, not documents. Embedded alone, the chunk "Its more than 3.85
million inhabitants make it the European Union's most populous city" no longer says which city
it is about, so the question "How many people live in Berlin?" may rank it below a chunk that
names Berlin but answers nothing. Late chunking embeds the whole document once and pools each
chunk's own span of token vectors: every token has read the rest of the document, so the chunk
vector knows that "it" is Berlin.

This script splits a few short articles into sentences (the chunks), indexes the chunks both
ways with the same model, asks questions whose answers sit in sentences that do not name their
subject, and prints the rank of the answering chunk (1 = first) and the mean reciprocal rank.

Runs offline on the embedded all-MiniLM-L6-v2::

    python examples/late_chunking.py [--model DIR_OR_HUB_ID]
"""

from __future__ import annotations

import argparse
import re

import numpy as np

from localembed import get_encoder

ARTICLES = {
    "Berlin": (
        "Berlin is the capital and largest city of Germany, both by area and by population. "
        "Its more than 3.85 million inhabitants make it the European Union's most populous "
        "city, as measured by population within city limits. The city is also one of the "
        "states of Germany, and is the third smallest state in the country in terms of area."
    ),
    "Paris": (
        "Paris is the capital and most populous city of France. With an estimated population "
        "of 2.1 million residents, it is the centre of the Ile-de-France region. The city is a "
        "major railway, highway and air-transport hub served by two international airports."
    ),
    "Amazon": (
        "The Amazon is a river in South America. It is the largest river in the world by "
        "discharge volume of water, about 209,000 cubic metres per second. Its basin covers "
        "seven million square kilometres, most of it rainforest."
    ),
    "Marie Curie": (
        "Marie Curie was a physicist and chemist who conducted pioneering research on "
        "radioactivity. She was the first woman to win a Nobel Prize and the only person to win "
        "one in two scientific fields. She was born in Warsaw in 1867."
    ),
    "Python": (
        "Python is a high-level, general-purpose programming language. Its design philosophy "
        "emphasizes code readability with the use of significant indentation. It was created "
        "by Guido van Rossum and first released in 1991."
    ),
}

# (question, article, the sentence that answers it: its index in the article)
QUESTIONS = [
    ("How many people live in Berlin?", "Berlin", 1),
    ("Is Berlin also a German state?", "Berlin", 2),
    ("How many people live in Paris?", "Paris", 1),
    ("How much water does the Amazon discharge?", "Amazon", 1),
    ("How large is the Amazon basin?", "Amazon", 2),
    ("Which prizes did Marie Curie win?", "Marie Curie", 1),
    ("Where was Marie Curie born?", "Marie Curie", 2),
    ("Who created Python and when?", "Python", 2),
    ("Why does Python use indentation?", "Python", 1),
]


def sentences(text: str) -> list[str]:
    """Split after each full stop that ends a sentence (the chunks of this example)."""
    return re.split(r"(?<=[a-z0-9]\.)\s+(?=[A-Z])", text)


def rank_of(scores: np.ndarray, answer: int) -> int:
    """1-based rank of row ``answer`` among ``scores`` (highest first)."""
    return int((scores > scores[answer]).sum()) + 1


def main() -> None:
    """Index the chunks both ways and print where each question's answer ranks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model directory or hub id")
    args = parser.parse_args()
    encoder = get_encoder(model=args.model)

    chunks: list[str] = []
    naive: list[np.ndarray] = []
    late: list[np.ndarray] = []
    first_chunk: dict[str, int] = {}
    for title, text in ARTICLES.items():
        pieces = sentences(text)
        first_chunk[title] = len(chunks)
        chunks.extend(pieces)
        naive.append(encoder.encode_documents(pieces))  # each chunk alone
        late.append(encoder.encode_late_chunks(text, pieces))  # pooled from one pass
    naive_index, late_index = np.vstack(naive), np.vstack(late)
    queries = encoder.encode_queries([question for question, _, _ in QUESTIONS])

    print(f"{len(chunks)} chunks from {len(ARTICLES)} articles; rank of the answering chunk:")
    print(f"{'question':<44} {'alone':>5} {'late':>5}")
    reciprocal = {"alone": [], "late": []}
    for (question, title, sentence), query in zip(QUESTIONS, queries, strict=True):
        answer = first_chunk[title] + sentence
        alone = rank_of(naive_index @ query, answer)
        pooled = rank_of(late_index @ query, answer)
        reciprocal["alone"].append(1 / alone)
        reciprocal["late"].append(1 / pooled)
        print(f"{question:<44} {alone:>5} {pooled:>5}")
    print(
        f"mean reciprocal rank: chunks embedded alone {np.mean(reciprocal['alone']):.3f}, "
        f"late chunking {np.mean(reciprocal['late']):.3f}"
    )


if __name__ == "__main__":
    main()
