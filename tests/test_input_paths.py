"""One check, one repair, every path (issue 19 items 2 and 4).

- int8/uint8 ``ranges``: :func:`localembed.precision.check_ranges` is the one validation;
  ``encode``, ``localembed embed --ranges`` and the server's ``ranges`` field refuse the same
  bad ranges (NaN, infinity, beyond float32, a minimum above its maximum) and accept the same
  good ones, whose codes equal sentence-transformers' ``quantize_embeddings``.
- Lone surrogates: :func:`localembed.texts.repair_text` is the one repair; ``encode``, both
  splitters, late chunking (text and chunks), ``localembed tokens`` and the server embed the
  repaired text, so each path gives the vector ``encode`` gives for the repaired text.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sentence_transformers.quantization import quantize_embeddings

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding
from localembed import get_encoder
from localembed.errors import InputError
from localembed.precision import calibration_ranges, check_ranges
from localembed.server import ServerSettings, create_app
from localembed.texts import repair_text
from tests.cli_helpers import run, write_input

TEXTS = ["Paris is the capital of France.", "Cats purr.", "A third text.", "And a fourth."]


def bad_ranges(dimension: int) -> dict[str, np.ndarray]:
    good = np.vstack((-np.ones(dimension), np.ones(dimension)))
    cases = {}
    for name, value in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf), ("1e39", 1e39)):
        ranges = good.copy()
        ranges[1, dimension - 1] = value
        cases[name] = ranges
    reversed_ = good.copy()
    reversed_[:, 3] = [0.5, -0.5]
    cases["min>max"] = reversed_
    return cases


@pytest.mark.parametrize("precision", ["int8", "uint8"])
@pytest.mark.parametrize("case", ["nan", "inf", "-inf", "1e39", "min>max"])
def test_bad_ranges_are_refused_by_encode(precision: str, case: str) -> None:
    encoder = get_encoder()
    ranges = bad_ranges(encoder.dimension)[case]
    with pytest.raises(InputError, match="ranges"):
        encoder.encode(TEXTS, precision=precision, ranges=ranges)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="ranges"):
        encoder.encode_documents(TEXTS, precision=precision, ranges=ranges)  # type: ignore[arg-type]


def test_good_ranges_equal_sentence_transformers() -> None:
    encoder = get_encoder()
    ranges = calibration_ranges(encoder.encode(TEXTS))
    for precision in ("int8", "uint8"):
        got = encoder.encode(["a query"], precision=precision, ranges=ranges)  # type: ignore[arg-type]
        expected = quantize_embeddings(encoder.encode(["a query"]), precision, ranges=ranges)
        np.testing.assert_array_equal(got, expected)
    # min == max in a dimension (a constant dimension) is a valid range.
    flat = np.zeros((2, encoder.dimension))
    assert encoder.encode(TEXTS, precision="int8", ranges=flat).dtype == np.int8


@pytest.mark.parametrize("case", ["nan", "1e39", "min>max"])
def test_bad_ranges_are_refused_by_the_cli(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encoder = get_encoder()
    ranges_file = tmp_path / "r.npy"
    np.save(ranges_file, bad_ranges(encoder.dimension)[case])
    source = write_input(tmp_path / "in.txt", TEXTS)
    output = tmp_path / "out.npy"
    code, _, err = run(
        capsys, "embed", source, "-o", output, "--precision", "int8", "--ranges", ranges_file
    )
    assert code == 1 and "--ranges" in err, err
    with pytest.raises(InputError) as caught:
        check_ranges(bad_ranges(encoder.dimension)[case], encoder.dimension)
    assert str(caught.value) in err  # the same check, the same words
    assert not output.exists()


@pytest.mark.parametrize("case", ["nan", "1e39", "min>max"])
def test_bad_ranges_are_refused_by_the_server(case: str, tiny_bert_dir: Path) -> None:
    encoder = get_encoder(model=str(tiny_bert_dir), pooling="mean")
    ranges = bad_ranges(encoder.dimension)[case]
    listed = str(ranges.tolist()).replace("nan", "NaN")
    body = f'{{"input": ["x", "y"], "precision": "int8", "ranges": {listed}}}'
    with TestClient(create_app(encoder=encoder, settings=ServerSettings())) as client:
        response = client.post(
            "/v1/embeddings", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "ranges"
    with pytest.raises(InputError) as caught:
        check_ranges(ranges, encoder.dimension)
    assert error["message"] == str(caught.value)


# -- one repair for invalid unicode ---------------------------------------------------------

BROKEN = (
    "Berlin \udc80 is the capital of Germany. It has \ud83d many people. Emoji \ud83d\ude00 ok."
)
REPAIRED = repair_text(BROKEN)


def test_repair_is_one_to_one_for_lone_surrogates() -> None:
    assert "\ufffd" in REPAIRED and "\N{GRINNING FACE}" in REPAIRED
    assert repair_text("plain") == "plain"
    assert REPAIRED.encode("utf-8")


def test_encode_repairs_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    encoder = get_encoder()
    with caplog.at_level(logging.WARNING, logger="localembed"):
        vectors = encoder.encode([BROKEN, "fine"])
    assert "1 of 2 texts contained invalid unicode" in caplog.text
    np.testing.assert_allclose(vectors[0], encoder.encode([REPAIRED])[0], atol=1e-6)


def test_splitters_take_lone_surrogates() -> None:
    from llama_index.core import Document

    embeddings = LocalEmbeddings()
    encoder = embeddings.encoder
    assert encoder.count_tokens(BROKEN) == encoder.count_tokens(REPAIRED)
    assert encoder.token_ids(BROKEN) == encoder.token_ids(REPAIRED)
    chunks = embeddings.text_splitter().split_text(BROKEN * 3)
    assert "".join(chunks).replace(" ", "") == (BROKEN * 3).replace(" ", "")
    np.testing.assert_allclose(
        embeddings.embed_documents(chunks),
        encoder.encode_documents([repair_text(chunk) for chunk in chunks]),
        atol=1e-6,
    )
    nodes = LocalEmbedding().node_parser().get_nodes_from_documents([Document(text=BROKEN)])
    assert nodes


def test_late_chunking_finds_chunks_with_lone_surrogates() -> None:
    from llama_index.core import Document

    encoder = get_encoder()
    cut, fixed_cut = BROKEN.index(" It has"), REPAIRED.index(" It has")
    chunks = [BROKEN[:cut], BROKEN[cut + 1 :]]
    repaired_chunks = [REPAIRED[:fixed_cut], REPAIRED[fixed_cut + 1 :]]
    expected = encoder.encode_late_chunks(REPAIRED, repaired_chunks)
    np.testing.assert_allclose(encoder.encode_late_chunks(BROKEN, chunks), expected, atol=1e-6)
    np.testing.assert_allclose(
        LocalEmbeddings().embed_late_chunks(BROKEN, chunks), expected, atol=1e-6
    )
    nodes = LocalEmbedding().late_chunk_nodes(Document(text=BROKEN))
    assert nodes and all(node.embedding for node in nodes)


def test_localembed_tokens_takes_an_argument_that_is_not_utf8(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """An argument with a byte that is not UTF-8 reaches Python as a lone surrogate."""
    argument = b"caf\xff ok".decode("utf-8", "surrogateescape")
    with caplog.at_level(logging.WARNING, logger="localembed"):
        code, out, err = run(capsys, "tokens", argument, "--json")
    assert code == 0, err
    assert "1 of 1 text contained invalid unicode" in caplog.text
    report = json.loads(out)
    assert report["text"] == "caf\ufffd ok"
    expected = get_encoder().tokenize(["caf\ufffd ok"]).ids[0]
    assert [row["id"] for row in report["tokens"]] == expected


def test_server_inputs_are_repaired(tiny_bert_dir: Path) -> None:
    encoder = get_encoder(model=str(tiny_bert_dir), pooling="mean")
    body = '{"input": ["caf\\udc80 ok", "fine"]}'  # a broken JSON escape: a lone surrogate
    with TestClient(create_app(encoder=encoder, settings=ServerSettings())) as client:
        response = client.post(
            "/v1/embeddings", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 200, response.text
    got = np.asarray([item["embedding"] for item in response.json()["data"]])
    np.testing.assert_allclose(got, encoder.encode(["caf\ufffd ok", "fine"]), atol=1e-5)


# -- splitter chunks fit the window as the encoder tokenizes them -------------------------

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def truncated(encoder, chunks: list[str]) -> int:
    """How many of ``chunks`` the encoder truncates when embedding them as documents."""
    tokenized = encoder.tokenize(chunks, encoder.settings.document_instruction)
    return int(tokenized.truncated)


@pytest.mark.parametrize("model", ["tiny-xlmr", "default"])
@pytest.mark.parametrize("instruction", ["passage:", "passage: ", "Doc:{text}"])
def test_splitter_chunks_are_never_truncated_with_any_instruction(
    model: str, instruction: str, tiny_xlmr_dir: Path
) -> None:
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from llama_index.core import Document

    options = {"model": str(tiny_xlmr_dir), "pooling": "mean"} if model == "tiny-xlmr" else {}
    options.update(document_instruction=instruction, max_length=48)
    embeddings = LocalEmbeddings(**options)
    encoder = embeddings.encoder
    text = README[:20000]
    chunks = embeddings.text_splitter(chunk_overlap=8).split_text(text)
    assert len(chunks) > 20
    assert truncated(encoder, chunks) == 0
    assert max(encoder.chunk_overflow(chunk) for chunk in chunks) <= 0
    assert max(encoder.chunk_overflow(chunk) for chunk in chunks) > -10, "chunks use the window"
    document = Document(text=text, metadata={"title": "README"})
    nodes = (
        LocalEmbedding(**options).node_parser(chunk_overlap=8).get_nodes_from_documents([document])
    )
    assert truncated(encoder, [node.get_content() for node in nodes]) == 0
    if model == "tiny-xlmr" and instruction == "passage:":
        # The splitter alone, counting the chunk without its instruction, overflows.
        plain = RecursiveCharacterTextSplitter(
            chunk_size=encoder.chunk_size(), chunk_overlap=8, length_function=encoder.count_tokens
        ).split_text(text)
        assert truncated(encoder, plain) > 0


# -- model and model_name, the documented aliases ------------------------------------------


@pytest.mark.parametrize("adapter", [LocalEmbeddings, LocalEmbedding])
def test_model_and_model_name_together(adapter: type, default_model_dir: Path) -> None:
    from pydantic import ValidationError

    same = adapter(model=str(default_model_dir), model_name=str(default_model_dir))
    assert same.model == str(default_model_dir)
    assert same.encoder is adapter(model=str(default_model_dir)).encoder
    with pytest.raises(ValidationError) as caught:
        adapter(model=str(default_model_dir), model_name="BAAI/bge-small-en-v1.5")
    message = str(caught.value)
    assert "model=" in message and "model_name='BAAI/bge-small-en-v1.5'" in message
    assert "disagree" in message and "Extra inputs" not in message


@pytest.mark.parametrize("adapter", [LocalEmbeddings, LocalEmbedding])
@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("pooling", "clss", "valid: auto, cls, mean"),
        ("batch_size", 0, "greater than 0"),
        ("device", "gpu", "device must be one of"),
        ("dtype", "fp16", "'float16'"),
        ("normalise", True, "did you mean 'normalize'"),
        ("long_text", "split", "'truncate' or 'chunk'"),
    ],
)
def test_adapter_argument_errors_name_the_field_and_what_is_accepted(
    adapter: type, option: str, value: object, words: str
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        adapter(**{option: value})
    message = str(caught.value)
    assert words in message
    assert option in message


# -- localembed embed checks cheap things before the model loads ---------------------------


@pytest.mark.parametrize(
    ("name", "content", "argv", "words"),
    [
        ("one.txt", b"only one row\n", ["--precision", "int8"], "at least 2 rows, the input has 1"),
        ("bad.txt", b"fine\nbad \xff byte\n", [], "bad.txt line 2"),
        (
            "ids.jsonl",
            b'{"text": "a", "id": 1}\n{"text": "b", "id": null}\n',
            ["--id-column", "id"],
            "ids.jsonl line 2",
        ),
        ("sur.jsonl", b'{"text": "a"}\n{"text": "x \\udc80"}\n', [], "sur.jsonl line 2"),
    ],
)
def test_embed_reports_input_errors_before_loading_the_model(
    name: str,
    content: bytes,
    argv: list[str],
    words: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The model folder does not exist: had the model loaded first, the error would name it.
    source = tmp_path / name
    source.write_bytes(content)
    missing_model = tmp_path / "model-never-loaded"
    code, _, err = run(
        capsys, "embed", source, "-o", tmp_path / "out.jsonl", "--model", missing_model, *argv
    )
    assert code == 1 and words in err, err
    assert "model-never-loaded" not in err


def test_info_shows_no_absolute_model_path_unless_asked(
    default_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absolute = str(default_model_dir.resolve())
    code, out, _ = run(capsys, "info")
    assert code == 0 and absolute not in out and "--paths" in out
    code, out, _ = run(capsys, "info", "--json")
    assert code == 0 and absolute not in out
    assert json.loads(out)["path"] == "the embedded model 'sentence-transformers/all-MiniLM-L6-v2'"
    code, out, _ = run(capsys, "info", "--paths", "--json")
    assert code == 0 and json.loads(out)["path"] == absolute
    # The server's /info shows the encoder's description: no absolute path either.
    with TestClient(create_app(encoder=get_encoder(), settings=ServerSettings())) as client:
        response = client.get("/info")
    assert response.status_code == 200 and absolute not in response.text
