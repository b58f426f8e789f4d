"""`localembed embed` loses no rows and writes nowhere it should not (issue 11, item 7; issue 14,
item 6).

Rows in == rows out, or the run fails naming the line: TSV has no quoting, CSV quoting is
strict, bytes that are not UTF-8 and lone surrogates are named by line. Output files are never
written through a symbolic link, and the output is checked before the model loads (these tests
pass a model that does not exist: the output error must come first). Input columns travel to
the output with --id-column / --keep-columns, also through an interruption and --resume.
"""

from __future__ import annotations

import io
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from localembed import get_encoder
from localembed.cli import main
from localembed.encoder import LocalEncoder
from tests.cli_helpers import InterruptedStdin

NO_MODEL = "/nonexistent/model-folder"


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def embedded_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


# -- rows in == rows out ----------------------------------------------------------------------


def test_tsv_has_no_quoting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A csv reader with quoting merges lines 2-4 into one row here (the old behaviour).
    texts = ['"a line that starts with a quote', "second", 'a "quoted" word', '"', ""]
    source = tmp_path / "in.tsv"
    source.write_text("id\ttext\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(texts)))
    output = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "embed", source, "-o", output)
    assert code == 0, err
    assert embedded_texts(output) == texts
    # Named, for a file without the suffix: the same rows.
    named = tmp_path / "in.data"
    named.write_bytes(source.read_bytes())
    code, _, err = run(
        capsys, "embed", named, "-o", tmp_path / "named.jsonl", "--input-format", "tsv"
    )
    assert code == 0, err
    assert embedded_texts(tmp_path / "named.jsonl") == texts


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ('id,text\n1,fine\n2,"never closed\n3,three\n4,four\n', 3),  # unterminated quote
        ('id,text\n1,"closed" then text\n2,two\n', 2),  # text after a closing quote
    ],
)
def test_csv_quoting_errors_name_the_line(
    content: str, line: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(content)
    output = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "embed", source, "-o", output)
    assert code == 1 and f"in.csv line {line}: malformed CSV" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not output.exists()


def test_csv_quoted_line_breaks_are_one_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text('text\n"two\nlines"\n"a ""quote"""\nplain\n')
    output = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "embed", source, "-o", output)
    assert code == 0, err
    assert embedded_texts(output) == ["two\nlines", 'a "quote"', "plain"]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("in.txt", b"fine\nbad \xff byte\n", "in.txt line 2: not UTF-8 (byte 9 of the file"),
        ("in.csv", b"text\nok\n\xe9t\xe9\n", "in.csv line 3: not UTF-8 (byte 8 of the file"),
        ("in.tsv", b"text\n\xed\xa0\x80\n", "in.tsv line 2: not UTF-8 (byte 5 of the file"),
        ("in.jsonl", b'{"text": "a"}\n{"text": "\xc3"}\n', "in.jsonl line 2: not UTF-8"),
        (
            "sur.jsonl",
            b'{"text": "a"}\n{"text": "x\\ud800"}\n',
            "sur.jsonl line 2: a lone surrogate",
        ),
    ],
)
def test_invalid_text_names_the_line(
    name: str, data: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / name
    source.write_bytes(data)
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "out.npy")
    assert code == 1 and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_lone_surrogate_from_a_text_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("fine\nbad \udc80\n"))
    code, _, err = run(capsys, "embed", "-", "-o", tmp_path / "out.npy")
    assert code == 1 and "stdin line 2: a lone surrogate '\\udc80' at character 4" in err


def test_lone_carriage_return_is_text_not_a_line_break(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"one\rstill one\r\ntwo\n")
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "out.jsonl")
    assert code == 0, err
    assert embedded_texts(tmp_path / "out.jsonl") == ["one\rstill one", "two"]


# -- where output goes ------------------------------------------------------------------------


