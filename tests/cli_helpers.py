"""Shared helpers of the command-line tests: run the CLI in-process or as a child process.

In-process: :func:`run` (``main(argv)`` with its captured output), input files of every format
(:func:`write_input`), outputs read back (:func:`read_output`), partial files left behind
(:func:`leftovers`), and standard input that a Ctrl-C interrupts (:class:`InterruptedStdin`).
As a child process: ``localembed embed`` started with :func:`start_embed` and waited on until
it has committed some rows (:func:`wait_for_rows`), so a test can send it SIGINT mid-run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from localembed.cli import main

TEXTS = ["first line", "second, with a comma", "", "fourth 🎉 émoji", 'a "quoted" text']
OUTPUTS = ["npy", "jsonl", "parquet"]


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_input(path: Path, texts: list[str], column: str = "text", **extra: list[Any]) -> Path:
    """``texts`` as a file of the format of ``path``'s suffix, in ``column`` (+ other columns)."""
    columns = {column: texts, **extra}
    rows = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    suffix = path.suffix
    if suffix == ".txt":
        path.write_text("".join(text + "\n" for text in texts), encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, list(columns))
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".tsv":  # fields split on tabs, no quoting
        lines = ["\t".join(columns), *("\t".join(map(str, row.values())) for row in rows)]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    else:
        pq.write_table(pa.table(columns), path, row_group_size=2)
    return path


def read_output(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """Vectors (float32) and texts (None for .npy) of an `embed` output; checks the ids."""
    if path.suffix == ".npy":
        return np.load(path), None
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        rows = pq.read_table(path).to_pylist()
    assert [row["id"] for row in rows] == list(range(len(rows)))
    vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
    return vectors, [row["text"] for row in rows]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


class InterruptedStdin(io.StringIO):
    """Standard input on which Ctrl-C arrives after ``lines`` lines were read."""

    def __init__(self, text: str, lines: int) -> None:
        super().__init__(text)
        self.left = lines

    def __next__(self) -> str:
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return super().__next__()


def start_embed(source: Path, output: Path, flags: list[str]) -> subprocess.Popen[str]:
    """``localembed embed SOURCE -o OUTPUT FLAGS`` in a child process, offline, stderr piped."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [sys.executable, "-m", "localembed.cli", "embed", str(source), "-o", str(output), *flags],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for_rows(
    child: subprocess.Popen[str], output: Path, rows: int, poll_s: float = 0.01
) -> None:
    """Wait until the running ``child`` has committed ``rows`` rows of ``output``.

    ``rows=0``: until its partial output exists. Fails when the child exits first, or after
    120 s.
    """
    state = output.with_name(output.name + ".partial.json")
    partial = output.with_name(output.name + ".partial")
    deadline = time.monotonic() + 120
    while True:
        assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, "the child wrote no rows"
        if rows == 0 and partial.exists():
            return
        if state.exists() and json.loads(state.read_text() or "{}").get("rows", 0) >= rows:
            return
        time.sleep(poll_s)
