"""Contextual document embeddings (CDE) next to a basic model, on a FiQA-like finance sample.

As in the CDE notebook: a basic embedding model embeds questions and answers on its own; a CDE
model first embeds a sample of the corpus ("dataset embeddings", the context), then embeds
every question (``search_query: ``) and answer (``search_document: ``) given that context. The
script prints each model's top answer per question and draws the two question x answer cosine
similarity heatmaps side by side (the right answer is on the diagonal)::

    python examples/cde.py                                  # the tiny test CDE model
    python examples/cde.py --model jxm/cde-small-v2         # real weights (1.1 GB, remote code)
    python examples/cde.py --output docs/images/cde_heatmaps.png

The basic model is the embedded default (all-MiniLM-L6-v2). Without ``--model`` the CDE side
is a tiny CDE model with random weights built by ``tests/cde_factory.py`` (run from a clone of
the repository): it runs every step, but its similarities mean nothing, and the picture says
so. ``--model`` loads a real CDE model with ``trust_remote_code=True`` (its repository's own
Python code runs: use only one you trust). The context is built once, saved
(``--context-file``, else a temporary file) and loaded back, as an index would keep it. This
sample has fewer documents than a released model's context (512): they are repeated
(``oversample=True``, the model card's advice for small corpora).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from localembed import get_encoder, load_context

ROOT = Path(__file__).resolve().parents[1]

QA = [
    (
        "Is it better to pay off my mortgage early or invest the extra money?",
        "Paying the mortgage early gives a guaranteed return equal to its interest rate; "
        "investing may earn more on average but with risk.",
    ),
    (
        "How are dividends from stocks taxed?",
        "Qualified dividends are taxed at the lower long-term capital gains rates; ordinary "
        "dividends are taxed as income.",
    ),
    (
        "What is the difference between a Roth IRA and a traditional IRA?",
        "A traditional IRA gives a tax deduction now and taxes withdrawals; a Roth IRA is "
        "funded after tax and qualified withdrawals are tax-free.",
    ),
    (
        "Why do bond prices fall when interest rates rise?",
        "New bonds pay the higher rate, so existing bonds with lower coupons must sell at a "
        "discount to offer the same yield.",
    ),
    (
        "Should I keep an emergency fund in cash?",
        "Keep three to six months of expenses in a savings account you can reach at once, not "
        "in stocks that may be down when you need the money.",
    ),
    (
        "What does an index fund actually hold?",
        "An index fund buys the securities of an index, such as the S&P 500, in the index's "
        "weights, and charges a low fee.",
    ),
    (
        "How does a credit score affect the rate on a car loan?",
        "Lenders price risk: a higher credit score gets a lower annual percentage rate, a low "
        "score a higher one or a refusal.",
    ),
    (
        "Can my employer match on a 401(k) be lost if I leave the job?",
        "Matched contributions vest over a schedule; leaving before they vest forfeits the "
        "unvested part, your own contributions are always yours.",
    ),
]
MORE_DOCUMENTS = [
    "Dollar-cost averaging invests a fixed amount at regular intervals.",
    "A stock split raises the share count without changing the company's value.",
    "Inflation reduces what a dollar of savings can buy.",
    "Capital losses can offset capital gains on a tax return.",
    "An exchange-traded fund trades on an exchange during the day like a stock.",
    "A certificate of deposit pays a fixed rate for a fixed term.",
    "Short selling profits when a borrowed stock's price falls.",
    "A home equity line of credit borrows against the value of a house.",
    "Expense ratios are the yearly fee a fund charges as a share of assets.",
    "Rebalancing sells what grew and buys what lagged to restore target weights.",
    "A health savings account is funded before tax and spent tax-free on medical costs.",
    "Municipal bond interest is often exempt from federal income tax.",
]


def similarities(encoder, questions: list[str], answers: list[str]) -> np.ndarray:
    """Cosine similarity of every question (rows) with every answer (columns)."""
    queries = encoder.encode_queries(questions)
    documents = encoder.encode_documents(answers)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    documents /= np.linalg.norm(documents, axis=1, keepdims=True)
    return queries @ documents.T


def tiny_cde_model(folder: Path) -> str:
    """Build the tiny CDE test model (random weights) in ``folder``."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests.cde_factory import build_tiny_cde
    except ImportError as error:
        msg = (
            "the tiny CDE model is built by tests/cde_factory.py: run from a clone, or pass --model"
        )
        raise SystemExit(msg) from error
    return str(build_tiny_cde(folder / "tiny-cde"))


