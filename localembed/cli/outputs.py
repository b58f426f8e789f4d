"""Writing corpora in chunks, resumably (the output side of ``localembed embed``).

Outputs (:data:`OUTPUTS`): .npy, .jsonl and .parquet written to ``OUTPUT.partial``; after
each chunk the data is flushed to disk and ``OUTPUT.partial.json`` records the rows written
(with a digest of their texts and the settings). ``OUTPUT`` appears, by rename, only when
every row is written, so it is never half-written; a resumed run checks the recorded rows
and continues after them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from localembed.cli.corpus import NO_ID, Row
from localembed.errors import InputError

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
        raise InputError(msg)


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
        raise InputError(msg)
    folder = output.parent
    if not folder.is_dir():
        msg = f"output folder not found: {folder} (create it first)"
        raise InputError(msg)
    paths = PartialOutput.paths(output)
    for path in (output, *paths):
        refuse_link(path)
    if output.is_dir():
        msg = f"{output} is a folder; give a file name"
        raise InputError(msg)
    if output.exists() and not overwrite:
        msg = f"{output} exists; pass --overwrite to replace it"
        raise InputError(msg)
    partial = paths[0]
    if (partial.exists() or paths[1].exists()) and not (resume or overwrite):
        msg = (
            f"{partial} holds rows of an interrupted run: pass --resume to continue it, "
            f"or --overwrite to start again"
        )
        raise InputError(msg)


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
            raise InputError(msg) from None
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
            raise InputError(msg)
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
                raise InputError(msg) from None
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
                raise InputError(msg) from None
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
            raise InputError(msg)
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
