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
import math
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
    ".tab": "tsv",
    ".parquet": "parquet",
}
"""Input format by file suffix; any other file is text, one text per line."""

INPUT_FORMATS = ("txt", "jsonl", "csv", "tsv", "parquet")

_BOM = b"\xef\xbb\xbf"

NO_ID: Any = type("NoId", (), {"__repr__": lambda self: "NO_ID"})()
"""A row's ``id`` without an id column (the row number is used); a null id is an error."""


@dataclass(frozen=True)
class Row:
    """One input row: its text, and the input fields carried to the output."""

    text: str
    id: Any = NO_ID
    """The value of the id column (:data:`NO_ID` without one)."""
    kept: tuple[Any, ...] = ()
    """The values of the kept columns, in :attr:`Source.keep` order."""
    line: int | None = None
    """The input line the row starts on (None for parquet, whose rows are numbered)."""


@dataclass
class Source:
    """An input opened for streaming: its rows in order and, when it can tell, how many."""

    name: str
    rows: Iterator[Row]
    count: Callable[[], int | None] = field(default=lambda: None)
    """Number of rows (a fast pass over the file), or None when unknown (standard input)."""
    id_column: str | None = None
    keep: tuple[str, ...] = ()
    types: dict[str, Any] = field(default_factory=dict)
    """Arrow types of the carried columns, where the input has them (parquet)."""


def _display_name(path: str) -> str:
    return "stdin" if path == "-" else Path(path).name


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """The numbered lines of ``path`` (``-``: standard input), without their line ends.

    Lines end at a line feed only (a carriage return before it is dropped; a lone one is
    text), so the count is that of ``wc -l``. Bytes that are not UTF-8 are an error naming the
    line and the byte offset; a byte-order mark at the start is not part of the first line.
    """
    name = _display_name(path)
    if path == "-" and not hasattr(sys.stdin, "buffer"):  # an already decoded text stream
        for number, line in enumerate(sys.stdin, 1):
            yield number, _checked_text(line.removesuffix("\n").removesuffix("\r"), name, number)
        return
    with contextlib.ExitStack() as stack:
        file: IO[bytes] = sys.stdin.buffer if path == "-" else stack.enter_context(open(path, "rb"))
        offset = 0
        for number, raw in enumerate(file, 1):
            start = len(_BOM) if number == 1 and raw.startswith(_BOM) else 0
            data = raw[start:].removesuffix(b"\n").removesuffix(b"\r")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as error:
                msg = (
                    f"{name} line {number}: not UTF-8 (byte {offset + start + error.start} of "
                    f"the file: {error.reason}); convert the file to UTF-8"
                )
                raise ValueError(msg) from None
            offset += len(raw)
            yield number, text


def _checked_text(text: str, name: str, number: int) -> str:
    """``text``, checked to be encodable (no lone surrogates, as JSON escapes can make)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        msg = (
            f"{name} line {number}: a lone surrogate {text[error.start]!r} at character "
            f"{error.start} is not text"
        )
        raise ValueError(msg) from None
    return text


def _checked_id(value: Any, where: str, column: str) -> Any:
    """An id column's value; null is an error (the row number would duplicate a real id)."""
    if value is None:
        msg = (
            f"{where}: the id column {column!r} is null; every row needs an id (or drop "
            f"--id-column to number the rows)"
        )
        raise ValueError(msg)
    return value


def _checked_json_value(value: Any, name: str, number: int) -> Any:
    """A carried JSON value, checked all through: no lone surrogates, no NaN or infinity.

    A value read from JSON is written back as JSON, which cannot hold either.
    """
    if isinstance(value, str):
        return _checked_text(value, name, number)
    if isinstance(value, float) and not math.isfinite(value):
        msg = (
            f"{name} line {number}: {value} is not a JSON number (NaN and infinity cannot be "
            f"written back as JSON); write null or a string"
        )
        raise ValueError(msg)
    if isinstance(value, list):
        for item in value:
            _checked_json_value(item, name, number)
    elif isinstance(value, dict):
        for key, item in value.items():
            _checked_text(key, name, number)
            _checked_json_value(item, name, number)
    return value


def _checked_value(value: Any, where: str, column: str) -> str:
    if isinstance(value, str):
        return value
    what = "null" if value is None else f"a {type(value).__name__}"
    msg = f"{where}: {column!r} is {what}, not a string"
    raise ValueError(msg)


