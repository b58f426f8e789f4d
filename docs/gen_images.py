"""Draw the pictures on the documentation pages (``make docs`` runs it when it changes).

Every picture is computed here from the embedded all-MiniLM-L6-v2, offline, so the pages show
what the library gives today, not a pasted screenshot::

    python docs/gen_images.py --out docs/images     # or: make docs-images

- ``token_heatmap.png``: the cosine of every token pair of two sentences
  (``encode(..., output="token_embeddings")``), as ``examples/token_heatmap.py`` computes it.
- ``similarity_heatmap.png``: the sentence similarity matrix, as ``localembed similarity --plot``.
- ``tsne.png``: a t-SNE map (scikit-learn) of the sentences of three examples, coloured by
  what they are about.
- ``cde_heatmaps.png``: ``examples/cde.py``'s question x answer similarities, the embedded
  model next to the tiny CDE test model (random weights, said on the picture).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(ROOT))

from localembed import get_encoder  # noqa: E402
from localembed.plots import similarity_heatmap  # noqa: E402

SENTENCES = [
    "A cat sits on the mat.",
    "A kitten rests on a rug.",
    "Dogs love to chase a ball.",
    "Stock markets fell sharply today.",
    "Shares dropped after the bank raised rates.",
    "The bakery opens at seven.",
    "Fresh bread is sold every morning.",
    "Python was created by Guido van Rossum.",
]


def example(name: str) -> ModuleType:
    """Import ``examples/NAME.py`` (its ``main`` does not run)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def token_heatmap(out: Path) -> None:
    """Token-by-token cosine similarity of two sentences that share no content word."""
    heatmap = example("token_heatmap")
    first, second = (
        heatmap.content_tokens(result)
        for result in get_encoder().encode(
            list(heatmap.DEFAULT_SENTENCES), output="token_embeddings"
        )
    )
    similarity_heatmap(
        first[1] @ second[1].T,
        first[0],
        second[0],
        out / "token_heatmap.png",
        title="Token similarity (all-MiniLM-L6-v2)",
        dpi=110,
    )


def sentence_heatmap(out: Path) -> None:
    """The cosine similarity matrix of eight sentences."""
    vectors = get_encoder().encode_documents(SENTENCES)
    labels = [f"[{i}] {text}" for i, text in enumerate(SENTENCES, start=1)]
    similarity_heatmap(
        vectors @ vectors.T,
        labels,
        [f"[{i}]" for i in range(1, len(SENTENCES) + 1)],
        out / "similarity_heatmap.png",
        title="Sentence similarity (all-MiniLM-L6-v2)",
        dpi=110,
    )


def tsne(out: Path) -> None:
    """t-SNE of the sentences of three examples, one colour per topic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    groups: dict[str, list[str]] = {
        "hotels (similar_hotels.py)": list(example("similar_hotels").CATALOGUE.values()),
        "library help desk (langchain_rag.py)": list(example("langchain_rag").NOTES.values()),
    }
    for title, article in example("late_chunking").ARTICLES.items():
        sentences = [s for s in re.split(r"(?<=\.) ", article) if s]
        groups[f"{title} (late_chunking.py)"] = sentences
    texts = [text for members in groups.values() for text in members]
    vectors = get_encoder().encode_documents(texts)
    points = TSNE(
        n_components=2, perplexity=8, metric="cosine", init="pca", random_state=0
    ).fit_transform(vectors)
    figure, axes = plt.subplots(figsize=(8, 6), dpi=110)
    start = 0
    for label, members in groups.items():
        chunk = points[start : start + len(members)]
        axes.scatter(chunk[:, 0], chunk[:, 1], label=label, s=40)
        start += len(members)
    axes.set_title(f"t-SNE of {len(texts)} example sentences (all-MiniLM-L6-v2, cosine)")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(out / "tsne.png")
    plt.close(figure)


def main() -> None:
    """Draw every picture into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    np.random.seed(0)
    token_heatmap(args.out)
    sentence_heatmap(args.out)
    tsne(args.out)
    example("cde").compare(args.out / "cde_heatmaps.png")
    for name in ("token_heatmap.png", "similarity_heatmap.png", "tsne.png"):
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
