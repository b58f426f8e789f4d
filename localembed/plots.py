"""Plots of embeddings (matplotlib, extra ``cli``): an annotated similarity heatmap.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas, never
through ``pyplot``: no window opens and the caller's matplotlib backend is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from localembed.errors import InputError
from localembed.extras import require

ANNOTATE_LIMIT = 24
"""With ``annotate=None``, values are written in the cells up to this many rows and columns."""


def similarity_heatmap(
    matrix: Any,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
    annotate: bool | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    colorbar_label: str = "cosine similarity",
    dpi: int = 150,
) -> Path:
    """Draw ``matrix`` as a heatmap with labelled rows and columns, saved to ``path``.

    Args:
        matrix: a 2-D array (rows x columns), e.g. cosine similarities.
        row_labels: one label per row (top to bottom).
        col_labels: one label per column (left to right).
        path: the image file; its suffix picks the format (.png, .svg, .pdf, ...).
        title: a title above the plot.
        annotate: write each value (2 decimals) in its cell; None: only up to
            :data:`ANNOTATE_LIMIT` rows and columns.
        vmin: the value of the colour map's low end; None: the smallest value.
        vmax: the value of the colour map's high end; None: the largest value.
        cmap: a matplotlib colour map name.
        colorbar_label: the colour bar's caption.
        dpi: resolution of raster formats.

    Returns:
        The path written.

    Raises:
        MissingExtraError: matplotlib is not installed (the ``cli`` extra).
        ValueError: the labels do not match the matrix shape.
    """
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or values.shape != (len(row_labels), len(col_labels)):
        msg = (
            f"matrix of shape {values.shape} needs {values.shape[0] if values.ndim else 0} row "
            f"labels and {values.shape[-1] if values.ndim else 0} column labels, got "
            f"{len(row_labels)} and {len(col_labels)}"
        )
        raise InputError(msg)
    require("matplotlib", "plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = values.shape
    if annotate is None:
        annotate = max(rows, cols) <= ANNOTATE_LIMIT
    longest = max((len(label) for label in [*row_labels, *col_labels]), default=1)
    cell = 0.55 if annotate else 0.3
    label_room = min(0.09 * longest, 4.0)  # inches for the tick labels
    width = max(4.0, cols * cell + label_room + 1.8)
    height = max(3.0, rows * cell + label_room + 0.8)
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    axes.set_xticks(range(cols), labels=list(col_labels), rotation=45, ha="right")
    axes.set_yticks(range(rows), labels=list(row_labels))
    axes.tick_params(labelsize=8 if max(rows, cols) <= 40 else 6)
    if annotate:
        low, high = image.get_clim()
        middle = (low + high) / 2
        for i in range(rows):
            for j in range(cols):
                # Dark text on the light (high) half of viridis-like maps, white on the dark one.
                color = "black" if values[i, j] > middle else "white"
                text = f"{values[i, j]:.2f}"
                axes.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
    figure.colorbar(image, ax=axes, label=colorbar_label, shrink=0.8)
    if title:
        axes.set_title(title)
    target = Path(path)
    # Write beside the target, then rename: an interrupted save leaves no half-written image.
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        figure.savefig(temporary, dpi=dpi, format=target.suffix.lstrip(".") or "png")
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)
    return target
