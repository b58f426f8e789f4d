"""Contextual document embeddings (CDE): context building, files, checks, and every surface.

The oracle is the CDE model card's notebook (``tests.cde_factory.notebook_embeddings``): the
tiny remote-code model called directly, first stage in batches then concatenated, second stage
with ``dataset_embeddings=``, vectors divided by their L2 norm. localembed's vectors must equal
it within 1e-6 for the same sample.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from localembed import EncoderConfig, get_encoder, load_context
from localembed.contextual import ContextError, CorpusContext, sample_indices
from localembed.model_errors import ModelFileError, RemoteCodeError
from tests.cde_factory import (
    CORPUS_SIZE,
    DOCUMENT_PREFIX,
    QUERY_PREFIX,
    build_tiny_cde,
    notebook_embeddings,
)
from tests.cli_helpers import InterruptedStdin, run

CORPUS = [
    f"Document {i}: " + text
    for i, text in enumerate(
        [
            "Index funds track a market index at low cost.",
            "A bond pays a fixed coupon until it matures.",
            "Dividends are paid from a company's profits.",
            "An IRA is a retirement account with tax advantages.",
            "Stock splits change the share count, not the value.",
            "Inflation erodes the purchasing power of cash.",
            "A mortgage is a loan secured by real estate.",
            "Credit scores summarize a borrower's history.",
            "Options give the right, not the duty, to trade.",
            "ETFs trade on an exchange like single stocks.",
            "Capital gains tax applies when you sell at a profit.",
            "Diversification lowers the risk of one holding.",
        ]
    )
]
QUERIES = ["how do bonds pay interest?", "what is an index fund", "are dividends taxed"]
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def cde_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cde(tmp_path_factory.mktemp("tiny-cde"))


@pytest.fixture(scope="module")
def other_cde_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cde(tmp_path_factory.mktemp("tiny-cde-other"), seed=1)


@pytest.fixture(scope="module")
def context(cde_dir: Path) -> CorpusContext:
    return get_encoder(model=str(cde_dir), trust_remote_code=True).build_context(CORPUS)


@pytest.fixture(scope="module")
def context_file(context: CorpusContext, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ctx") / "corpus.context.safetensors"
    context.save(path)
    return path


def sample_of(context: CorpusContext) -> list[str]:
    return [CORPUS[i] for i in context.indices]


# -- the encoder against the notebook ---------------------------------------------------------


def test_context_and_vectors_equal_the_notebook(cde_dir: Path, context: CorpusContext) -> None:
    encoder = get_encoder(model=str(cde_dir), trust_remote_code=True, context=context)
    assert context.size == CORPUS_SIZE and len(set(context.indices)) == CORPUS_SIZE
    dataset, queries = notebook_embeddings(cde_dir, sample_of(context), QUERIES, QUERY_PREFIX)
    assert np.abs(context.embeddings - dataset).max() <= TOLERANCE
    assert np.abs(encoder.encode_queries(QUERIES) - queries).max() <= TOLERANCE
    _, docs = notebook_embeddings(cde_dir, sample_of(context), CORPUS, DOCUMENT_PREFIX)
    assert np.abs(encoder.encode_documents(CORPUS) - docs).max() <= TOLERANCE
    # Batches of one, the async path and the adapters' path give the same rows.
    assert np.abs(encoder.encode_documents(CORPUS, batch_size=1) - docs).max() <= TOLERANCE
    assert encoder.describe()["query_instruction"] == QUERY_PREFIX


async def test_async_calls_use_the_context(cde_dir: Path, context: CorpusContext) -> None:
    encoder = get_encoder(model=str(cde_dir), trust_remote_code=True, context=context)
    expected = encoder.encode_queries(QUERIES)
    assert np.array_equal(await encoder.aencode_queries(QUERIES), expected)


def test_the_first_stage_batches_like_the_notebook(cde_dir: Path, context: CorpusContext) -> None:
    encoder = get_encoder(model=str(cde_dir), trust_remote_code=True, batch_size=3)
    built = encoder.build_context(CORPUS)
    dataset, _ = notebook_embeddings(cde_dir, sample_of(built), QUERIES, QUERY_PREFIX, batch_size=3)
    assert built.indices == context.indices
    assert np.abs(built.embeddings - dataset).max() <= TOLERANCE


def test_a_tokenizer_named_by_config_embedder(
    tmp_path: Path, cde_dir: Path, context: CorpusContext
) -> None:
    # The released models ship no tokenizer: config.embedder names it.
    bare = build_tiny_cde(tmp_path / "bare", tokenizer=False, embedder=str(cde_dir))
    assert not (bare / "tokenizer.json").exists()
    encoder = get_encoder(model=str(bare), trust_remote_code=True)
    built = encoder.build_context(CORPUS)
    _, expected = notebook_embeddings(
        bare, sample_of(built), QUERIES, QUERY_PREFIX, tokenizer_dir=cde_dir
    )
    got = encoder.with_context(built).encode_queries(QUERIES)
    assert np.abs(got - expected).max() <= TOLERANCE
    nameless = build_tiny_cde(tmp_path / "nameless", tokenizer=False)
    with pytest.raises(ModelFileError, match=r"config\.embedder"):
        get_encoder(model=str(nameless), trust_remote_code=True)


# -- the context: sampling, files, checks -------------------------------------------------------


def test_sampling_is_seeded_and_reproducible(cde_dir: Path, context: CorpusContext) -> None:
    encoder = get_encoder(model=str(cde_dir), trust_remote_code=True)
    again = encoder.build_context(CORPUS, seed=0)
    assert again.indices == context.indices
    assert np.array_equal(again.embeddings, context.embeddings)
    assert again.digest() == context.digest()
    other = encoder.build_context(CORPUS, seed=1)
    assert other.indices != context.indices
    smaller = encoder.build_context(CORPUS, size=4, seed=0)
    assert smaller.size == 4 and smaller.indices == tuple(sample_indices(len(CORPUS), 4, 0))
    # Another sample gives other vectors: the context is used.
    with_other = encoder.with_context(other).encode_documents(CORPUS[:3])
    assert (
        np.abs(with_other - encoder.with_context(context).encode_documents(CORPUS[:3])).max() > 1e-4
    )


def test_a_corpus_smaller_than_the_sample(cde_dir: Path) -> None:
    encoder = get_encoder(model=str(cde_dir), trust_remote_code=True)
    with pytest.raises(ContextError, match=r"3 documents, fewer than the context's 8.*oversample"):
        encoder.build_context(CORPUS[:3])
    repeated = encoder.build_context(CORPUS[:3], oversample=True)
    assert repeated.size == CORPUS_SIZE
    assert sorted(set(repeated.indices)) == [0, 1, 2]
    assert [repeated.indices.count(i) for i in range(3)] in ([3, 3, 2], [3, 2, 3], [2, 3, 3])
    with pytest.raises(ContextError, match="transductive_corpus_size 8"):
        encoder.build_context(CORPUS, size=CORPUS_SIZE + 1)
    with pytest.raises(ContextError, match="empty corpus"):
        encoder.build_context([])
    with pytest.raises(TypeError, match="item 1"):
        encoder.build_context(["a", 2])  # type: ignore[list-item]


def test_save_and_load_round_trip(
    cde_dir: Path, context: CorpusContext, context_file: Path
) -> None:
    loaded = load_context(context_file)
    assert np.array_equal(loaded.embeddings, context.embeddings)
    assert loaded.metadata() == context.metadata()
    assert loaded.path == str(context_file.resolve())
    from_path = get_encoder(model=str(cde_dir), trust_remote_code=True, context=str(context_file))
    from_object = get_encoder(model=str(cde_dir), trust_remote_code=True, context=context)
    assert np.array_equal(from_path.encode_queries(QUERIES), from_object.encode_queries(QUERIES))
    assert from_path.model is from_object.model  # encoders differing in context share the model
    # Equal contexts (the same vectors and model) are one encoder; another context is another.
    assert loaded == context and hash(loaded) == hash(context)
    assert get_encoder(model=str(cde_dir), trust_remote_code=True, context=loaded) is from_object
    other = from_object.build_context(CORPUS, seed=9)
    assert other != context and from_object.with_context(other) is not from_object
    # The file is safetensors with a JSON header: readable without localembed, no pickle.
    from safetensors import safe_open

    with safe_open(str(context_file), "np") as handle:
        header = json.loads(handle.metadata()["localembed"])
        assert header["fingerprint"] == context.fingerprint
        assert header["indices"] == list(context.indices)
        assert np.array_equal(handle.get_tensor("dataset_embeddings"), context.embeddings)


def test_unreadable_context_files(tmp_path: Path, context: CorpusContext) -> None:
    with pytest.raises(ContextError, match="cannot read the context file"):
        load_context(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(ContextError, match="not a localembed context file"):
        load_context(garbage)
    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": np.zeros((2, 2), np.float32)}, str(foreign))
    with pytest.raises(ContextError, match="not a localembed context file"):
        load_context(foreign)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(context.to_bytes()[:-10])
    with pytest.raises(ContextError):
        load_context(truncated)
    with pytest.raises(ContextError, match="NaN"):
        CorpusContext(np.full((2, 4), np.nan), model="m", fingerprint="f")


def test_a_hand_made_context_of_the_wrong_shape_is_refused(
    cde_dir: Path, context: CorpusContext
) -> None:
    for shape in ((CORPUS_SIZE, 16), (CORPUS_SIZE + 1, 32)):
        forged = CorpusContext(np.ones(shape), model="m", fingerprint=context.fingerprint)
        with pytest.raises(ContextError, match="takes at most 8 of width 32"):
            get_encoder(model=str(cde_dir), trust_remote_code=True, context=forged)


def test_a_context_from_another_model_is_refused(
    other_cde_dir: Path, context: CorpusContext, context_file: Path
) -> None:
    for given in (context, str(context_file)):
        with pytest.raises(ContextError) as error:
            get_encoder(model=str(other_cde_dir), trust_remote_code=True, context=given)
        message = str(error.value)
        assert str(other_cde_dir) in message and context.model in message
        assert "build a context with this model" in message


def test_errors_without_a_context_or_a_cde_model(
    cde_dir: Path, tiny_bert_dir: Path, context: CorpusContext
) -> None:
    encoder = get_encoder(model=str(cde_dir), trust_remote_code=True)
    for call in (encoder.encode_documents, encoder.encode_queries, encoder.encode):
        with pytest.raises(ContextError, match=r"has no context yet.*build_context\(corpus\)"):
            call(["a text"])
    assert encoder.encode_documents([]).shape == (0, 32)  # no model call, no context needed
    with pytest.raises(ContextError, match="is not one"):
        get_encoder(model=str(tiny_bert_dir), context=context)
    with pytest.raises(ContextError, match="not a contextual document embedding"):
        get_encoder(model=str(tiny_bert_dir)).build_context(CORPUS)
    with pytest.raises(ValueError, match=r"token_embeddings.*second stage pools"):
        encoder.with_context(context).encode(["a"], output="token_embeddings")
    with pytest.raises(ValueError, match=r"encode_late_chunks.*second stage pools"):
        encoder.with_context(context).encode_late_chunks("a text", ["a text"])


def test_remote_code_stays_opt_in(cde_dir: Path) -> None:
    with pytest.raises(RemoteCodeError, match="trust_remote_code=True"):
        get_encoder(model=str(cde_dir))


# -- the adapters ----------------------------------------------------------------------------


def test_langchain_context_at_construction_and_by_fit(
    cde_dir: Path, context: CorpusContext, context_file: Path
) -> None:
    from langchain_localembed import LocalEmbeddings

    expected = get_encoder(model=str(cde_dir), trust_remote_code=True, context=context)
    given = LocalEmbeddings(model=str(cde_dir), trust_remote_code=True, context=str(context_file))
    assert np.allclose(given.embed_documents(CORPUS[:3]), expected.encode_documents(CORPUS[:3]))
    fitted = LocalEmbeddings(model=str(cde_dir), trust_remote_code=True)
    with pytest.raises(ContextError, match="no context yet"):
        fitted.embed_query("q")
    built = fitted.fit_context(CORPUS)
    assert built.digest() == context.digest()
    assert fitted.embed_query(QUERIES[0]) == expected.encode_queries(QUERIES[:1])[0].tolist()


def test_llamaindex_to_dict_keeps_the_context(
    cde_dir: Path, context: CorpusContext, context_file: Path
) -> None:
    from llama_index.core.embeddings import BaseEmbedding  # noqa: F401

    from llamaindex_localembed import LocalEmbedding

    expected = get_encoder(model=str(cde_dir), trust_remote_code=True, context=context)
    vector = expected.encode_queries(QUERIES[:1])[0].tolist()
    # A context from a file is stored as its path.
    saved = LocalEmbedding(model=str(cde_dir), trust_remote_code=True, context=str(context_file))
    data = saved.to_dict()
    assert data["context"] == str(context_file.resolve())
    assert LocalEmbedding.from_dict(data).get_query_embedding(QUERIES[0]) == vector
    # A context only in memory (fit_context) is stored inline: nothing is lost.
    fitted = LocalEmbedding(model=str(cde_dir), trust_remote_code=True)
    fitted.fit_context(CORPUS)
    inline = json.loads(fitted.to_json())
    assert set(inline["context"]) == {"inline_safetensors_base64"}
    restored = LocalEmbedding.from_dict(inline)
    assert restored.context.digest() == context.digest()
    assert restored.get_query_embedding(QUERIES[0]) == vector


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_build_context_equals_the_encoder(
    tmp_path: Path, cde_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "corpus.txt"
    source.write_text("".join(text + "\n" for text in CORPUS), encoding="utf-8")
    output = tmp_path / "docs.npy"
    model = ["--model", cde_dir, "--trust-remote-code"]
    code, _, err = run(
        capsys, "embed", source, "-o", output, *model, "--build-context", 6, "--context-seed", 3
    )
    assert code == 0, err
    encoder = get_encoder(model=str(cde_dir), trust_remote_code=True)
    built = encoder.build_context(CORPUS, size=6, seed=3)
    saved = load_context(tmp_path / "docs.npy.context.safetensors")
    assert saved.digest() == built.digest() and saved.indices == built.indices
    expected = encoder.with_context(built).encode_documents(CORPUS)
    assert np.array_equal(np.load(output), expected)
    # Queries reuse the file.
    queries = tmp_path / "queries.txt"
    queries.write_text("".join(q + "\n" for q in QUERIES), encoding="utf-8")
    context_file = tmp_path / "docs.npy.context.safetensors"
    argv = ["--kind", "query", "--context", context_file]
    code, _, err = run(capsys, "embed", queries, "-o", tmp_path / "q.npy", *model, *argv)
    assert code == 0, err
    expected_q = encoder.with_context(built).encode_queries(QUERIES)
    assert np.array_equal(np.load(tmp_path / "q.npy"), expected_q)


def test_cli_usage_errors(
    tmp_path: Path, cde_dir: Path, context_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "few.txt"
    source.write_text("one\ntwo\n", encoding="utf-8")
    model = ["--model", cde_dir, "--trust-remote-code"]
    both = ["--build-context", 4, "--context", context_file]
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "a.npy", *model, *both)
    assert code == 2 and "leave out --context" in err
    code, _, err = run(
        capsys, "embed", source, "-o", tmp_path / "b.npy", *model, "--build-context", 4
    )
    assert code == 1 and "--oversample-context" in err, err
    code, _, err = run(capsys, "embed", source, "-o", tmp_path / "c.npy", *model)
    assert code == 1 and "has no context yet" in err, err
    code, _, err = run(
        capsys,
        "embed",
        source,
        "-o",
        tmp_path / "d.npy",
        *model,
        "--build-context",
        4,
        "--oversample-context",
    )
    assert code == 0, err


def test_cli_resume_refuses_another_context(
    tmp_path: Path,
    cde_dir: Path,
    context_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = get_encoder(model=str(cde_dir), trust_remote_code=True).build_context(CORPUS, seed=5)
    other_file = other.save(tmp_path / "other.safetensors")
    text = "".join(text + "\n" for text in CORPUS)
    common = ["--chunk-size", "3", "--model", cde_dir, "--trust-remote-code"]
    whole = tmp_path / "whole.npy"
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert run(capsys, "embed", "-", "-o", whole, *common, "--context", context_file)[0] == 0
    output = tmp_path / "out.npy"
    monkeypatch.setattr(sys, "stdin", InterruptedStdin(text, lines=7))
    assert run(capsys, "embed", "-", "-o", output, *common, "--context", context_file)[0] == 130
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, _, err = run(
        capsys, "embed", "-", "-o", output, *common, "--context", other_file, "--resume"
    )
    assert code == 1 and "other settings" in err and "context" in err, err
    # A copy of the same context under another name resumes (the digest is recorded).
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(context_file.read_bytes())
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, _, err = run(capsys, "embed", "-", "-o", output, *common, "--context", copy, "--resume")
    assert code == 0 and "resumed at row 6" in err, err
    assert np.array_equal(np.load(output), np.load(whole))


# -- the server (a config field: `localembed serve --context FILE` builds this config) ---------


def test_server_serves_a_cde_model_with_its_context(cde_dir: Path, context_file: Path) -> None:
    from fastapi.testclient import TestClient

    from localembed.cli import main  # noqa: F401  (the flag exists on serve)
    from localembed.server.app import create_app

    config = EncoderConfig(model=str(cde_dir), trust_remote_code=True, context=str(context_file))
    encoder = get_encoder(config)
    with TestClient(create_app(config=config)) as client:
        for kind, texts, expected in (
            ("document", CORPUS[:2], encoder.encode_documents(CORPUS[:2])),
            ("query", QUERIES, encoder.encode_queries(QUERIES)),
        ):
            body = {"input": texts, "input_type": kind}
            response = client.post("/v1/embeddings", json=body)
            assert response.status_code == 200, response.text
            rows = [row["embedding"] for row in response.json()["data"]]
            assert np.abs(np.array(rows, dtype=np.float32) - expected).max() <= TOLERANCE


def test_long_text_chunk_gives_every_window_the_context(
    cde_dir: Path, context: CorpusContext
) -> None:
    options = {"model": str(cde_dir), "trust_remote_code": True, "context": context}
    chunked = get_encoder(**options, long_text="chunk", max_length=16)
    truncated = get_encoder(**options, max_length=16)
    short, long = "a short note", " ".join(CORPUS)
    vectors = chunked.encode_documents([short, long])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    # One window: the same vector as truncation; many windows: another one.
    assert np.abs(vectors[0] - truncated.encode_documents([short])[0]).max() <= TOLERANCE
    assert np.abs(vectors[1] - truncated.encode_documents([long])[0]).max() > 1e-4


def test_a_config_file_serves_a_cde_model_with_its_own_context(
    tmp_path: Path, cde_dir: Path, tiny_bert_dir: Path, context_file: Path
) -> None:
    """``context = "path"`` in a model's table: read and checked at start, used by that model."""
    from fastapi.testclient import TestClient

    from localembed.server.app import create_app
    from localembed.server.models import check_contexts, read_config_file
    from localembed.server.settings import ServerSettings

    config = tmp_path / "models.toml"
    config.write_text(
        f"[models.bert]\nmodel = {json.dumps(str(tiny_bert_dir))}\n"
        f"[models.cde]\nmodel = {json.dumps(str(cde_dir))}\ntrust_remote_code = true\n"
        f"context = {json.dumps(str(context_file))}\n",
        encoding="utf-8",
    )
    _, specs = read_config_file(config)
    checked = check_contexts(specs)
    assert isinstance(checked[1].config.context, CorpusContext)  # read once, here
    encoder = get_encoder(model=str(cde_dir), trust_remote_code=True, context=str(context_file))
    lazy = ServerSettings(preload=False)
    with TestClient(create_app(models=checked, settings=lazy)) as client:
        for kind, texts, expected in (
            ("document", CORPUS[:3], encoder.encode_documents(CORPUS[:3])),
            ("query", QUERIES, encoder.encode_queries(QUERIES)),
        ):
            body = {"input": texts, "input_type": kind, "model": "cde"}
            response = client.post("/v1/embeddings", json=body)
            assert response.status_code == 200, response.text
            rows = [row["embedding"] for row in response.json()["data"]]
            assert np.abs(np.array(rows, dtype=np.float32) - expected).max() <= TOLERANCE


