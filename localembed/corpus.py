"""Reading and writing corpora in chunks, resumably (the engine of ``localembed embed``).

Inputs (:func:`open_source`): text lines, JSON lines, CSV/TSV and parquet, streamed row by
row from a chosen column. Outputs (:data:`OUTPUTS`): .npy, .jsonl and .parquet written to
``OUTPUT.partial``; after each chunk the data is flushed to disk and
``OUTPUT.partial.json`` records the rows written (with a digest of their texts and the
settings). ``OUTPUT`` appears, by rename, only when every row is written, so it is never
half-written; a resumed run checks the recorded rows and continues after them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# -- inputs -----------------------------------------------------------------------------------

INPUT_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}
"""Input format by file suffix; any other file is text, one text per line."""

INPUT_FORMATS = ("txt", "jsonl", "csv", "tsv", "parquet")


@dataclass
class Source:
    """An input opened for streaming: its texts in order and, when cheap, how many."""

    name: str
    rows: Iterator[str]
    count: Callable[[], int | None] = field(default=lambda: None)
    """Number of rows (a fast pass over the file), or None when unknown (stdin, csv)."""


@contextlib.contextmanager
def _text_file(path: str, newline: str | None = None) -> Iterator[IO[str]]:
    if path == "-":
        if hasattr(sys.stdin, "reconfigure"):
            sys.stdin.reconfigure(encoding="utf-8")
        yield sys.stdin
        return
    # utf-8-sig: a byte-order mark (as some editors write) is not part of the first text.
    with open(path, encoding="utf-8-sig", newline=newline) as file:
        yield file


def _line_count(path: str, *, skip_blank: bool) -> int | None:
    if path == "-":
        return None
    count = 0
    with open(path, "rb") as file:
        if skip_blank:
            return sum(1 for line in file if line.strip())
        last = b"\n"
        while block := file.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
        return count + (last != b"\n")


def _text_rows(path: str) -> Iterator[str]:
    with _text_file(path) as file:
        for line in file:
            yield line[:-1] if line.endswith("\n") else line


def _jsonl_rows(path: str, column: str) -> Iterator[str]:
    name = "stdin" if path == "-" else Path(path).name
    with _text_file(path) as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                msg = f"{name} line {number}: not valid JSON ({error.msg})"
                raise ValueError(msg) from None
            if not isinstance(row, dict):
                msg = f"{name} line {number}: expected a JSON object, got {type(row).__name__}"
                raise ValueError(msg)
            if column not in row:
                msg = (
                    f"{name} line {number}: no column {column!r}; columns found: "
                    f"{', '.join(map(str, row)) or 'none'} (choose one with --column)"
                )
                raise ValueError(msg)
            yield _checked_text(row[column], f"{name} line {number}", column)


def _csv_rows(path: str, column: str, delimiter: str) -> Iterator[str]:
    name = "stdin" if path == "-" else Path(path).name
    # A text may be long: allow fields of any size (the csv module's default stops at 128 KiB).
    csv.field_size_limit(2**31 - 1)
    with _text_file(path, newline="") as file:
        reader = csv.reader(file, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        if column not in header:
            msg = (
                f"{name}: no column {column!r}; columns found: {', '.join(header)} "
                f"(choose one with --column)"
            )
            raise ValueError(msg)
        index = header.index(column)
        for row in reader:
            if not row:  # a blank line
                continue
            if len(row) <= index:
                msg = (
                    f"{name} line {reader.line_num}: no value for column {column!r} "
                    f"(the row has {len(row)} fields, the header {len(header)})"
                )
                raise ValueError(msg)
            yield row[index]


def _parquet_file(path: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        msg = 'parquet files need pyarrow: pip install "localembed[cli]"'
        raise ImportError(msg) from error
    return pq.ParquetFile(path)


def _parquet_rows(path: str, column: str, batch_rows: int) -> Iterator[str]:
    import pyarrow as pa

    name = Path(path).name
    parquet = _parquet_file(path)
    schema = parquet.schema_arrow
    if column not in schema.names:
        msg = (
            f"{name}: no column {column!r}; columns found: {', '.join(schema.names)} "
            f"(choose one with --column)"
        )
        raise ValueError(msg)
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        msg = f"{name}: column {column!r} holds {kind}, not text (choose one with --column)"
        raise ValueError(msg)
    row = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=[column]):
        for value in batch.column(0).to_pylist():
            yield _checked_text(value, f"{name} row {row}", column)
            row += 1


def _checked_text(value: Any, where: str, column: str) -> str:
    if isinstance(value, str):
        return value
    what = "null" if value is None else f"a {type(value).__name__}"
    msg = f"{where}: {column!r} is {what}, not a string"
    raise ValueError(msg)


def open_source(path: str, fmt: str, column: str, chunk_size: int) -> Source:
    """Open ``path`` (``-``: standard input) as a stream of texts (checks the file first)."""
    name = "stdin" if path == "-" else path
    if path != "-" and not Path(path).is_file():
        msg = f"input not found: {path}"
        raise FileNotFoundError(msg)
    if fmt == "txt":
        return Source(name, _text_rows(path), lambda: _line_count(path, skip_blank=False))
    if fmt == "jsonl":
        return Source(name, _jsonl_rows(path, column), lambda: _line_count(path, skip_blank=True))
    if fmt in {"csv", "tsv"}:
        return Source(name, _csv_rows(path, column, "," if fmt == "csv" else "\t"))
    if path == "-":
        msg = "parquet cannot be read from standard input; give the file"
        raise ValueError(msg)
    rows = int(_parquet_file(path).metadata.num_rows)  # also checks that it is parquet
    return Source(name, _parquet_rows(path, column, chunk_size), lambda: rows)


# -- outputs ----------------------------------------------------------------------------------


class PartialOutput:
    """``OUTPUT.partial`` being written chunk by chunk, and its state ``OUTPUT.partial.json``.

    ``append`` adds rows; ``commit`` makes them durable (data flushed to disk, then the state
    replaced atomically), so after any interruption the state describes a prefix of the rows
    that is fully on disk; ``reopen`` cuts the data back to that prefix. ``finish`` makes the
    final file and renames it to ``OUTPUT``.
    """

    suffix = ""

    def __init__(self, output: Path, dimension: int, metadata: dict[str, Any]) -> None:
        self.output = output
        self.partial = output.with_name(output.name + ".partial")
        self.state_path = output.with_name(output.name + ".partial.json")
        self.dimension = dimension
        self.metadata = metadata
        self.rows = 0
        """Rows committed."""

    def exists(self) -> bool:
        """Whether an earlier run left a partial output."""
        return self.partial.exists() or self.state_path.exists()

    def read_state(self) -> dict[str, Any]:
        """The committed state of the partial output."""
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            msg = (
                f"{self.state_path.name} is missing or unreadable, so {self.partial.name} cannot "
                f"be resumed; delete it or pass --overwrite"
            )
            raise ValueError(msg) from None
        return state

    def begin(self) -> None:
        """Start an empty partial output."""
        raise NotImplementedError

    def reopen(self, state: dict[str, Any]) -> None:
        """Continue the partial output after its committed rows (data past them is cut)."""
        raise NotImplementedError

    def append(self, first_id: int, texts: list[str], vectors: np.ndarray) -> None:
        """Add rows ``first_id``, ``first_id + 1``, ... (durable after :meth:`commit`)."""
        raise NotImplementedError

    def sync(self) -> dict[str, Any]:
        """Flush appended data to disk; return what the state must record of it."""
        raise NotImplementedError

    def commit(self, rows: int, digest: str, settings: dict[str, Any]) -> None:
        """Make the rows appended so far durable and record them in the state file."""
        state = {"rows": rows, "digest": digest, "settings": settings, **self.sync()}
        temporary = self.state_path.with_name(self.state_path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as file:
            json.dump(state, file)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self.state_path)
        self.rows = rows

    def finish(self) -> None:
        """Write the final file as ``OUTPUT`` and remove the partial output."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open files (the partial output stays)."""

    def discard(self) -> None:
        """Remove the partial output and its state."""
        self.close()
        if self.partial.is_dir():
            shutil.rmtree(self.partial)
        else:
            self.partial.unlink(missing_ok=True)
        for path in (self.state_path, self.state_path.with_name(self.state_path.name + ".tmp")):
            path.unlink(missing_ok=True)