@pytest.mark.parametrize("link", ["out.jsonl", "out.jsonl.partial", "out.jsonl.partial.json.tmp"])
def test_never_writes_through_a_symlink(
    link: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("a\nb\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / link).symlink_to(victim)
    for flags in ([], ["--overwrite"], ["--resume"]):
        code, _, err = run(capsys, "embed", source, "-o", tmp_path / "out.jsonl", *flags)
        assert code == 1 and "is a symbolic link" in err and link in err, (flags, err)
    assert victim.read_text() == "precious\n"
    assert (tmp_path / link).is_symlink()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing-folder", "output folder not found"),
        ("exists", "exists; pass --overwrite to replace it"),
        ("partial", "holds rows of an interrupted run"),
        ("link", "is a symbolic link"),
    ],
)
def test_output_is_checked_before_the_model_loads(
    setup: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("a\n")
    output = tmp_path / "out.npy"
    if setup == "missing-folder":
        output = tmp_path / "no" / "such" / "out.npy"
    elif setup == "exists":
        output.write_bytes(b"old")
    elif setup == "partial":
        (tmp_path / "out.npy.partial").write_bytes(b"")
    else:
        output.symlink_to(tmp_path / "elsewhere.npy")
    code, _, err = run(capsys, "embed", source, "-o", output, "--model", NO_MODEL)
    assert code == 1 and message in err, err
    assert "model" not in err.replace("--model", "")  # the model was never looked at


# -- columns carried to the output ------------------------------------------------------------


def write_table(path: Path, columns: dict[str, list[Any]]) -> Path:
    names = list(columns)
    rows = list(zip(*columns.values(), strict=True))
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(names, r, strict=True))) + "\n" for r in rows))
    elif path.suffix in {".csv", ".tsv"}:
        sep = "," if path.suffix == ".csv" else "\t"
        lines = [sep.join(names), *(sep.join(map(str, r)) for r in rows)]
        path.write_text("".join(line + "\n" for line in lines))
    else:
        pq.write_table(pa.table(columns), path, row_group_size=2)
    return path


COLUMNS = {
    "doc_id": [101, 102, 103],
    "body": ["the first body", "the second body", "the third body"],
    "stars": [5, 3, 4],
    "lang": ["en", "fr", "de"],
}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
def test_id_and_kept_columns_reach_jsonl_and_parquet(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_table(tmp_path / f"in{suffix}", COLUMNS)
    flags = ["--column", "body", "--id-column", "doc_id", "--keep-columns", "lang,stars"]
    expected = get_encoder().encode_documents(COLUMNS["body"])
    typed = suffix in {".jsonl", ".parquet"}  # csv and tsv fields are text
    ids = COLUMNS["doc_id"] if typed else [str(v) for v in COLUMNS["doc_id"]]
    stars = COLUMNS["stars"] if typed else [str(v) for v in COLUMNS["stars"]]
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "out.jsonl", *flags)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [list(row) for row in rows] == [["id", "text", "lang", "stars", "embedding"]] * 3
    assert [row["id"] for row in rows] == ids
    assert [row["lang"] for row in rows] == COLUMNS["lang"]
    assert [row["stars"] for row in rows] == stars
    np.testing.assert_allclose([row["embedding"] for row in rows], expected, atol=1e-7)
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "out.parquet", *flags)
    assert code == 0, err
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["id", "text", "lang", "stars", "embedding"]
    assert table.column("id").to_pylist() == ids and table.column("stars").to_pylist() == stars
    if suffix == ".parquet":  # the input's types are kept
        assert table.schema.field("stars").type == pa.int64()
    np.testing.assert_array_equal(np.asarray(table.column("embedding").to_pylist()), expected)


