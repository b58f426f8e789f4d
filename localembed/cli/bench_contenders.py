"""``localembed bench``'s contenders: the ways to embed that are timed side by side.

sentence-transformers (optional: skipped with a note when not installed) and localembed with
each of :data:`LOCALEMBED_OPTIONS`, plus a distilled static model when one is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from localembed.cli.bench_options import SENTENCE_TRANSFORMERS

__all__ = [
    "LOCALEMBED_OPTIONS",
    "STREAMED",
    "Contender",
    "Encode",
    "build_contenders",
    "static_contender",
]

Encode = Callable[[list[str]], np.ndarray]

LOCALEMBED_OPTIONS: dict[str, dict[str, Any]] = {
    "localembed fp32": {},  # the defaults (backend="torch"; "auto" is "localembed onnx fp32" here)
    "localembed torch fp32": {"backend": "torch"},
    "localembed int8 (torch)": {"backend": "torch", "quantize": "int8"},
    "localembed bf16": {"dtype": "bfloat16"},
    "localembed onnx fp32": {"backend": "onnx"},
    "localembed onnx int8": {"backend": "onnx", "quantize": "int8"},
}
"""localembed contenders: name -> get_encoder options."""

STREAMED = ("localembed fp32", "localembed onnx int8")
"""Contenders whose streaming peak RSS is measured (when they run)."""


@dataclass
class Contender:
    """One way to embed: a batch function and a single-query function, and their timings."""

    name: str
    encode: Encode
    query: Callable[[str], Any]
    seconds: dict[str, list[float]] = field(default_factory=dict)


def build_contenders(model: str | None, names: Sequence[str], notes: list[str]) -> list[Contender]:
    """The named contenders that can run here; the others are skipped with a note."""
    from localembed.encoder import get_encoder

    contenders = []
    path = str(get_encoder(model=model).source.path)
    wanted_st = [name for name in SENTENCE_TRANSFORMERS if name in names]
    sentence_transformer: Any = None
    if wanted_st:
        try:
            from sentence_transformers import SentenceTransformer

            sentence_transformer = SentenceTransformer
        except ImportError:
            notes.append(
                f"{', '.join(wanted_st)} skipped: sentence-transformers is not installed "
                f"(pip install sentence-transformers)"
            )
    if sentence_transformer is not None and "sentence-transformers" in names:
        st = sentence_transformer(path, device="cpu")
        contenders.append(_contender("sentence-transformers", st.encode))
    if sentence_transformer is not None and "sentence-transformers onnx" in names:
        try:
            st_onnx = sentence_transformer(path, device="cpu", backend="onnx")
        except Exception as error:  # reported, not fatal: it needs optimum to export
            notes.append(f"sentence-transformers onnx skipped: {type(error).__name__}: {error}")
        else:
            contenders.append(_contender("sentence-transformers onnx", st_onnx.encode))
    for name, options in LOCALEMBED_OPTIONS.items():
        if name not in names:
            continue
        try:
            encoder = get_encoder(model=model, **options)
        except Exception as error:  # e.g. onnx without its extra: reported, not fatal
            notes.append(f"{name} skipped: {type(error).__name__}: {error}")
            continue
        contenders.append(_contender(name, encoder.encode))
    return contenders


def static_contender(directory: Path | None, notes: list[str]) -> list[Contender]:
    """The contender "localembed static" over a distilled model (``--static DIR``), if given."""
    from localembed.encoder import get_encoder

    if directory is None:
        return []
    try:
        encoder = get_encoder(model=str(directory))
    except Exception as error:  # reported, not fatal
        notes.append(f"localembed static skipped: {type(error).__name__}: {error}")
        return []
    return [_contender("localembed static", encoder.encode)]


def _contender(name: str, encode: Callable[..., Any]) -> Contender:
    # Both libraries take a list of texts (and batch 32 texts per pass by default).
    def batch(texts: list[str]) -> np.ndarray:
        return np.asarray(encode(texts))

    def query(text: str) -> Any:
        return encode([text])

    return Contender(name, batch, query)