def draw(
    panels: list[tuple[str, np.ndarray]], labels: tuple[list[str], list[str]], path: Path
) -> None:
    """The heatmaps side by side, each on its own colour scale, saved to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = labels
    figure = Figure(figsize=(6.2 * len(panels), 5.0), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (title, matrix) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        image = axes.imshow(matrix, cmap="viridis", aspect="equal")
        axes.set_xticks(range(len(cols)), labels=cols, rotation=45, ha="right", fontsize=8)
        axes.set_yticks(
            range(len(rows)), labels=rows if index == 0 else [""] * len(rows), fontsize=8
        )
        middle = sum(image.get_clim()) / 2
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                color = "black" if matrix[i, j] > middle else "white"
                axes.text(
                    j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color=color, fontsize=7
                )
        axes.set_title(title, fontsize=10)
        figure.colorbar(image, ax=axes, shrink=0.7, label="cosine similarity")
    figure.suptitle("Questions (rows) x answers (columns): the right answer is on the diagonal")
    figure.savefig(path, dpi=110)


def compare(output: Path, model: str | None = None, context_file: Path | None = None) -> None:
    """Embed the sample with both models, print the top answers, draw ``output``.

    Args:
        output: the PNG to write.
        model: a CDE model (hub id or directory); None: the tiny test model.
        context_file: where to keep the context; None: a temporary file.
    """
    questions = [question for question, _ in QA]
    answers = [answer for _, answer in QA]
    corpus = answers + MORE_DOCUMENTS
    with tempfile.TemporaryDirectory() as folder:
        name = model or tiny_cde_model(Path(folder))
        cde = get_encoder(model=name, trust_remote_code=True)
        size = cde.context_size or 0  # documents in a full context (512 for the released models)
        # The corpus pass, once: saved with the index, loaded back for every later call.
        saved = context_file or Path(folder) / "corpus.context.safetensors"
        context = cde.build_context(corpus, seed=0, oversample=len(corpus) < size)
        context.save(saved)
        cde = get_encoder(model=name, trust_remote_code=True, context=load_context(saved))
        shown = saved if context_file else "a temporary file"
        print(f"context: {context.size} dataset embeddings of {len(corpus)} documents -> {shown}")

        basic = get_encoder()
        tiny = "\nTINY TEST MODEL, random weights: not real CDE results"
        panels = [
            ("basic: all-MiniLM-L6-v2 (embedded default)", similarities(basic, questions, answers)),
            (
                f"CDE: {model}" if model else f"CDE: {Path(name).name}{tiny}",
                similarities(cde, questions, answers),
            ),
        ]
    for title, matrix in panels:
        top = matrix.argmax(axis=1)
        correct = int((top == np.arange(len(questions))).sum())
        print(
            f"{title.splitlines()[0]}: top answer right for {correct} of {len(questions)} questions"
        )
    short = [q if len(q) <= 40 else q[:38] + "…" for q in questions]
    rows = [f"Q{i + 1}: {q}" for i, q in enumerate(short)]
    labels = (rows, [f"A{i + 1}" for i in range(len(answers))])
    output.parent.mkdir(parents=True, exist_ok=True)
    draw(panels, labels, output)
    print(f"wrote {output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="a CDE model (hub id or directory); default: the tiny test model"
    )
    parser.add_argument("--output", type=Path, default=Path("cde_heatmaps.png"))
    parser.add_argument(
        "--context-file", type=Path, help="keep the context here (default: a temporary file)"
    )
    args = parser.parse_args()
    compare(args.output, args.model, args.context_file)


if __name__ == "__main__":
    main()