def test_column_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_table(tmp_path / "in.jsonl", COLUMNS)
    base = ["embed", source, "--column", "body"]
    code, _, err = run(capsys, *base, "-o", tmp_path / "o.npy", "--keep-columns", "lang")
    assert code == 2 and "need a .jsonl or .parquet output" in err
    code, _, err = run(capsys, *base, "-o", tmp_path / "o.jsonl", "--keep-columns", "text")
    assert code == 2 and "'text' is an output column of its own" in err
    code, _, err = run(
        capsys, *base, "-o", tmp_path / "o.jsonl", "--keep-columns", "nope", "--model", NO_MODEL
    )
    assert code == 1 and "no column 'nope'; columns found: doc_id, body, stars, lang" in err
    txt = tmp_path / "in.txt"
    txt.write_text("a\n")
    code, _, err = run(capsys, "embed", txt, "-o", tmp_path / "o.jsonl", "--id-column", "x")
    assert code == 2 and "apply to .jsonl, .csv, .tsv and .parquet inputs" in err


@pytest.mark.parametrize("output_format", ["jsonl", "parquet"])
def test_kept_columns_survive_an_interruption(
    output_format: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "".join(
        json.dumps({"key": f"k{i}", "text": f"row {i}", "n": i}) + "\n" for i in range(7)
    )
    flags = ["--input-format", "jsonl", "--chunk-size", "2", "--id-column", "key"]
    flags += ["--keep-columns", "n"]
    whole = tmp_path / f"whole.{output_format}"
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert run(capsys, "embed", "-", "-o", whole, *flags)[0] == 0
    output = tmp_path / f"out.{output_format}"
    monkeypatch.setattr(sys, "stdin", InterruptedStdin(text, lines=5))
    assert run(capsys, "embed", "-", "-o", output, *flags)[0] == 130
    # The kept values are part of what a resume checks: changed ids are refused.
    monkeypatch.setattr(sys, "stdin", io.StringIO(text.replace('"k1"', '"other"')))
    code, _, err = run(capsys, "embed", "-", "-o", output, *flags, "--resume")
    assert code == 1 and "the input changed" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, _, err = run(capsys, "embed", "-", "-o", output, *flags, "--resume")
    assert code == 0 and "resumed at row 4: embedded 3 rows" in err
    assert output.read_bytes() == whole.read_bytes()


# -- progress ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv", ".tsv", ".parquet"])
def test_progress_has_a_total_for_every_format(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = ["one", "two", "three", "four", "five"]
    if suffix == ".txt":
        source = tmp_path / "in.txt"
        source.write_text("".join(t + "\n" for t in texts))
    else:
        source = write_table(tmp_path / f"in{suffix}", {"text": texts})
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "o.npy", "--progress")
    assert code == 0, err
    assert "embedding: 100%" in err and "5/5 [" in err


def test_progress_is_redrawn_while_a_chunk_embeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("".join(f"text {i}\n" for i in range(6)))
    encode = LocalEncoder.encode

    def slow_encode(self: LocalEncoder, *args: Any, **kwargs: Any) -> Any:
        time.sleep(2.2)  # a chunk that takes a while, as on a large model
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(LocalEncoder, "encode", slow_encode)
    code, _, err = run(
        capsys, "embed", source, "-o", tmp_path / "o.npy", "--progress", "--chunk-size", "3"
    )
    assert code == 0, err
    frames = [frame for frame in re.split(r"[\r\n]", err) if frame.startswith("embedding:")]
    # Two chunks of 2.2 s, a frame at least every 0.5 s: far more frames than the 3 updates.
    assert len(frames) >= 6, frames
    assert all("/6 [" in frame for frame in frames)
    assert any("3/6" in frame and "<" in frame for frame in frames)  # the ETA


# -- review fixes: ids, blank lines, carried values, non-finite vectors -------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_null_id_is_an_error_naming_the_row(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A null id is never replaced by the row number (which may be another row's real id)."""
    source = write_table(
        tmp_path / f"in{suffix}", {"doc_id": [1, None, 0], "body": ["a", "b", "c"]}
    )
    flags = ["--column", "body", "--id-column", "doc_id"]
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "o.jsonl", *flags)
    where = "line 2" if suffix == ".jsonl" else "row 1"
    assert code == 1 and f"in{suffix} {where}: the id column 'doc_id' is null" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_csv_blank_lines_are_rows_or_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = tmp_path / "one.csv"
    one.write_text("text\nfirst\n\nthird\n")
    code, _, err = run(capsys, "embed", one, "-o", tmp_path / "one.jsonl", "--progress")
    assert code == 0, err
    assert embedded_texts(tmp_path / "one.jsonl") == ["first", "", "third"]  # rows in = rows out
    assert "3/3 [" in err
    two = tmp_path / "two.csv"
    two.write_text("text,lang\nfirst,en\n\nthird,fr\n")
    code, _, err = run(capsys, "embed", two, "-o", tmp_path / "two.jsonl")
    assert code == 1 and "two.csv line 3: 0 fields, the header has 2" in err


