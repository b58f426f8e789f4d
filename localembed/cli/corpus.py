"""Reading corpora row by row (the input side of ``localembed embed``), and chunking them.

Inputs (:func:`open_source`): text lines, JSON lines, CSV/TSV and parquet, streamed row by
row from a chosen column. Writing is :mod:`localembed.cli.outputs`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from localembed.errors import InputError

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
                raise InputError(msg) from None
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
        raise InputError(msg) from None
    return text


def _checked_id(value: Any, where: str, column: str) -> Any:
    """An id column's value; null is an error (the row number would duplicate a real id)."""
    if value is None:
        msg = (
            f"{where}: the id column {column!r} is null; every row needs an id (or drop "
            f"--id-column to number the rows)"
        )
        raise InputError(msg)
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
        raise InputError(msg)
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
    raise InputError(msg)


def _missing_columns(name: str, wanted: Iterable[str], found: list[str]) -> None:
    """Refuse columns of ``wanted`` that ``found`` lacks, naming the columns there are."""
    missing = [column for column in wanted if column not in found]
    if missing:
        msg = (
            f"{name}: no column {missing[0]!r}; columns found: "
            f"{', '.join(map(str, found)) or 'none'} (choose one with --column, --id-column "
            f"or --keep-columns)"
        )
        raise InputError(msg)


def _repeated_columns(where: str, wanted: Iterable[str], names: list[str]) -> None:
    """Refuse a wanted column that ``names`` (a header, an object's keys) holds twice."""
    repeated = [column for column in dict.fromkeys(wanted) if names.count(column) > 1]
    if repeated:
        msg = (
            f"{where}: the column {repeated[0]!r} is named twice; which one is meant is not "
            f"known (rename one of them)"
        )
        raise InputError(msg)


class _JsonObject(dict):  # type: ignore[type-arg]
    """A JSON object that remembers its keys as written (a repeated key included)."""

    keys_written: list[str]


def _json_object(pairs: list[tuple[str, Any]]) -> _JsonObject:
    value = _JsonObject(pairs)
    value.keys_written = [key for key, _ in pairs]
    return value


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
            row = json.loads(line, object_pairs_hook=_json_object)
        except json.JSONDecodeError as error:
            msg = f"{name} line {number}: not valid JSON ({error.msg})"
            raise InputError(msg) from None
        if not isinstance(row, dict):
            msg = f"{name} line {number}: expected a JSON object, got {type(row).__name__}"
            raise InputError(msg)
        _missing_columns(f"{name} line {number}", wanted, list(row))
        _repeated_columns(f"{name} line {number}", wanted, getattr(row, "keys_written", []))
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
            raise InputError(msg) from None
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
    wanted = [column, *([id_column] if id_column else []), *keep]
    _missing_columns(name, wanted, header)
    _repeated_columns(name, wanted, header)
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
            raise InputError(msg)
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
        raise InputError(msg)
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
        raise InputError(msg)
    if fmt == "txt" and (id_column or keep):
        msg = "a .txt input has no columns to carry (one text a line)"
        raise InputError(msg)
    name = "stdin" if path == "-" else path
    if fmt == "parquet":
        if path == "-":
            msg = "parquet cannot be read from standard input; give the file"
            raise InputError(msg)
        return _open_parquet(path, column, id_column, keep, batch_rows)
    if fmt == "txt":
        rows = _text_rows(path)
    elif fmt == "jsonl":
        rows = _jsonl_rows(path, column, id_column, keep)
    else:
        rows = _delimited_rows(path, fmt, column, id_column, keep)
    return Source(name, rows, lambda: _count_lines(path, fmt), id_column, keep)


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
