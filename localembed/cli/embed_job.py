"""``localembed embed``'s job: the validated spec of one run, built from the arguments.

:class:`EmbedJob` checks every combination of options before anything is read or loaded, and
says what a resumed run must share with the run it continues (:meth:`EmbedJob.settings`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from localembed.cli.common import UsageError, config_from_args
from localembed.cli.corpus import INPUT_SUFFIXES, Source, open_source
from localembed.cli.outputs import OUTPUTS
from localembed.config import EncoderConfig
from localembed.precision import Precision  # noqa: TC001 (pydantic needs it at run time)

if TYPE_CHECKING:
    import numpy as np

    from localembed.corpus_context import CorpusContext

CHUNK_SIZE = 1024
"""Rows per chunk: the unit of streaming, progress and resume."""

InputFormat = Literal["txt", "jsonl", "csv", "tsv", "parquet"]


class EmbedJob(BaseModel):
    """One ``localembed embed`` run: what to read, how to embed it, where to write it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str
    """The input file; ``-`` for standard input."""
    output: Path
    """The output file: .npy, .jsonl or .parquet."""
    input_format: InputFormat
    """How to read the input (from its suffix unless named)."""
    column: str = "text"
    """The text column of a jsonl, csv, tsv or parquet input."""
    id_column: str | None = None
    """A column whose values become the output's ``id`` (default: the row number)."""
    keep_columns: tuple[str, ...] = ()
    """Input columns copied to a .jsonl or .parquet output."""
    chunk_size: int = Field(default=CHUNK_SIZE, ge=1)
    """Rows read, embedded and written at a time."""
    kind: Literal["document", "query"] = "document"
    """Embed the texts as documents or as queries (picks the instruction)."""
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    """The encoder's settings."""
    resume: bool = False
    """Continue the partial output of an interrupted run."""
    overwrite: bool = False
    """Replace an existing output (and, without ``resume``, an earlier partial output)."""
    progress: bool = False
    """Show the progress bar."""
    precision: Precision = "float32"
    """The output precision (see :mod:`localembed.precision`)."""
    ranges: Path | None = None
    """int8/uint8: a .npy of (2, dimension) calibration ranges; None: from the whole input,
    computed by a first pass over it (saved as ``OUTPUT.ranges.npy`` either way)."""
    build_context: int | None = Field(default=None, ge=1)
    """CDE models: draw this many input rows (seeded) and build the context from them, saved
    as ``OUTPUT.context.safetensors``; None: use ``encoder.context`` (``--context FILE``)."""
    context_seed: int = 0
    """The seed of ``build_context``'s sample."""
    oversample_context: bool = False
    """``build_context`` from an input with fewer rows repeats rows (else an error)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EmbedJob:
        """The job of parsed ``embed`` arguments; a wrong combination is a UsageError."""
        fmt = args.input_format or INPUT_SUFFIXES.get(Path(args.input).suffix.lower(), "txt")
        keep = tuple(key.strip() for key in (args.keep_columns or "").split(",") if key.strip())
        output = Path(args.output)
        problem = None
        if output.suffix.lower() not in OUTPUTS:
            problem = f"output must end in {', '.join(OUTPUTS)}, got {output.name}"
        elif fmt == "txt" and (args.column or args.id_column or keep):
            problem = (
                "--column, --id-column and --keep-columns apply to .jsonl, .csv, .tsv and "
                ".parquet inputs (.txt: a text a line)"
            )
        elif (args.id_column or keep) and not OUTPUTS[output.suffix.lower()].carries:
            problem = "--id-column and --keep-columns need a .jsonl or .parquet output"
        elif reserved := sorted({"id", "text", "embedding"} & set(keep)):
            problem = f"--keep-columns: {reserved[0]!r} is an output column of its own"
        elif len(set(keep)) < len(keep) or (args.id_column in keep):
            problem = "--keep-columns: each column once (and not the --id-column)"
        elif args.chunk_size < 1:
            problem = "--chunk-size must be at least 1"
        elif args.ranges is not None and args.precision not in ("int8", "uint8"):
            problem = "--ranges applies to --precision int8 or uint8"
        elif args.build_context is not None and args.context is not None:
            problem = "--build-context N builds a context: leave out --context FILE"
        elif args.build_context is not None and args.build_context < 1:
            problem = "--build-context N needs N >= 1 (documents in the context's sample)"
        elif args.build_context is not None and args.input == "-":
            problem = (
                "--build-context reads the input twice (sample, then embed), which standard "
                "input cannot give: build the context from a file, or pass --context FILE"
            )
        elif args.precision in ("int8", "uint8") and args.ranges is None and args.input == "-":
            problem = (
                f"--precision {args.precision} computes its ranges in a first pass over the "
                "input, which standard input cannot give: pass --ranges FILE"
            )
        if problem is not None:
            raise UsageError(problem)
        show = not args.quiet and (args.progress or sys.stderr.isatty())
        return cls.model_validate(
            {
                "input": args.input,
                "output": output,
                "input_format": fmt,
                "column": args.column or "text",
                "id_column": args.id_column,
                "keep_columns": keep,
                "chunk_size": args.chunk_size,
                "kind": args.kind,
                "encoder": config_from_args(args),
                "resume": args.resume,
                "overwrite": args.overwrite,
                "progress": show,
                "precision": args.precision,
                "ranges": args.ranges,
                "build_context": args.build_context,
                "context_seed": args.context_seed,
                "oversample_context": args.oversample_context,
            }
        )

    def settings(
        self,
        dimension: int,
        ranges: np.ndarray | None = None,
        context: CorpusContext | None = None,
    ) -> dict[str, Any]:
        """What a resumed run must share with the run it continues (as JSON data).

        A CDE context is recorded by its digest (its vectors and model), not its path: a
        resumed run with another context is refused, a moved file is not.
        """
        encoder = self.encoder.encoder_options()
        for name in ("cache", "cache_max_bytes"):  # change no vector: a resumed run may differ
            encoder.pop(name, None)
        encoder["context"] = None if context is None else f"sha256:{context.digest()}"
        settings = {
            "input_format": self.input_format,
            "column": self.column,
            "id_column": self.id_column,
            "keep_columns": list(self.keep_columns),
            "kind": self.kind,
            "chunk_size": self.chunk_size,
            "dimension": dimension,
            "encoder": encoder,
            "precision": self.precision,
            "ranges": None if ranges is None else ranges.tolist(),
        }
        data: dict[str, Any] = json.loads(json.dumps(settings))
        return data

    def open_source(self) -> Source:
        """The input, opened; its first row is read (a bad file or column fails now)."""
        source = open_source(
            self.input,
            self.input_format,
            self.column,
            id_column=self.id_column,
            keep=self.keep_columns,
            batch_rows=self.chunk_size,
        )
        first = list(itertools.islice(source.rows, 1))
        source.rows = itertools.chain(first, source.rows)
        return source
