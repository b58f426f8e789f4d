"""bge-m3 hybrid retrieval: dense, sparse (lexical) and ColBERT scores, and their mix.

BAAI/bge-m3 gives three representations of a text from one forward pass: a dense vector, lexical
weights per token (sparse) and one vector per token (ColBERT, scored by MaxSim).
``encoder.encode_m3(texts, dense=True, sparse=True, colbert=True)`` computes all three and
``localembed.m3.hybrid_score`` scores queries against documents in every mode, plus the
weighted mix ``(w_dense * dense + w_sparse * sparse + w_colbert * colbert) / (w_dense +
w_sparse + w_colbert)`` that the bge-m3 authors recommend for reranking. For each query this
script prints the document ranking under each mode and the hybrid one, how the top document's
hybrid score is made up, and the top document's heaviest lexical tokens (those shared with the
query are what the sparse score counts).

Needs bge-m3 weights (2.3 GB; fetched from the Hugging Face hub on the first run when online,
or read from the local hub cache; ``HF_HUB_OFFLINE=1`` forbids the download)::

    python examples/bge_m3_hybrid.py                       # BAAI/bge-m3
    python examples/bge_m3_hybrid.py --model /path/to/bge-m3

Any local directory of a bge-m3-shaped model works (XLM-RoBERTa plus ``sparse_linear.pt`` and
``colbert_linear.pt``); the tests run this script on a tiny model with random weights, whose
scores are meaningless.
"""

from __future__ import annotations

import argparse

import numpy as np

from localembed import get_encoder
from localembed.m3 import hybrid_score, lexical_tokens

DOCUMENTS = [
    "The Eiffel Tower in Paris was completed in 1889.",
    "Der Eiffelturm ist das bekannteste Wahrzeichen von Paris.",  # German
    "La tour Eiffel mesure 330 mètres de haut.",  # French
    "BM25 ranks documents by how often the query words occur in them.",
    "Dense retrievers embed queries and passages into one vector space.",
]
QUERIES = [
    "How tall is the Eiffel Tower?",
    "What is the difference between lexical and dense retrieval?",
]
WEIGHTS = (0.4, 0.2, 0.4)
"""(dense, sparse, colbert): the weights of the hybrid score."""
MODES = ("dense", "sparse", "colbert")
HYBRID = "colbert+sparse+dense"
SHOWN_TOKENS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="BAAI/bge-m3", help="hub id or local directory")
    args = parser.parse_args()

    encoder = get_encoder(model=args.model)
    # All three outputs from one forward pass per batch.
    documents = encoder.encode_m3(DOCUMENTS, dense=True, sparse=True, colbert=True)
    queries = encoder.encode_m3(QUERIES, dense=True, sparse=True, colbert=True)
    assert documents.sparse is not None and queries.sparse is not None  # requested above
    scores = hybrid_score(queries, documents, weights=WEIGHTS)  # {mode: (queries, documents)}

    print(f"model: {encoder.source.name} (dense dimension {encoder.dimension})")
    for j, document in enumerate(DOCUMENTS):
        print(f"  d{j}: {document}")
    for i, query in enumerate(QUERIES):
        print(f"\nquery: {query}")
        for mode in (*MODES, HYBRID):
            row = scores[mode][i]
            ranking = np.argsort(-row, kind="stable")
            ranked = "  ".join(f"d{j} {row[j]:.3f}" for j in ranking)
            print(f"  {'hybrid' if mode == HYBRID else mode:>7}: {ranked}")

        top = int(np.argmax(scores[HYBRID][i]))
        parts = " + ".join(
            f"{weight} * {mode} {scores[mode][i, top]:.3f}"
            for weight, mode in zip(WEIGHTS, MODES, strict=True)
        )
        print(f"  hybrid d{top} = ({parts}) / {sum(WEIGHTS):.1f} = {scores[HYBRID][i, top]:.3f}")

        # Lexical weights by token text: the sparse score sums weight products over the
        # tokens the query and the document share.
        weights = lexical_tokens(documents.sparse[top], encoder.tokenizer)
        query_tokens = lexical_tokens(queries.sparse[i], encoder.tokenizer)
        heaviest = sorted(weights.items(), key=lambda item: (-item[1], item[0]))[:SHOWN_TOKENS]
        print(f"  d{top} lexical tokens: " + ", ".join(f"{t!r} {w:.3f}" for t, w in heaviest))
        shared = sorted(set(weights) & set(query_tokens))
        print(f"  shared with the query: {', '.join(map(repr, shared)) or 'none'}")


if __name__ == "__main__":
    main()