class _FileOutput(PartialOutput):
    """A partial output that is one file, appended to; the state records its committed size."""

    header = 0

    def __init__(self, output: Path, dimension: int, metadata: dict[str, Any]) -> None:
        super().__init__(output, dimension, metadata)
        self.file: IO[bytes] | None = None

    def begin(self) -> None:
        self.file = self.partial.open("wb")
        self.write_header(0)

    def reopen(self, state: dict[str, Any]) -> None:
        if not self.partial.is_file() or self.partial.stat().st_size < state["bytes"]:
            msg = f"{self.partial.name} is shorter than its state records; delete it or --overwrite"
            raise ValueError(msg)
        self.file = self.partial.open("r+b")
        self.file.truncate(state["bytes"])
        self.file.seek(state["bytes"])
        self.rows = state["rows"]

    def write_header(self, rows: int) -> None:
        """Write the file's header at its start (nothing for headerless formats)."""

    def sync(self) -> dict[str, Any]:
        assert self.file is not None
        self.file.flush()
        os.fsync(self.file.fileno())
        return {"bytes": self.file.tell()}

    def finish(self) -> None:
        assert self.file is not None
        self.write_header(self.rows)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.close()
        self.partial.replace(self.output)
        self.state_path.unlink(missing_ok=True)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class _NpyOutput(_FileOutput):
    """A (rows, dimension) float32 ``.npy``: raw rows appended after a fixed-size header.

    The header is rewritten with the final row count at the end; numpy pads a version 1.0
    header to 128 bytes for any 2-D float32 shape, so it always fits the space reserved.
    """

    suffix = ".npy"
    header = 128

    def write_header(self, rows: int) -> None:
        import numpy as np

        assert self.file is not None
        position = self.file.tell()
        self.file.seek(0)
        header = {"descr": "<f4", "fortran_order": False, "shape": (rows, self.dimension)}
        np.lib.format.write_array_header_1_0(self.file, header)
        if self.file.tell() != self.header:
            msg = f"unexpected .npy header size {self.file.tell()}"
            raise RuntimeError(msg)
        self.file.seek(max(position, self.header))

    def append(self, first_id: int, texts: list[str], vectors: np.ndarray) -> None:
        import numpy as np

        assert self.file is not None
        self.file.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())


