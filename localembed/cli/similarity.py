"""``localembed similarity``: the cosine similarity matrix of texts (and a heatmap)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from localembed.cli.common import (
    UsageError,
    add_command,
    add_model_options,
    config_from_args,
    instruction_for,
    short_label,
)

if TYPE_CHECKING:
    import numpy as np

    from localembed.cli.common import Commands

EXAMPLES = """\
examples:
  localembed similarity "A cat sits on the mat." "A kitten rests on a rug." "Stocks fell."
  localembed similarity --file sentences.txt --plot heatmap.png
  localembed similarity "how do I bake bread?" "bread recipe" --kind query --json"""


def register(commands: Commands) -> None:
    """Add ``similarity`` to ``commands``."""
    parser = add_command(
        commands, "similarity", "Print the cosine similarity matrix of texts.", EXAMPLES, run
    )
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to compare")
    parser.add_argument(
        "--file", default=None, help="also compare these texts, one a line ('-': standard input)"
    )
    parser.add_argument(
        "--plot", default=None, metavar="IMAGE", help="draw an annotated heatmap (.png, .svg, ...)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON (full precision)")
    add_model_options(parser)


def cosine_matrix(vectors: np.ndarray, others: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity of every row of ``vectors`` with every row of ``others`` (or itself)."""
    import numpy as np

    def unit(rows: np.ndarray) -> np.ndarray:
        rows = rows.astype(np.float64)
        norms: np.ndarray = np.linalg.norm(rows, axis=1, keepdims=True)
        return np.asarray(rows / np.maximum(norms, 1e-12))

    a = unit(vectors)
    b = a if others is None else unit(others)
    return np.asarray(a @ b.T)


def format_matrix(matrix: np.ndarray, labels: list[str]) -> str:
    """The matrix as aligned text: a labelled row per text, numbered columns, 3 decimals."""
    width = max(len(label) for label in labels)
    cells = [f"[{j + 1}]" for j in range(len(labels))]
    size = max(6, *(len(cell) for cell in cells))
    lines = [" " * width + "".join(f"  {cell:>{size}}" for cell in cells)]
    for label, row in zip(labels, matrix, strict=True):
        lines.append(f"{label:<{width}}" + "".join(f"  {value:>{size}.3f}" for value in row))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``localembed similarity``."""
    from localembed.cli.corpus import open_source

    texts = list(args.texts)
    if args.file is not None:
        texts += [row.text for row in open_source(args.file, "txt").rows]
    if not texts:
        msg = "give texts as arguments or with --file"
        raise UsageError(msg)
    from localembed.encoder import get_encoder

    encoder = get_encoder(config_from_args(args))
    vectors = encoder.encode(texts, instruction_for(encoder, args.kind))
    matrix = cosine_matrix(vectors)
    labels = [f"[{i + 1}] {short_label(text)}" for i, text in enumerate(texts)]
    if args.json:
        report = {"model": encoder.source.name, "texts": texts, "matrix": matrix.tolist()}
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(format_matrix(matrix, labels))
    if args.plot is not None:
        from localembed.plots import similarity_heatmap

        similarity_heatmap(
            matrix,
            labels,
            labels,
            args.plot,
            title=f"cosine similarity ({encoder.source.name})",
        )
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