def test_a_wrong_context_in_a_config_file_stops_the_server_at_start(
    tmp_path: Path,
    cde_dir: Path,
    other_cde_dir: Path,
    tiny_bert_dir: Path,
    context_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Missing file, another model's context, a model that is not CDE: exit 2 naming the table."""
    config = tmp_path / "models.toml"
    cases = [
        (cde_dir, tmp_path / "missing.safetensors", "cannot read|no such|not found|missing"),
        (other_cde_dir, context_file, "build a context with this model"),
        (tiny_bert_dir, context_file, "is not one"),
    ]
    for model, context, message in cases:
        config.write_text(
            "[server]\npreload = false\n"  # lazy: still checked at start
            f'[models."team/cde"]\nmodel = {json.dumps(str(model))}\ntrust_remote_code = true\n'
            f"context = {json.dumps(str(context))}\n",
            encoding="utf-8",
        )
        code, _, err = run(capsys, "serve", "--config", config, "--port", "0")
        assert code == 2, err
        where = f"--config {config}: [models.team/cde] (model 'team/cde'): context {context}"
        assert where in err
        assert re.search(message, err, re.IGNORECASE), err


def test_a_tampered_context_file_is_a_context_error_naming_it(
    tmp_path: Path, context: CorpusContext
) -> None:
    # The docs: a NaN-holding context file is a ContextError naming the file; so is one whose
    # metadata was edited into the wrong types (never a bare ValueError/TypeError).
    from safetensors.numpy import save

    nan = np.array(context.embeddings)
    nan[1, 3] = np.nan
    cases = {
        "nan": (nan, {}),
        "seed": (np.array(context.embeddings), {"seed": "abc"}),
        "indices": (np.array(context.embeddings), {"indices": 5}),
        "corpus_size": (np.array(context.embeddings), {"corpus_size": [1]}),
        "max_length": (np.array(context.embeddings), {"max_length": None}),
    }
    for name, (array, changes) in cases.items():
        path = tmp_path / f"{name}.context.safetensors"
        metadata = json.dumps({**context.metadata(), **changes})
        path.write_bytes(save({"dataset_embeddings": array}, metadata={"localembed": metadata}))
        with pytest.raises(ContextError) as error:
            load_context(path)
        assert str(path.resolve()) in str(error.value), name


def test_a_context_file_saved_again_is_read_again(
    cde_dir: Path, context: CorpusContext, tmp_path: Path
) -> None:
    # A notebook rebuilds the context and saves it to the same path: get_encoder(context=path)
    # must use the file as it is now (as a fresh process would), never the one it read before,
    # and the embedding cache must key by the context actually used.
    path = tmp_path / "corpus.context.safetensors"
    cache = str(tmp_path / "cache")
    CorpusContext.from_bytes(context.to_bytes()).save(path)  # (the fixture keeps its path)
    before = get_encoder(model=str(cde_dir), trust_remote_code=True, context=str(path), cache=cache)
    first = before.encode_queries(QUERIES)
    rebuilt = before.build_context(CORPUS, seed=7)
    assert rebuilt != context
    rebuilt.save(path)
    after = get_encoder(model=str(cde_dir), trust_remote_code=True, context=str(path), cache=cache)
    assert after.context == rebuilt
    expected = get_encoder(model=str(cde_dir), trust_remote_code=True, context=rebuilt)
    got = after.encode_queries(QUERIES)
    np.testing.assert_allclose(got, expected.encode_queries(QUERIES), atol=TOLERANCE)
    assert not np.allclose(got, first, atol=1e-4)
    assert after.cache_stats()["hits"] == 0