def _missing_columns(name: str, wanted: Iterable[str], found: list[str]) -> None:
    """Refuse columns of ``wanted`` that ``found`` lacks, naming the columns there are."""
    missing = [column for column in wanted if column not in found]
    if missing:
        msg = (
            f"{name}: no column {missing[0]!r}; columns found: "
            f"{', '.join(map(str, found)) or 'none'} (choose one with --column, --id-column "
            f"or --keep-columns)"
        )
        raise ValueError(msg)


def _text_rows(path: str) -> Iterator[Row]:
    for number, line in _lines(path):
        yield Row(line, line=number)


def _jsonl_rows(
    path: str, column: str, id_column: str | None, keep: tuple[str, ...]
) -> Iterator[Row]:
    name = _display_name(path)
    wanted = [column, *([id_column] if id_column else []), *keep]
    for number, line in _lines(path):
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
        _missing_columns(f"{name} line {number}", wanted, list(row))
        text = _checked_value(row[column], f"{name} line {number}", column)
        identifier = NO_ID
        if id_column:
            identifier = _checked_id(row[id_column], f"{name} line {number}", id_column)
            _checked_json_value(identifier, name, number)
        yield Row(
            _checked_text(text, name, number),
            identifier,
            tuple(_checked_json_value(row[key], name, number) for key in keep),
            number,
        )