def test_parquet_id_and_kept_columns_may_repeat_the_text_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_table(tmp_path / "in.parquet", {"body": ["a", "b"], "lang": ["en", "fr"]})
    flags = ["--column", "body", "--id-column", "body", "--keep-columns", "lang"]
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "o.parquet", *flags)
    assert code == 0, err
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.column("id").to_pylist() == ["a", "b"] == table.column("text").to_pylist()
    assert table.column("lang").to_pylist() == ["en", "fr"]
    flags = ["--column", "body", "--keep-columns", "body,lang"]
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "o.jsonl", *flags)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [(r["id"], r["text"], r["body"], r["lang"]) for r in rows] == [
        (0, "a", "a", "en"),
        (1, "b", "b", "fr"),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        '{"text": "ok", "key": "\\udc80", "n": 1}',
        '{"text": "ok", "key": "k", "n": {"deep": ["x", "\\ud83d"]}}',
        '{"text": "ok", "key": "k", "n": NaN}',
        '{"text": "ok", "key": "k", "n": [Infinity]}',
    ],
)
def test_carried_jsonl_values_are_checked_while_reading(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lone surrogates and NaN in id or kept values: an error naming the line, not a late one."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "fine", "key": "k0", "n": 0}\n' + bad + "\n")
    flags = ["--id-column", "key", "--keep-columns", "n"]
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "o.jsonl", *flags)
    assert code == 1 and "in.jsonl line 2:" in err, err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_kept_integer_too_large_for_parquet_names_the_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"text": f"t{i}", "key": f"k{i}", "n": 2**70}) + "\n" for i in range(3))
    )
    flags = ["--id-column", "key", "--keep-columns", "n"]
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "o.parquet", *flags)
    assert code == 1 and "column 'n' of rows 0..2: values do not fit" in err, err
    assert "Traceback" not in err


def test_nan_kept_value_from_parquet_is_not_written_as_bare_nan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_table(tmp_path / "in.parquet", {"text": ["a", "b"], "x": [1.0, float("nan")]})
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "o.jsonl", "--keep-columns", "x")
    assert code == 1 and "row 1: a kept value is NaN or infinite" in err, err


def test_non_finite_vectors_name_the_line_and_keep_the_rows_before(
    nan_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "cat" embeds to NaN in this model: the run stops at its line, resumable after the rows."""
    source = tmp_path / "in.txt"
    source.write_text("dog\nbird\nfish\na cat\nhorse\n")
    output = tmp_path / "o.npy"
    flags = ["--model", nan_bert_dir, "--pooling", "mean", "--chunk-size", "2"]
    code, _, err = run(capsys, "embed", source, "-o", output, *flags)
    assert code == 1 and "in.txt line 4: row 3 gave NaN or infinite values" in err, err
    assert "keeps the first 3 rows" in err
    assert not output.exists()
    state = json.loads((tmp_path / "o.npy.partial.json").read_text())
    assert state["rows"] == 3