class _JsonlOutput(_FileOutput):
    """One JSON object a line: ``{"id": row, "text": ..., "embedding": [...]}``."""

    suffix = ".jsonl"

    def append(self, first_id: int, texts: list[str], vectors: np.ndarray) -> None:
        assert self.file is not None
        lines = [
            json.dumps({"id": first_id + i, "text": text, "embedding": vector}, ensure_ascii=False)
            + "\n"
            for i, (text, vector) in enumerate(zip(texts, vectors.tolist(), strict=True))
        ]
        self.file.write("".join(lines).encode("utf-8"))


class _ParquetOutput(PartialOutput):
    """Columns ``id`` (int64), ``text`` (string), ``embedding`` (list<float32>).

    Each chunk is written as its own small parquet file in the ``OUTPUT.partial`` folder
    (a parquet file is unreadable until its footer is written, so one growing file could not
    survive an interruption); ``finish`` copies them, one row group each, into ``OUTPUT``.
    """

    suffix = ".parquet"

    def __init__(self, output: Path, dimension: int, metadata: dict[str, Any]) -> None:
        super().__init__(output, dimension, metadata)
        self.parts = 0
        try:
            import pyarrow as pa
        except ImportError as error:
            msg = 'parquet output needs pyarrow: pip install "localembed[cli]"'
            raise ImportError(msg) from error
        self.schema = pa.schema(
            [("id", pa.int64()), ("text", pa.string()), ("embedding", pa.list_(pa.float32()))],
            metadata={"localembed": json.dumps(metadata, ensure_ascii=False)},
        )

    def _part(self, index: int) -> Path:
        return self.partial / f"part-{index:06d}.parquet"

    def begin(self) -> None:
        if self.partial.exists():
            self.discard()
        self.partial.mkdir()

    def reopen(self, state: dict[str, Any]) -> None:
        self.parts, self.rows = state["parts"], state["rows"]
        missing = [i for i in range(self.parts) if not self._part(i).is_file()]
        if missing:
            msg = f"{self._part(missing[0])} is missing; delete {self.partial.name} or --overwrite"
            raise ValueError(msg)
        committed = {self._part(i).name for i in range(self.parts)}
        for path in self.partial.iterdir():  # parts written after the last commit
            if path.name not in committed:
                path.unlink()

    def append(self, first_id: int, texts: list[str], vectors: np.ndarray) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        offsets = np.arange(0, (len(texts) + 1) * self.dimension, self.dimension, dtype=np.int32)
        embedding = pa.ListArray.from_arrays(
            pa.array(offsets), pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
        )
        ids = pa.array(range(first_id, first_id + len(texts)), pa.int64())
        table = pa.Table.from_arrays(
            [ids, pa.array(texts, pa.string()), embedding], schema=self.schema
        )
        target = self._part(self.parts)
        temporary = target.with_name(target.name + ".tmp")
        with temporary.open("wb") as file:
            pq.write_table(table, file)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(target)
        self.parts += 1

    def sync(self) -> dict[str, Any]:
        return {"parts": self.parts}

    def finish(self) -> None:
        import pyarrow.parquet as pq

        temporary = self.partial / "complete.parquet.tmp"
        with pq.ParquetWriter(temporary, self.schema) as writer:
            for index in range(self.parts):
                writer.write_table(pq.read_table(self._part(index), schema=self.schema))
            if not self.parts:
                writer.write_table(self.schema.empty_table())
        with temporary.open("rb") as file:
            os.fsync(file.fileno())
        temporary.replace(self.output)
        self.discard()


OUTPUTS: dict[str, type[PartialOutput]] = {
    ".npy": _NpyOutput,
    ".jsonl": _JsonlOutput,
    ".parquet": _ParquetOutput,
}


# -- chunks -----------------------------------------------------------------------------------


def chunks(rows: Iterable[str], size: int) -> Iterator[list[str]]:
    """``rows`` in lists of ``size`` (the last one shorter)."""
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class TextDigest:
    """SHA-256 over the texts in order (length-prefixed, so boundaries count)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def update(self, texts: Iterable[str]) -> None:
        """Add ``texts`` (in order) to the digest."""
        for text in texts:
            data = text.encode("utf-8", "surrogatepass")
            self.hash.update(len(data).to_bytes(8, "little"))
            self.hash.update(data)

    def hexdigest(self) -> str:
        """The digest so far, as hex."""
        return self.hash.hexdigest()


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """What changed between two nested settings dicts, as ``"key.sub old -> new"`` lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [f"{prefix.rstrip('.')} {old!r} -> {new!r}"]