def _csv_records(path: str) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the line each starts on; malformed quoting is an error naming it.

    A quoted field may hold line breaks (that is CSV); a quote that is never closed, or
    text after a closing quote, is an error (``strict``), not rows merged into one.
    """
    name = _display_name(path)
    read = 0

    def lines() -> Iterator[str]:
        nonlocal read
        for number, line in _lines(path):
            read = number
            yield line + "\n"

    # A text may be long: allow fields of any size (the csv module's default stops at 128 KiB).
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(lines(), strict=True)
    while True:
        start = read + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            msg = (
                f"{name} line {start}: malformed CSV in the record that starts here ({error}); "
                f"a field that starts with a quote must end with a quote followed by a comma "
                f'or the line\'s end (double a quote inside it: "")'
            )
            raise ValueError(msg) from None
        yield start, record


def _tsv_records(path: str) -> Iterator[tuple[int, list[str]]]:
    """Tab-separated records, a line each: no quoting (a quote is text), no line skipped."""
    for number, line in _lines(path):
        yield number, line.split("\t")


def _delimited_rows(
    path: str, fmt: str, column: str, id_column: str | None, keep: tuple[str, ...]
) -> Iterator[Row]:
    name = _display_name(path)
    records = _csv_records(path) if fmt == "csv" else _tsv_records(path)
    header = next((record for _, record in records if record), None)
    if header is None:
        return
    _missing_columns(name, [column, *([id_column] if id_column else []), *keep], header)
    index = header.index(column)
    id_index = header.index(id_column) if id_column else None
    kept = [header.index(key) for key in keep]
    for number, record in records:
        if not record and len(header) == 1:  # a blank line: an empty text (rows in = rows out)
            record = [""]
        if len(record) != len(header):
            msg = (
                f"{name} line {number}: {len(record)} fields, the header has {len(header)} "
                f"(every row needs a value for each column)"
            )
            raise ValueError(msg)
        yield Row(
            record[index],
            NO_ID if id_index is None else record[id_index],
            tuple(record[i] for i in kept),
            number,
        )


def _parquet_file(path: str) -> Any:
    from localembed.extras import require

    pq = require("pyarrow.parquet", "parquet files")
    return pq.ParquetFile(path)


def _parquet_rows(
    parquet: Any,
    name: str,
    column: str,
    id_column: str | None,
    keep: tuple[str, ...],
    batch_rows: int,
) -> Iterator[Row]:
    wanted = [column, *([id_column] if id_column else []), *keep]
    names = list(dict.fromkeys(wanted))  # parquet reads a column once: map them by name
    row = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=names):
        by_name = {key: batch.column(key).to_pylist() for key in names}
        for values in zip(*(by_name[key] for key in wanted), strict=True):
            text = _checked_value(values[0], f"{name} row {row}", column)
            identifier = NO_ID
            if id_column:
                identifier = _checked_id(values[1], f"{name} row {row}", id_column)
            yield Row(text, identifier, tuple(values[1 + bool(id_column) :]))
            row += 1


def _open_parquet(
    path: str, column: str, id_column: str | None, keep: tuple[str, ...], batch_rows: int
) -> Source:
    import pyarrow as pa

    name = _display_name(path)
    parquet = _parquet_file(path)
    schema = parquet.schema_arrow
    _missing_columns(name, [column, *([id_column] if id_column else []), *keep], schema.names)
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        msg = f"{name}: column {column!r} holds {kind}, not text (choose one with --column)"
        raise ValueError(msg)
    rows = int(parquet.metadata.num_rows)
    types = {key: schema.field(key).type for key in [*([id_column] if id_column else []), *keep]}
    return Source(
        path,
        _parquet_rows(parquet, name, column, id_column, keep, batch_rows),
        lambda: rows,
        id_column,
        keep,
        types,
    )


def _count_lines(path: str, fmt: str) -> int | None:
    """Rows of a line-based input, by a fast pass (None for standard input or CSV trouble)."""
    if path == "-":
        return None
    if fmt == "csv":  # records may span lines: count them with the csv parser
        try:
            with open(path, encoding="utf-8-sig", errors="replace", newline="") as file:
                records = itertools.dropwhile(lambda record: not record, csv.reader(file))
                return max(0, sum(1 for _ in records) - 1)  # blank lines are rows
        except csv.Error:
            return None  # reading the rows reports the problem
    with open(path, "rb") as file:
        if fmt == "txt":
            count, last = 0, b"\n"
            while block := file.read(1 << 20):
                count += block.count(b"\n")
                last = block[-1:]
            return count + (last != b"\n")
        rows = sum(1 for line in file if fmt == "tsv" or line.strip())
    return max(0, rows - 1) if fmt == "tsv" else rows


def open_source(
    path: str,
    fmt: str,
    column: str = "text",
    *,
    id_column: str | None = None,
    keep: tuple[str, ...] = (),
    batch_rows: int = 1024,
) -> Source:
    """Open ``path`` (``-``: standard input) as a stream of rows (checks the file first).

    Args:
        path: the input file, or ``-`` for standard input.
        fmt: one of :data:`INPUT_FORMATS`.
        column: the text column (not for ``txt``).
        id_column: a column whose value becomes each row's ``id``.
        keep: columns whose values are carried to the output.
        batch_rows: rows read at a time from parquet.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a missing column, a text column that is not text; while reading the
            rows: the first bad row, named by its line (or parquet row).
    """
    if path != "-" and not Path(path).is_file():
        msg = f"input not found: {path}"
        raise FileNotFoundError(msg)
    if fmt not in INPUT_FORMATS:
        msg = f"unknown input format {fmt!r}; choose from: {', '.join(INPUT_FORMATS)}"
        raise ValueError(msg)
    if fmt == "txt" and (id_column or keep):
        msg = "a .txt input has no columns to carry (one text a line)"
        raise ValueError(msg)
    name = "stdin" if path == "-" else path
    if fmt == "parquet":
        if path == "-":
            msg = "parquet cannot be read from standard input; give the file"
            raise ValueError(msg)
        return _open_parquet(path, column, id_column, keep, batch_rows)
    if fmt == "txt":
        rows = _text_rows(path)
    elif fmt == "jsonl":
        rows = _jsonl_rows(path, column, id_column, keep)
    else:
        rows = _delimited_rows(path, fmt, column, id_column, keep)
    return Source(name, rows, lambda: _count_lines(path, fmt), id_column, keep)


# -- outputs ----------------------------------------------------------------------------------

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)


def refuse_link(path: Path) -> None:
    """Refuse to write ``path`` when it is a symbolic link (its target is not ours to write)."""
    if path.is_symlink():
        msg = (
            f"{path} is a symbolic link: localembed does not write through links "
            f"(remove it or choose another output)"
        )
        raise ValueError(msg)


def open_for_writing(path: Path, *, truncate: bool = True) -> IO[bytes]:
    """Open ``path`` to write, never through a symbolic link (O_NOFOLLOW where it exists)."""
    refuse_link(path)
    flags = os.O_RDWR | os.O_CREAT | _NOFOLLOW | _BINARY | (os.O_TRUNC if truncate else 0)
    try:
        descriptor = os.open(path, flags, 0o666)
    except OSError as error:
        if path.is_symlink():  # made between the check and the open
            refuse_link(path)
        raise error from None
    return os.fdopen(descriptor, "r+b")


def check_output(output: Path, *, overwrite: bool, resume: bool) -> None:
    """Check where ``output`` goes before any work: format, folder, links, earlier runs.

    Raises:
        ValueError: an unknown output suffix, a missing folder, a symbolic link at the output
            or its partial files, an existing output without ``overwrite``, or an earlier
            run's partial output without ``resume`` or ``overwrite``.
    """
    if output.suffix.lower() not in OUTPUTS:
        msg = f"output must end in {', '.join(OUTPUTS)}, got {output.name}"
        raise ValueError(msg)
    folder = output.parent
    if not folder.is_dir():
        msg = f"output folder not found: {folder} (create it first)"
        raise ValueError(msg)
    paths = PartialOutput.paths(output)
    for path in (output, *paths):
        refuse_link(path)
    if output.is_dir():
        msg = f"{output} is a folder; give a file name"
        raise ValueError(msg)
    if output.exists() and not overwrite:
        msg = f"{output} exists; pass --overwrite to replace it"
        raise ValueError(msg)
    partial = paths[0]
    if (partial.exists() or paths[1].exists()) and not (resume or overwrite):
        msg = (
            f"{partial} holds rows of an interrupted run: pass --resume to continue it, "
            f"or --overwrite to start again"
        )
        raise ValueError(msg)


class PartialOutput:
    """``OUTPUT.partial`` being written chunk by chunk, and its state ``OUTPUT.partial.json``.

    ``append`` adds rows; ``commit`` makes them durable (data flushed to disk, then the state
    replaced atomically), so after any interruption the state describes a prefix of the rows
    that is fully on disk; ``reopen`` cuts the data back to that prefix. ``finish`` makes the
    final file and renames it to ``OUTPUT``. Nothing is written through a symbolic link.

    Rows carry their id (the row number, or the value of the input's id column) and the
    values of the kept columns (``keep``); a .npy output holds vectors only. ``dtype`` is the
    vectors' type (float32, or what :func:`localembed.precision.quantize` gives) and
    ``dimension`` their width (packed bytes for binary).
    """

    suffix = ""
    carries = True
    """Whether the format holds ids and kept columns."""

    def __init__(
        self,
        output: Path,
        dimension: int,
        metadata: dict[str, Any],
        *,
        keep: tuple[str, ...] = (),
        types: dict[str, Any] | None = None,
        dtype: str = "float32",
    ) -> None:
        self.output = output
        self.dtype = dtype
        self.partial, self.state_path, self.temporary_state = self.paths(output)
        self.dimension = dimension
        self.metadata = metadata
        self.keep = keep
        self.types = dict(types or {})
        self.rows = 0
        """Rows committed."""

    @staticmethod
    def paths(output: Path) -> tuple[Path, Path, Path]:
        """The partial output, its state file and the state's temporary file."""
        state = output.with_name(output.name + ".partial.json")
        return (
            output.with_name(output.name + ".partial"),
            state,
            state.with_name(state.name + ".tmp"),
        )

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

    def append(self, first_row: int, rows: list[Row], vectors: np.ndarray) -> None:
        """Add rows numbered ``first_row``, ``first_row + 1``, ... (durable after ``commit``)."""
        raise NotImplementedError

    def sync(self) -> dict[str, Any]:
        """Flush appended data to disk; return what the state must record of it."""
        raise NotImplementedError

    def commit(self, rows: int, digest: str, settings: dict[str, Any]) -> None:
        """Make the rows appended so far durable and record them in the state file."""
        state = {"rows": rows, "digest": digest, "settings": settings, **self.sync()}
        with open_for_writing(self.temporary_state) as file:
            file.write(json.dumps(state).encode("utf-8"))
            file.flush()
            os.fsync(file.fileno())
        self.temporary_state.replace(self.state_path)
        self.rows = rows

    def finish(self) -> None:
        """Write the final file as ``OUTPUT`` and remove the partial output."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open files (the partial output stays)."""

    def discard(self) -> None:
        """Remove the partial output and its state (a link is removed, never followed)."""
        self.close()
        if self.partial.is_dir() and not self.partial.is_symlink():
            shutil.rmtree(self.partial)
        else:
            self.partial.unlink(missing_ok=True)
        for path in (self.state_path, self.temporary_state):
            path.unlink(missing_ok=True)

    @staticmethod
    def row_ids(first_row: int, rows: list[Row]) -> list[Any]:
        """Each row's id: the id column's value, or its row number."""
        return [first_row + i if row.id is NO_ID else row.id for i, row in enumerate(rows)]


class _FileOutput(PartialOutput):
    """A partial output that is one file, appended to; the state records its committed size."""

    header = 0

    def __init__(
        self, output: Path, dimension: int, metadata: dict[str, Any], **carry: Any
    ) -> None:
        super().__init__(output, dimension, metadata, **carry)
        self.file: IO[bytes] | None = None

    def begin(self) -> None:
        self.file = open_for_writing(self.partial)
        self.write_header(0)

    def reopen(self, state: dict[str, Any]) -> None:
        refuse_link(self.partial)
        if not self.partial.is_file() or self.partial.stat().st_size < state["bytes"]:
            msg = f"{self.partial.name} is shorter than its state records; delete it or --overwrite"
            raise ValueError(msg)
        self.file = open_for_writing(self.partial, truncate=False)
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
    """A (rows, dimension) ``.npy``: raw rows appended after a fixed-size header.

    The dtype is float32, or the output precision's (float16, int8, uint8).
    The header is rewritten with the final row count at the end; numpy pads a version 1.0
    header to 128 bytes for any 2-D shape of these dtypes, so it always fits the space reserved.
    """

    suffix = ".npy"
    header = 128
    carries = False

    def write_header(self, rows: int) -> None:
        import numpy as np

        assert self.file is not None
        position = self.file.tell()
        self.file.seek(0)
        descr = np.dtype(self.dtype).newbyteorder("<").str
        header = {"descr": descr, "fortran_order": False, "shape": (rows, self.dimension)}
        np.lib.format.write_array_header_1_0(self.file, header)
        if self.file.tell() != self.header:
            msg = f"unexpected .npy header size {self.file.tell()}"
            raise RuntimeError(msg)
        self.file.seek(max(position, self.header))

    def append(self, first_row: int, rows: list[Row], vectors: np.ndarray) -> None:
        import numpy as np

        assert self.file is not None
        little = np.dtype(self.dtype).newbyteorder("<")
        self.file.write(np.ascontiguousarray(vectors, dtype=little).tobytes())


class _JsonlOutput(_FileOutput):
    """One JSON object a line: ``{"id": ..., "text": ..., KEPT..., "embedding": [...]}``."""

    suffix = ".jsonl"

    def append(self, first_row: int, rows: list[Row], vectors: np.ndarray) -> None:
        assert self.file is not None
        lines = []
        for number, (identifier, row, vector) in enumerate(
            zip(self.row_ids(first_row, rows), rows, vectors.tolist(), strict=True), first_row
        ):
            record = {
                "id": identifier,
                "text": row.text,
                **dict(zip(self.keep, row.kept, strict=True)),
                "embedding": vector,
            }
            try:
                # allow_nan=False: NaN is not JSON (a parquet input's NaN float, say).
                line = json.dumps(record, ensure_ascii=False, default=str, allow_nan=False)
            except ValueError:
                msg = (
                    f"row {number}: a kept value is NaN or infinite, which JSON cannot hold; "
                    f"use a .parquet output"
                )
                raise ValueError(msg) from None
            lines.append(line + "\n")
        self.file.write("".join(lines).encode("utf-8"))


class _ParquetOutput(PartialOutput):
    """Columns ``id``, ``text`` (string), the kept columns, ``embedding`` (list<float32>).

    Another precision gives list<float16>, list<int8> or list<uint8> and the schema metadata
    ``localembed`` records it (and int8/uint8 calibration ``ranges``).
    ``id`` is int64 (the row number) or the id column's type. Each chunk is written as its own
    small parquet file in the ``OUTPUT.partial`` folder (a parquet file is unreadable until its
    footer is written, so one growing file could not survive an interruption); ``finish``
    copies them, one row group each, into ``OUTPUT``. Carried columns keep a parquet input's
    types; from other inputs their type is that of the first chunk's values.
    """

    suffix = ".parquet"

    def __init__(
        self, output: Path, dimension: int, metadata: dict[str, Any], **carry: Any
    ) -> None:
        super().__init__(output, dimension, metadata, **carry)
        self.parts = 0
        self.schema: Any = None
        from localembed.extras import require

        require("pyarrow", "parquet output")

    def _part(self, index: int) -> Path:
        return self.partial / f"part-{index:06d}.parquet"

    def _schema(self, types: dict[str, Any]) -> Any:
        """The output schema: fixed types, and the carried columns' ``types``."""
        import numpy as np
        import pyarrow as pa

        fields = [
            ("id", types["id"]),
            ("text", pa.string()),
            *[(key, types[key]) for key in self.keep],
            ("embedding", pa.list_(pa.from_numpy_dtype(np.dtype(self.dtype)))),
        ]
        metadata = {"localembed": json.dumps(self.metadata, ensure_ascii=False)}
        return pa.schema(fields, metadata=metadata)

    def _carried(self, rows: list[Row], ids: list[Any], first_row: int) -> dict[str, Any]:
        import pyarrow as pa

        values = {
            "id": ids,
            **{key: [row.kept[i] for row in rows] for i, key in enumerate(self.keep)},
        }
        arrays = {}
        for key, column in values.items():
            known = self.schema.field(key).type if self.schema is not None else self.types.get(key)
            if key == "id" and known is None and all(row.id is NO_ID for row in rows):
                known = pa.int64()
            try:
                arrays[key] = pa.array(column, type=known)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
                where = f"type {known}" if known is not None else "one type"
                msg = (
                    f"column {key!r} of rows {first_row}..{first_row + len(rows) - 1}: values "
                    f"do not fit {where} in a parquet output ({error}); use a .jsonl output"
                )
                raise ValueError(msg) from None
        return arrays

    def begin(self) -> None:
        if self.partial.exists() or self.partial.is_symlink():
            self.discard()
        self.partial.mkdir()

    def reopen(self, state: dict[str, Any]) -> None:
        import pyarrow.parquet as pq

        refuse_link(self.partial)
        self.parts, self.rows = state["parts"], state["rows"]
        missing = [i for i in range(self.parts) if not self._part(i).is_file()]
        if missing:
            msg = f"{self._part(missing[0])} is missing; delete {self.partial.name} or --overwrite"
            raise ValueError(msg)
        committed = {self._part(i).name for i in range(self.parts)}
        for path in self.partial.iterdir():  # parts written after the last commit
            if path.name not in committed:
                path.unlink()
        if self.parts:
            # The carried types as written (parquet renames the list's item field: rebuild).
            written = pq.read_schema(self._part(0))
            self.schema = self._schema({key: written.field(key).type for key in ("id", *self.keep)})

    def append(self, first_row: int, rows: list[Row], vectors: np.ndarray) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        carried = self._carried(rows, self.row_ids(first_row, rows), first_row)
        if self.schema is None:
            self.schema = self._schema({key: array.type for key, array in carried.items()})
        offsets = np.arange(0, (len(rows) + 1) * self.dimension, self.dimension, dtype=np.int32)
        embedding = pa.ListArray.from_arrays(
            pa.array(offsets), pa.array(np.ascontiguousarray(vectors, self.dtype).reshape(-1))
        )
        columns = [
            carried["id"],
            pa.array([row.text for row in rows], pa.string()),
            *[carried[key] for key in self.keep],
            embedding,
        ]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        target = self._part(self.parts)
        with open_for_writing(target.with_name(target.name + ".tmp")) as file:
            pq.write_table(table, file)
            file.flush()
            os.fsync(file.fileno())
        target.with_name(target.name + ".tmp").replace(target)
        self.parts += 1

    def sync(self) -> dict[str, Any]:
        return {"parts": self.parts}

    def finish(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.schema is None:  # no rows: the types an input gives, else text
            self.schema = self._schema(
                {
                    key: self.types.get(key, pa.int64() if key == "id" else pa.string())
                    for key in ("id", *self.keep)
                }
            )
        temporary = self.partial / "complete.parquet.tmp"
        with open_for_writing(temporary) as file, pq.ParquetWriter(file, self.schema) as writer:
            for index in range(self.parts):
                writer.write_table(pq.read_table(self._part(index), schema=self.schema))
            if not self.parts:
                writer.write_table(self.schema.empty_table())
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self.output)
        self.discard()


OUTPUTS: dict[str, type[PartialOutput]] = {
    ".npy": _NpyOutput,
    ".jsonl": _JsonlOutput,
    ".parquet": _ParquetOutput,
}


# -- chunks -----------------------------------------------------------------------------------


def chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    """``rows`` in lists of ``size`` (the last one shorter)."""
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class TextDigest:
    """SHA-256 over the rows in order: texts, and ids and kept values where there are any.

    Each part is length-prefixed, so boundaries count.
    """

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def update(self, rows: Iterable[Row]) -> None:
        """Add ``rows`` (in order) to the digest."""
        for row in rows:
            parts = [row.text.encode("utf-8", "surrogatepass")]
            if row.id is not NO_ID or row.kept:
                parts.append(json.dumps([row.id, *row.kept], default=str).encode("utf-8"))
            for data in parts:
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
