"""The `localembed` command: embed (formats, streaming, resume), similarity, tokens, info, bench.

Every vector is compared with the single-process encoder (`get_encoder(...)`), exactly: `embed`
encodes chunk by chunk, so a file of fewer rows than `--chunk-size` must hold exactly
`encode_documents(texts)`, and a chunked one exactly the chunks' vectors.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from localembed import get_encoder
from localembed.cli import EXAMPLES, main
from localembed.plots import similarity_heatmap
from tests.cli_helpers import (
    OUTPUTS,
    TEXTS,
    InterruptedStdin,
    leftovers,
    read_output,
    run,
    start_embed,
    wait_for_rows,
    write_input,
)

INPUTS = ["txt", "jsonl", "csv", "tsv", "parquet"]


# -- embed: formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("source_format", INPUTS)
def test_every_input_format_to_every_output_format(
    source_format: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = get_encoder().encode_documents(TEXTS)
    source = write_input(tmp_path / f"in.{source_format}", TEXTS)
    for output_format in OUTPUTS:
        output = tmp_path / f"out.{output_format}"
        code, _, err = run(capsys, "embed", source, "-o", output)
        assert code == 0, err
        assert "embedded 5 rows" in err and "wrote" in err
        vectors, texts = read_output(output)
        np.testing.assert_array_equal(vectors, expected)
        assert texts in (None, TEXTS)
    assert leftovers(tmp_path) == []


def test_parquet_output_schema_and_npy_is_a_plain_array(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_input(tmp_path / "in.txt", TEXTS)
    assert run(capsys, "embed", source, "-o", tmp_path / "out.parquet")[0] == 0
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.schema.field("id").type == pa.int64()
    metadata = json.loads(table.schema.metadata[b"localembed"])
    assert metadata["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert metadata["pooling"] == "mean" and metadata["kind"] == "document"
    assert run(capsys, "embed", source, "-o", tmp_path / "out.npy")[0] == 0
    memmap = np.load(tmp_path / "out.npy", mmap_mode="r")
    assert memmap.shape == (5, 384) and memmap.dtype == np.float32


def test_chunks_stream_in_order_with_exact_chunk_vectors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = [f"sentence number {i} " + "word " * (i % 7) for i in range(11)]
    source = write_input(tmp_path / "in.jsonl", texts)
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "out.npy", "--chunk-size", 4)
    assert code == 0, err
    encoder = get_encoder()
    chunks = [encoder.encode_documents(texts[i : i + 4]) for i in range(0, 11, 4)]
    vectors = np.load(tmp_path / "out.npy")
    np.testing.assert_array_equal(vectors, np.concatenate(chunks))
    # The same as one call up to batch-neighbour rounding (the encoder's guarantee).
    np.testing.assert_allclose(vectors, encoder.encode_documents(texts), atol=1e-5)


def test_stdin_and_empty_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("one\r\ntwo\n"))
    assert run(capsys, "embed", "-", "-o", tmp_path / "stdin.npy")[0] == 0
    np.testing.assert_array_equal(
        np.load(tmp_path / "stdin.npy"), get_encoder().encode_documents(["one", "two"])
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"body": "x"}\n\n{"body": "y"}\n'))
    code, _, err = run(
        capsys,
        "embed",
        "-",
        "-o",
        tmp_path / "s.jsonl",
        "--input-format",
        "jsonl",
        "--column",
        "body",
    )
    assert code == 0, err
    assert read_output(tmp_path / "s.jsonl")[1] == ["x", "y"]
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for output_format in OUTPUTS:
        assert run(capsys, "embed", empty, "-o", tmp_path / f"empty.{output_format}")[0] == 0
        vectors, texts = read_output(tmp_path / f"empty.{output_format}")
        assert vectors.size == 0 and texts in (None, [])
    assert np.load(tmp_path / "empty.npy").shape == (0, 384)


# -- embed: columns and bad input -------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_column_choice_and_missing_column(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies = ["the body of one", "the body of two"]
    source = write_input(
        tmp_path / f"in{suffix}", bodies, column="body", title=["title one", "title two"]
    )
    output = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "embed", source, "-o", output, "--column", "body")
    assert code == 0, err
    vectors, texts = read_output(output)
    assert texts == bodies
    np.testing.assert_array_equal(vectors, get_encoder().encode_documents(bodies))
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "other.npy")
    assert code == 1
    assert "no column 'text'; columns found: body, title" in err
    assert "--column" in err and len(err.strip().splitlines()) == 1
    assert leftovers(tmp_path) == []


def test_bad_rows_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "null.jsonl": ('{"text": "fine"}\n{"text": null}\n', "null.jsonl line 2: 'text' is null"),
        "number.jsonl": ('{"text": "a"}\n\n{"text": 3}\n', "number.jsonl line 3: 'text' is a int"),
        "list.jsonl": ('["text"]\n', "list.jsonl line 1: expected a JSON object, got list"),
        "broken.jsonl": ('{"text": "a"\n', "broken.jsonl line 1: not valid JSON"),
        "short.csv": ("id,text\n1,fine\n2\n", "short.csv line 3: 1 fields, the header has 2"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content)
        code, _, err = run(capsys, "embed", tmp_path / name, "-o", tmp_path / "x.npy")
        assert code == 1 and message in err, err
        assert "Traceback" not in err
    pq.write_table(pa.table({"text": ["a", None, "c"]}), tmp_path / "null.parquet")
    code, _, err = run(capsys, "embed", tmp_path / "null.parquet", "-o", tmp_path / "x.npy")
    assert code == 1 and "null.parquet row 1: 'text' is null, not a string" in err
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    code, _, err = run(capsys, "embed", tmp_path / "ints.parquet", "-o", tmp_path / "x.npy")
    assert code == 1 and "column 'text' holds int64, not text" in err
    assert leftovers(tmp_path) == []


def test_usage_and_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_input(tmp_path / "in.txt", ["a"])
    code, _, err = run(capsys, "embed", tmp_path / "missing.txt", "-o", tmp_path / "x.npy")
    assert code == 1 and "missing.txt" in err
    assert run(capsys, "embed", "-", "-o", tmp_path / "x.csv")[0] == 2
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "x.npy", "--column", "body")
    assert code == 2 and "--column, --id-column and --keep-columns apply to" in err
    code, _, err = run(capsys, "info", tmp_path / "no-such-model")
    assert code == 1 and "model directory not found" in err
    # Usage errors exit 2 and name the flag and what it accepts (issue 19 item 5).
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "x.npy", "--pooling", "clss")
    assert code == 2 and err.startswith("localembed embed: error: --pooling: unknown pooling")
    assert "valid: auto, cls, mean, max, last_token, weighted_mean" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "x.npy", "--max-length", 0)
    assert code == 2 and "localembed embed: error: --max-length: Input should be greater" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "tokens", "x", "--model", "")
    assert code == 2 and "--model: model must name a directory" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", str(source), "-o", "x.npy", "--dtype", "float64"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'float64'" in capsys.readouterr().err


# -- embed: model flags reach the config ------------------------------------------------------


def test_flags_reach_the_encoder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    texts = ["A cat sits on the mat.", "Stock markets fell sharply today."]
    source = write_input(tmp_path / "in.txt", texts)
    messages = []

    def embed(*flags: Any) -> np.ndarray:
        output = tmp_path / "out.npy"
        code, _, err = run(capsys, "embed", source, "-o", output, "--overwrite", *flags)
        assert code == 0, err
        messages.append(err)
        return np.load(output)

    default = get_encoder()
    cls = embed("--pooling", "cls")
    np.testing.assert_array_equal(cls, get_encoder(pooling="cls").encode_documents(texts))
    assert not np.allclose(cls, default.encode_documents(texts), atol=1e-3)
    instructed = embed("--instruction", "passage: ")
    np.testing.assert_array_equal(instructed, default.encode([f"passage: {t}" for t in texts]))
    query = embed("--kind", "query", "--instruction", "Q: {text} ?")
    np.testing.assert_array_equal(query, default.encode([f"Q: {t} ?" for t in texts]))
    caplog.clear()
    raw = embed("--no-normalize", "--max-length", 6, "--batch-size", 1)
    # The encoder's own warning reaches the user (one per chunk: here, one).
    warnings = [r for r in caplog.records if "longer than 6 tokens" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    expected = get_encoder(normalize=False, max_length=6, batch_size=1).encode_documents(texts)
    np.testing.assert_array_equal(raw, expected)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_info_prints_resolved_settings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["pooling"] == "mean"
    assert info["dimension"] == 384
    assert info["max_length"] == 256
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["sources"]["pooling"] == "sentence-transformers"
    code, out, _ = run(capsys, "info")
    assert "pooling: 'mean'  (sentence-transformers)" in out
    code, out, _ = run(capsys, "info", "--pooling", "cls", "--instruction", "doc: ", "--json")
    info = json.loads(out)
    assert info["pooling"] == "cls" and info["sources"]["pooling"] == "argument"
    assert info["document_instruction"] == "doc: " and info["query_instruction"] == ""


def test_info_takes_a_model_as_argument_or_flag(
    tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["info", tiny_bert_dir, "--json"], ["info", "--model", tiny_bert_dir, "--json"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and json.loads(out)["dimension"] == 32
    code, _, err = run(capsys, "info", tiny_bert_dir, "--model", "other")
    assert code == 2 and "give the model once" in err


# -- embed: resume, interruption, refusal to overwrite ----------------------------------------


@pytest.mark.parametrize("output_format", OUTPUTS)
def test_resume_after_interruption_equals_an_uninterrupted_run(
    output_format: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "".join(f"line {i} " + "more words " * (i % 4) + "\n" for i in range(10))
    common = ["--chunk-size", "3", "--progress"]
    whole = tmp_path / f"whole.{output_format}"
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert run(capsys, "embed", "-", "-o", whole, *common)[0] == 0

    output = tmp_path / f"out.{output_format}"
    # Ctrl-C while reading the 8th line: chunks [0-2] and [3-5] are written, [6-8] is lost.
    monkeypatch.setattr(sys, "stdin", InterruptedStdin(text, lines=7))
    code, _, err = run(capsys, "embed", "-", "-o", output, *common)
    assert code == 130
    assert "interrupted after 6 rows" in err and "--resume" in err
    assert not output.exists()
    partial = f"out.{output_format}.partial"
    assert leftovers(tmp_path) == [partial, f"{partial}.json"]

    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, _, err = run(capsys, "embed", "-", "-o", output, *common)
    assert code == 1 and "--resume to continue it, or --overwrite" in err
    assert leftovers(tmp_path)  # the refusal removed nothing

    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, _, err = run(capsys, "embed", "-", "-o", output, *common, "--resume")
    assert code == 0, err
    # Rows 0-5 were not embedded again: the progress bar starts at 6, 4 rows are embedded.
    assert "resumed at row 6: embedded 4 rows" in err
    assert "embedding: 6row [" in err and "embedding: 10row [" in err and "row/s]" in err
    assert output.read_bytes() == whole.read_bytes()
    assert leftovers(tmp_path) == []


def test_resume_refuses_other_settings_or_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "".join(f"text {i}\n" for i in range(6))
    output = tmp_path / "out.npy"
    monkeypatch.setattr(sys, "stdin", InterruptedStdin(text, lines=4))
    assert run(capsys, "embed", "-", "-o", output, "--chunk-size", "2")[0] == 130
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, _, err = run(
        capsys, "embed", "-", "-o", output, "--chunk-size", "2", "--resume", "--pooling", "cls"
    )
    assert code == 1 and "other settings (encoder.pooling 'auto' -> 'cls')" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, _, err = run(capsys, "embed", "-", "-o", output, "--chunk-size", "3", "--resume")
    assert code == 1 and "chunk_size 2 -> 3" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("changed\n" + text))
    code, _, err = run(capsys, "embed", "-", "-o", output, "--chunk-size", "2", "--resume")
    assert code == 1 and "the input changed" in err
    # --overwrite starts again from row 0.
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, _, err = run(capsys, "embed", "-", "-o", output, "--chunk-size", "2", "--overwrite")
    assert code == 0 and "embedded 6 rows" in err and "resumed" not in err
    assert leftovers(tmp_path) == []


def test_existing_output_needs_overwrite_and_early_interrupt_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_input(tmp_path / "in.txt", ["a", "b"])
    output = tmp_path / "out.jsonl"
    output.write_text("previous\n")
    code, _, err = run(capsys, "embed", source, "-o", output)
    assert code == 1 and "exists; pass --overwrite" in err
    monkeypatch.setattr(sys, "stdin", InterruptedStdin("a\nb\n", lines=1))
    code, _, err = run(capsys, "embed", "-", "-o", output, "--overwrite")
    assert code == 130 and "interrupted after 0 rows; no output was written" in err
    assert output.read_text() == "previous\n"
    assert leftovers(tmp_path) == []
    assert run(capsys, "embed", source, "-o", output, "--overwrite")[0] == 0
    assert read_output(output)[1] == ["a", "b"]


def test_an_error_midway_keeps_the_rows_for_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"text": f"row {i}"} for i in range(7)]
    source = tmp_path / "in.jsonl"
    broken = [*rows[:5], {"text": None}, rows[6]]
    source.write_text("".join(json.dumps(row) + "\n" for row in broken))
    output = tmp_path / "out.parquet"
    # A file is read once before the model loads: its bad row fails first, nothing written.
    code, _, err = run(capsys, "embed", source, "-o", output, "--chunk-size", "2")
    assert code == 1 and "in.jsonl line 6: 'text' is null" in err
    assert leftovers(tmp_path) == []
    # Standard input streams: the rows before the bad one are kept for --resume.
    stream = ["-", "--input-format", "jsonl", "-o", output, "--chunk-size", "2"]
    monkeypatch.setattr(sys, "stdin", io.StringIO(source.read_text()))
    code, _, err = run(capsys, "embed", *stream)
    assert code == 1 and "stdin line 6: 'text' is null" in err
    assert "keeps the first 4 rows" in err and len(err.strip().splitlines()) == 1
    fixed = "".join(json.dumps(row) + "\n" for row in rows)
    monkeypatch.setattr(sys, "stdin", io.StringIO(fixed))
    code, _, err = run(capsys, "embed", *stream, "--resume")
    assert code == 0 and "resumed at row 4: embedded 3 rows" in err
    vectors, texts = read_output(output)
    assert texts == [row["text"] for row in rows]
    encoder = get_encoder()
    expected = [encoder.encode_documents(texts[i : i + 2]) for i in range(0, 7, 2)]
    np.testing.assert_array_equal(vectors, np.concatenate(expected))


def test_sigint_to_a_running_embed_then_resume(
    tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_input(tmp_path / "big.txt", [f"line {i} of a long input" for i in range(1500)])
    output = tmp_path / "vectors.npy"
    flags = ["--model", str(tiny_bert_dir), "--chunk-size", "16"]
    child = start_embed(source, output, flags)
    wait_for_rows(child, output, 32)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted after" in err and "Traceback" not in err
    written = int(err.split("interrupted after ")[1].split()[0])
    assert 32 <= written < 1500 and written % 16 == 0
    assert not output.exists()

    code, _, err = run(capsys, "embed", source, "-o", output, *flags, "--resume")
    assert code == 0 and f"resumed at row {written}: embedded {1500 - written} rows" in err
    whole = tmp_path / "whole.npy"
    assert run(capsys, "embed", source, "-o", whole, *flags)[0] == 0
    assert output.read_bytes() == whole.read_bytes()


# -- similarity -------------------------------------------------------------------------------


def test_similarity_matrix_and_heatmap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell sharply."]
    vectors = get_encoder().encode_documents(texts).astype(np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = unit @ unit.T
    code, out, _ = run(capsys, "similarity", *texts)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["[1]", "[2]", "[3]"]
    assert lines[1].startswith("[1] A cat sits on the mat.")
    printed = np.asarray([[float(v) for v in line.split()[-3:]] for line in lines[1:]])
    np.testing.assert_array_equal(printed, np.round(expected, 3))
    assert len({line.index(line.split()[-1]) for line in lines[1:]}) == 1  # columns aligned
    assert expected[0, 1] > expected[0, 2] + 0.3  # cat ~ kitten, not ~ stocks

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(texts[1:]) + "\n")
    image = tmp_path / "heatmap.png"
    code, out, err = run(
        capsys, "similarity", texts[0], "--file", sentences, "--plot", image, "--json"
    )
    assert code == 0 and f"wrote {image}" in err
    report = json.loads(out)
    assert report["texts"] == texts
    np.testing.assert_allclose(report["matrix"], expected, atol=1e-12)
    import matplotlib.image

    pixels = matplotlib.image.imread(image)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 400
    assert pixels[..., :3].std() > 0.1  # not a blank image
    assert run(capsys, "similarity")[0] == 2


def test_similarity_heatmap_function(tmp_path: Path) -> None:
    matrix = np.random.default_rng(0).uniform(-1, 1, size=(3, 40))
    path = similarity_heatmap(
        matrix, ["a", "b", "c"], [f"tok{i}" for i in range(40)], tmp_path / "h.svg", title="x"
    )
    assert path.read_text().startswith("<?xml")
    with pytest.raises(ValueError, match="needs 3 row labels and 40 column labels"):
        similarity_heatmap(matrix, ["a"], ["b"], tmp_path / "bad.png")


# -- tokens -----------------------------------------------------------------------------------


def test_tokens_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    text = "Embeddings turn text into vectors."
    tokenizer = get_encoder().tokenizer
    ids = tokenizer(text)["input_ids"]
    code, out, _ = run(capsys, "tokens", text)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"text: {text!r}"
    assert lines[2].split() == ["0", "[CLS]", "101", "special"]
    assert lines[-2].split() == [str(len(ids) - 1), "[SEP]", "102", "special"]
    assert f"{len(ids)} tokens (special tokens included); max_length 256" == lines[-1]
    code, out, _ = run(capsys, "tokens", text, "--json")
    report = json.loads(out)
    assert [t["id"] for t in report["tokens"]] == ids
    assert [t["piece"] for t in report["tokens"]] == tokenizer.convert_ids_to_tokens(ids)
    assert [t["special"] for t in report["tokens"]] == [True] + [False] * (len(ids) - 2) + [True]
    assert report["count"] == len(ids) and not report["truncated"]


def test_tokens_warns_about_truncation_and_shows_the_instruction(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = "one two three four five six seven eight nine ten"
    code, out, err = run(
        capsys, "tokens", text, "--max-length", 6, "--instruction", "query: ", "--kind", "query"
    )
    assert code == 0
    assert "(instruction 'query: ')" in out and "'query: one two" in out
    assert "warning: 14 tokens > max_length 6: only the first 6 are embedded" in err
    code, out, _ = run(capsys, "tokens", text, "--max-length", 6, "--json")
    report = json.loads(out)
    assert report["truncated"] and report["count"] == 12 and len(report["tokens"]) == 6
    code, out, _ = run(capsys, "tokens", text, "--max-length", 6, "--long-text", "chunk", "--json")
    report = json.loads(out)
    assert report["windows"] > 1 and not report["truncated"]


# -- bench ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_quick_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from localembed import hardware
    from localembed.cli import contention

    result = tmp_path / "bench.json"
    code, out, _ = run(
        capsys,
        "bench",
        "--contenders",
        "localembed fp32,sentence-transformers",
        "--short",
        8,
        "--docs",
        2,
        "--queries",
        2,
        "--rounds",
        1,
        "--no-stream",
        "--contention",
        2,
        "--json",
        result,
    )
    assert code == 0
    report = json.loads(result.read_text())
    busy = {row["name"]: row for row in report["contention"]}
    assert set(busy) == {
        "sentence-transformers",
        "localembed fp32 (library defaults)",
        contention.ADAPTIVE_CONTENDER,
        "localembed fp32 (CLI/server settings)",
    }
    switched = busy[contention.ADAPTIVE_CONTENDER]["settings"]["LOCALEMBED_ADAPTIVE_THREADS"]
    assert switched == ("0" if hardware.ADAPTIVE_DEFAULT else "1")
    assert busy["localembed fp32 (CLI/server settings)"]["settings"]["OMP_WAIT_POLICY"] != "unset"
    assert all(row["busy_docs_per_s"] > 0 and row["quiet_docs_per_s"] > 0 for row in busy.values())
    assert busy["sentence-transformers"]["busy_ratio"] == 1.0
    assert report["gemm_rates_gflops"]["mkl"] > 0
    assert report["baseline"] == "sentence-transformers" and report["stream"] == {}
    assert report["data"] is None and "STS Spearman skipped" in report["notes"][0]
    rows = {row["name"]: row for row in report["results"]}
    assert set(rows) == {"localembed fp32", "sentence-transformers"}
    for row in rows.values():
        for key in ("short", "mixed"):
            assert row[f"{key}_docs_per_s"] > 0 and row[f"{key}_tokens_per_s"] > 0
            assert row[f"{key}_ceiling_pct"] > 0
        assert row["query_ms"] > 0 and row["sts_spearman"] is None
        assert row["max_1_minus_cos"] < 1e-5  # both are all-MiniLM-L6-v2 in fp32
    assert rows["sentence-transformers"]["short_ratio"] == 1.0
    assert rows["sentence-transformers"]["mixed_ratio"] == 1.0
    assert report["tokens"]["short"] > 8 * 5
    assert "localembed fp32" in out and "# round 1/1 done" in out
    machine = next(line for line in out.splitlines() if line.startswith("# machine: "))
    assert all(f"{feature} " in machine for feature in ("avx2", "avx512f", "avx512_vnni"))
    assert "# the defaults (backend='torch') run this model on torch" in out
    assert f"# beside a busy process: {contention.ADAPTIVE_CONTENDER} " in out
    code, _, err = run(capsys, "bench", "--contenders", "bogus", "--rounds", 1)
    assert code == 1 and "unknown contender 'bogus'" in err


def test_random_base_model_is_a_base_shaped_sentence_transformers_dir(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from localembed.cli.bench_random_base import RANDOM_BASE_CONFIG, build_random_base

    assert (RANDOM_BASE_CONFIG["hidden_size"], RANDOM_BASE_CONFIG["num_hidden_layers"]) == (768, 12)
    # The same builder at a small size (the real one is 110M parameters).
    small = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    model = build_random_base(tmp_path / "random-base", sizes=small)
    encoder = get_encoder(model=str(model))
    info = encoder.describe()
    assert (info["pooling"], info["max_length"], info["dimension"]) == ("cls", 512, 32)
    texts = ["a short text", "another one, a little longer than the first"]
    expected = SentenceTransformer(str(model), device="cpu").encode(texts)
    np.testing.assert_allclose(encoder.encode(texts), expected, atol=1e-5)


# -- help and the console script --------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_every_command_help_lists_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"localembed {command}" in out


def test_console_script_is_installed() -> None:
    scripts = Path(sys.executable).parent
    result = subprocess.run(
        [str(scripts / "localembed"), "--help"], capture_output=True, text=True, check=True
    )
    assert "examples:" in result.stdout
    for command in EXAMPLES:
        assert command in result.stdout
    wrapper = Path(__file__).parents[1] / "benchmarks" / "throughput.py"
    result = subprocess.run(
        [sys.executable, str(wrapper), "--help"], capture_output=True, text=True, check=True
    )
    assert "--no-stream" in result.stdout and "--contenders" in result.stdout
