"""'Similar hotels' recommendations: TF-IDF word overlap vs sentence embeddings.

A small hotel catalogue, one description per hotel. For a given hotel the script recommends
the three most similar others twice: with TF-IDF (scikit-learn's ``TfidfVectorizer``, cosine
of word-weight vectors) and with embeddings from the local all-MiniLM-L6-v2 (cosine of
sentence vectors), printed side by side. Some descriptions say the same thing in different
words ("beachfront resort" / "hotel right on the sand"; "business centre" / "conference
facilities"): TF-IDF sees no shared word and scores them 0, embeddings rank them first.

Runs offline on the embedded all-MiniLM-L6-v2 (needs scikit-learn: ``pip install
scikit-learn``)::

    python examples/similar_hotels.py                      # the two showcase hotels
    python examples/similar_hotels.py --hotel "Alpine Lodge"
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from localembed import get_encoder

CATALOGUE = {
    "Coral Bay Resort": "A beachfront resort with private cabanas, a swim-up bar and snorkelling "
    "trips to the reef. Every room has a balcony facing the water.",
    "Sandpiper Inn": "A small family-run hotel right on the sand, a few steps from the ocean "
    "waves. Guests fall asleep to the sound of the surf and wake up to sunrise over the sea.",
    "Alpine Lodge": "A mountain resort with ski-in ski-out access, a heated outdoor pool and "
    "private balcony rooms facing the slopes.",
    "Grand Central Hotel": "A modern hotel next to the central station with meeting rooms, "
    "fast wifi and a 24-hour business centre.",
    "The Executive Suites": "Corporate accommodation in the financial district: conference "
    "facilities, high-speed internet, a desk in every suite and early breakfast for commuters.",
    "Old Town Boutique": "A charming boutique hotel in a restored 17th-century townhouse on a "
    "cobbled street in the historic old town.",
    "Heritage Manor": "Stay in a centuries-old mansion full of antique furniture, a short walk "
    "from the medieval cathedral and the castle walls.",
    "Backpackers Downtown": "Cheap dorm beds and private rooms for backpackers, a shared "
    "kitchen and a lively bar downtown.",
    "Pinewood Cabins": "Wooden cabins deep in the pine forest, with hiking trails, a lake for "
    "kayaking and no wifi.",
    "Skyport Hotel": "Soundproofed rooms five minutes from the airport terminal, with a free "
    "shuttle bus for early flights.",
    "Vineyard Estate": "A country house among the vineyards with wine tastings, a "
    "farm-to-table restaurant and views of rolling hills.",
    "Splash Family Resort": "A kids' club, water slides, a mini golf course and connecting "
    "rooms for families.",
    "Serenity Spa Hotel": "Massages, thermal baths, yoga classes and a sauna for guests who "
    "want to relax and recharge.",
    "Harbour Lights Hotel": "Rooms overlooking the marina and fishing boats, with a seafood "
    "restaurant on the quay.",
}
SHOWCASE = ["Sandpiper Inn", "Grand Central Hotel"]
TOP_K = 3


def top_matches(similarity: np.ndarray, index: int, k: int) -> list[int]:
    """The k most similar items to item ``index``, itself excluded (ties: catalogue order)."""
    order = np.argsort(-similarity[index], kind="stable")
    return [int(j) for j in order if j != index][:k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hotel", choices=list(CATALOGUE), action="append", help="repeatable")
    args = parser.parse_args()

    names = list(CATALOGUE)
    descriptions = list(CATALOGUE.values())

    # TF-IDF: rows are L2-normalized word-weight vectors, so X @ X.T is their cosine.
    vectorizer = TfidfVectorizer(stop_words="english")
    tfidf = vectorizer.fit_transform(descriptions)
    tfidf_similarity = (tfidf @ tfidf.T).toarray()
    words = [set(vectorizer.build_analyzer()(text)) for text in descriptions]

    # Embeddings: normalized sentence vectors, so the dot product is the cosine.
    vectors = get_encoder().encode(descriptions)
    embedding_similarity = vectors @ vectors.T

    for name in args.hotel or SHOWCASE:
        index = names.index(name)
        print(f"{name}: {CATALOGUE[name]}")
        print(f"  {'TF-IDF (shared words)':<28} {'score':>6}   {'embeddings (meaning)':<28} cosine")
        by_words = top_matches(tfidf_similarity, index, TOP_K)
        by_meaning = top_matches(embedding_similarity, index, TOP_K)
        for rank, (w, m) in enumerate(zip(by_words, by_meaning, strict=True), start=1):
            print(
                f"{rank} {names[w]:<28} {tfidf_similarity[index, w]:6.3f}   "
                f"{names[m]:<28} {embedding_similarity[index, m]:6.3f}"
            )
        # The embeddings' best match that TF-IDF does not recommend, and why.
        for match in by_meaning:
            if match not in by_words:
                shared = sorted(words[index] & words[match])
                print(
                    f"  embeddings recommend {names[match]} (cosine "
                    f"{embedding_similarity[index, match]:.3f}); TF-IDF scores it "
                    f"{tfidf_similarity[index, match]:.3f}, shared words: "
                    f"{', '.join(shared) or 'none'}"
                )
                break
        print()


if __name__ == "__main__":
    main()
