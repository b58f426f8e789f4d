"""Token-level similarity of two sentences, drawn as a heatmap.

``encode(texts, output="token_embeddings")`` returns, per text, its tokens and their
contextual vectors (the model's last hidden states, before pooling). This script embeds two
sentences that say the same thing in different words, computes the cosine similarity between
every token of the first and every token of the second, saves the matrix as a heatmap PNG
with ``localembed.plots.similarity_heatmap``, and prints the most similar token pairs and
each first-sentence token's best match: the model aligns "cat" with "kitten" and "sofa" with
"couch" although they share no letters.

Runs offline on the embedded all-MiniLM-L6-v2 (the plot needs matplotlib: ``pip install
"localembed[cli]"``)::

    python examples/token_heatmap.py                          # writes token_heatmap.png
    python examples/token_heatmap.py --output heatmap.png "A sentence." "Another sentence."
"""

from __future__ import annotations

import argparse

import numpy as np

from localembed import TokenEmbeddings, get_encoder
from localembed.plots import similarity_heatmap

DEFAULT_SENTENCES = ("The cat sleeps on the sofa", "A kitten naps on the couch")
SPECIAL_TOKENS = {"[CLS]", "[SEP]"}
TOP_PAIRS = 5


def content_tokens(result: TokenEmbeddings) -> tuple[list[str], np.ndarray]:
    """Drop [CLS] and [SEP] and L2-normalize each token vector (dot product = cosine)."""
    keep = [i for i, token in enumerate(result.tokens) if token not in SPECIAL_TOKENS]
    vectors = result.vectors[keep]
    return [result.tokens[i] for i in keep], vectors / np.linalg.norm(vectors, axis=1)[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sentences", nargs="*", help="two sentences (default: a cat and a kitten)")
    parser.add_argument("--output", default="token_heatmap.png", help="the PNG to write")
    args = parser.parse_args()
    if len(args.sentences) not in (0, 2):
        parser.error("give two sentences, or none for the default pair")
    first, second = args.sentences or DEFAULT_SENTENCES

    result_a, result_b = get_encoder().encode([first, second], output="token_embeddings")
    tokens_a, vectors_a = content_tokens(result_a)
    tokens_b, vectors_b = content_tokens(result_b)
    similarity = vectors_a @ vectors_b.T  # (tokens of first, tokens of second)

    path = similarity_heatmap(
        similarity,
        tokens_a,
        tokens_b,
        args.output,
        title="token cosine similarity (all-MiniLM-L6-v2)",
    )
    print(f"A: {first}\nB: {second}")
    print(f"heatmap ({len(tokens_a)} x {len(tokens_b)} tokens) written to {path}")

    print("most similar token pairs:")
    order = np.argsort(-similarity, axis=None, kind="stable")[:TOP_PAIRS]
    for i, j in zip(*np.unravel_index(order, similarity.shape), strict=True):
        print(f"  {similarity[i, j]:.3f}  {tokens_a[i]} ~ {tokens_b[j]}")

    print("best match in B for each token of A:")
    for i, token in enumerate(tokens_a):
        j = int(similarity[i].argmax())
        print(f"  {token:>10} -> {tokens_b[j]:<10} {similarity[i, j]:.3f}")


if __name__ == "__main__":
    main()
