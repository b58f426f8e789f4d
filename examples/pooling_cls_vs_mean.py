"""Pooling matters: the same model scored with mean pooling and with CLS pooling.

all-MiniLM-L6-v2 was trained with mean pooling (the average of its token vectors). Asking for
the [CLS] token's vector instead still gives a vector, but a worse one: this script embeds a
dozen sentence pairs with both poolings, prints each pair's cosine similarity next to a
human-style similarity label (0 = unrelated, 5 = same meaning), and the Spearman rank
correlation of each pooling with the labels. Mean pooling ranks the pairs much closer to the
labels; CLS pooling squeezes every pair, even unrelated ones, into high similarities.

The default ``pooling="auto"`` reads the pooling from the model's sentence-transformers config,
so you only need ``pooling=...`` for models that do not ship one (see the README's presets).

Runs offline on the embedded all-MiniLM-L6-v2::

    python examples/pooling_cls_vs_mean.py
"""

from __future__ import annotations

import numpy as np

from localembed import get_encoder

# (sentence A, sentence B, similarity label from 0 = unrelated to 5 = same meaning)
PAIRS = [
    ("A man is playing a guitar.", "A person plays an acoustic guitar.", 4.6),
    ("How do I reset my password?", "I forgot my password, how can I change it?", 4.4),
    ("The kids are playing football in the park.", "Children play soccer on the grass.", 4.2),
    (
        "The train to Berlin was delayed by an hour.",
        "Our train arrived in Berlin sixty minutes late.",
        4.0,
    ),
    ("A woman is slicing onions.", "A woman is cutting vegetables.", 3.6),
    ("The stock market fell sharply today.", "Shares dropped after the bank raised rates.", 3.0),
    ("He bought a new laptop for work.", "The laptop battery lasts ten hours.", 2.4),
    ("She is reading a novel on the beach.", "She is swimming in the sea.", 2.2),
    ("The cat is sleeping on the windowsill.", "A dog is barking at the mailman.", 1.2),
    ("A man is riding a horse on the beach.", "A man is playing the piano.", 0.6),
    ("Heavy rain is expected this weekend.", "The recipe needs two cups of flour.", 0.2),
    ("The museum opens at nine in the morning.", "Quantum computers use qubits.", 0.0),
]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, tied values sharing their average rank (as Spearman's rho needs)."""
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: the Pearson correlation of the ranks."""
    return float(np.corrcoef(average_ranks(a), average_ranks(b))[0, 1])


def main() -> None:
    first = [a for a, _, _ in PAIRS]
    second = [b for _, b, _ in PAIRS]
    labels = np.array([label for _, _, label in PAIRS])

    cosines = {}
    for pooling in ("mean", "cls"):
        # Two encoders over the same weights; only the pooling step differs. Vectors are
        # L2-normalized, so the row-wise dot product is the cosine similarity.
        encoder = get_encoder(pooling=pooling)
        cosines[pooling] = np.sum(encoder.encode(first) * encoder.encode(second), axis=1)

    print("model: all-MiniLM-L6-v2 (trained with mean pooling)")
    print("label   mean    cls  pair")
    for (a, b, label), mean, cls in zip(PAIRS, cosines["mean"], cosines["cls"], strict=True):
        print(f"{label:5.1f}  {mean:5.3f}  {cls:5.3f}  {a} | {b}")

    unrelated = labels <= 1.0
    for pooling, values in cosines.items():
        low, high = values[unrelated].min(), values[unrelated].max()
        print(f"{pooling:>4} pooling: unrelated pairs (label <= 1) score {low:.3f} to {high:.3f}")

    rho = {pooling: spearman(values, labels) for pooling, values in cosines.items()}
    print(f"Spearman correlation with the labels: mean {rho['mean']:.3f}  cls {rho['cls']:.3f}")
    winner = max(rho, key=rho.__getitem__)
    print(f"best pooling for this model: {winner}")


if __name__ == "__main__":
    main()
