"""`localembed embed --precision P [--ranges FILE]`: every precision in every output format.

The oracle is ``encoder.encode_documents(texts, precision=P)`` (itself tested equal to
sentence-transformers' ``quantize_embeddings``): int8/uint8 ranges come from the whole input, as
the encoder computes them from all the texts it is given, and are saved as
``OUTPUT.ranges.npy``; reused for a query they give sentence-transformers' codes.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sentence_transformers.quantization import quantize_embeddings

from localembed import get_encoder
from localembed.precision import PRECISIONS, calibration_ranges
from tests.cli_helpers import OUTPUTS, TEXTS, InterruptedStdin, leftovers, run, write_input

ARROW = {"float32": pa.float32(), "float16": pa.float16(), "int8": pa.int8(), "uint8": pa.uint8()}


def read_codes(path: Path) -> tuple[np.ndarray, pa.Schema | None]:
    """The output's vectors in their own dtype (parquet: and its schema)."""
    if path.suffix == ".npy":
        return np.load(path), None
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        return np.asarray([row["embedding"] for row in rows]), None
    table = pq.read_table(path)
    return np.asarray(table.column("embedding").to_pylist()), table.schema


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_in_every_output_format_equals_the_encoder(
    precision: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encoder = get_encoder()
    expected = encoder.encode_documents(TEXTS, precision=precision)  # type: ignore[arg-type]
    source = write_input(tmp_path / "in.jsonl", TEXTS)
    scalar = precision in ("int8", "uint8")
    for output_format in OUTPUTS:
        output = tmp_path / f"out.{output_format}"
        code, _, err = run(capsys, "embed", source, "-o", output, "--precision", precision)
        assert code == 0, err
        assert f"5 x {expected.shape[1]} {precision}" in err
        codes, schema = read_codes(output)
        if output_format == "npy":
            assert codes.dtype == expected.dtype
        elif output_format == "jsonl" and expected.dtype.kind in "iu":
            assert codes.dtype.kind == "i"  # JSON ints, not floats
        np.testing.assert_array_equal(codes.astype(expected.dtype), expected)
        if schema is not None:
            item = ARROW.get(precision, pa.int8() if precision == "binary" else pa.uint8())
            assert schema.field("embedding").type == pa.list_(item)
            metadata = json.loads(schema.metadata[b"localembed"])
            assert metadata["precision"] == precision
        ranges_file = tmp_path / f"out.{output_format}.ranges.npy"
        assert ranges_file.exists() == scalar
        if scalar:
            ranges = calibration_ranges(encoder.encode_documents(TEXTS))
            np.testing.assert_array_equal(np.load(ranges_file), ranges)
            if schema is not None:
                assert metadata["ranges"] == ranges.tolist()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_saved_ranges_quantize_a_later_query_as_sentence_transformers(
    precision: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encoder = get_encoder()
    docs = write_input(tmp_path / "docs.txt", TEXTS)
    assert run(capsys, "embed", docs, "-o", tmp_path / "docs.npy", "--precision", precision)[0] == 0
    ranges_file = tmp_path / "docs.npy.ranges.npy"
    queries = ["which line has a comma?", "émoji"]
    query_file = write_input(tmp_path / "q.txt", queries)
    output = tmp_path / "q.jsonl"
    argv = ["--kind", "query", "--precision", precision, "--ranges", ranges_file]
    code, _, err = run(capsys, "embed", query_file, "-o", output, *argv)
    assert code == 0, err
    codes, _ = read_codes(output)
    ranges = np.load(ranges_file)
    oracle = quantize_embeddings(encoder.encode_queries(queries), precision, ranges=ranges)
    np.testing.assert_array_equal(codes, oracle)
    # In Python: np.load + encode(..., ranges=...) gives the same codes, one query at a time.
    single = encoder.encode_queries(queries[:1], precision=precision, ranges=ranges)  # type: ignore[arg-type]
    np.testing.assert_array_equal(single[0], oracle[0])
    np.testing.assert_array_equal(np.load(tmp_path / "q.jsonl.ranges.npy"), ranges)


def test_precision_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_input(tmp_path / "in.txt", TEXTS)
    output = tmp_path / "out.npy"
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 3), np.float32))
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((2, get_encoder().dimension), np.nan, np.float32))
    cases = [
        (["--precision", "float16", "--ranges", bad], "--ranges applies to --precision int8"),
        (["--precision", "int8", "--ranges", bad], "ranges must have shape (2, 384)"),
        (["--precision", "int8", "--ranges", nan], "must be finite float32"),
        (["--precision", "int8", "--ranges", tmp_path / "none.npy"], "not a readable .npy"),
    ]
    for argv, words in cases:
        code, _, err = run(capsys, "embed", source, "-o", output, *argv)
        assert code != 0 and words in err, (argv, err)
    one = write_input(tmp_path / "one.txt", ["only one"])
    code, _, err = run(capsys, "embed", one, "-o", output, "--precision", "uint8")
    assert code != 0 and "at least 2 rows" in err and "--ranges FILE" in err
    code, _, err = run(capsys, "embed", "-", "-o", output, "--precision", "int8")
    assert code != 0 and "standard input" in err
    with pytest.raises(SystemExit):
        run(capsys, "embed", source, "-o", output, "--precision", "int4")
    assert "invalid choice: 'int4'" in capsys.readouterr().err
    assert not output.exists() and leftovers(tmp_path) == []


def test_resume_checks_precision_and_ranges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "".join(f"line {i} " + "more words " * (i % 4) + "\n" for i in range(10))
    ranges_a, ranges_b = tmp_path / "a.npy", tmp_path / "b.npy"
    vectors = get_encoder().encode_documents(text.splitlines())
    np.save(ranges_a, calibration_ranges(vectors))
    np.save(ranges_b, calibration_ranges(vectors[:5]))
    common = ["--chunk-size", "3", "--precision", "int8"]
    whole = tmp_path / "whole.parquet"
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert run(capsys, "embed", "-", "-o", whole, *common, "--ranges", ranges_a)[0] == 0
    output = tmp_path / "out.parquet"
    monkeypatch.setattr(sys, "stdin", InterruptedStdin(text, lines=7))
    assert run(capsys, "embed", "-", "-o", output, *common, "--ranges", ranges_a)[0] == 130
    for argv, words in [
        (["--ranges", ranges_b], "ranges"),
        (["--ranges", ranges_a, "--precision", "uint8"], "precision 'int8' -> 'uint8'"),
    ]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))
        code, _, err = run(capsys, "embed", "-", "-o", output, *common, *argv, "--resume")
        assert code == 1 and "other settings" in err and words in err, err
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, _, err = run(
        capsys, "embed", "-", "-o", output, *common, "--ranges", ranges_a, "--resume"
    )
    assert code == 0 and "resumed at row 6" in err, err
    assert pq.read_table(output).equals(pq.read_table(whole))
