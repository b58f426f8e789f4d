"""bge-m3 dense, sparse and ColBERT outputs against FlagEmbedding's BGEM3FlagModel.

The model is the tiny XLM-RoBERTa of ``tiny_xlmr_dir`` with random ``sparse_linear.pt`` and
``colbert_linear.pt`` heads and a real (small, trained) tokenizer. Its dense vectors of
different texts are nearly parallel (cosine ~0.99998, element differences ~1e-3), so dense
vectors are also compared element-wise (1e-5), which tells different texts apart.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from localembed import get_encoder
from localembed.encoder import ForwardBatch, LocalEncoder
from localembed.heads import batch_outputs
from localembed.m3 import (
    M3Output,
    colbert_score,
    hybrid_score,
    lexical_matching_score,
    lexical_tokens,
)

MAX_LENGTH = 64
TEXTS = [
    "Hello world!",
    "The cat likes the river in London. The cat likes the river.",
    "",
    "你好，世界！ 🙂",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14.",
    "Die Katze mag die schöne Brücke in Berlin.",
    "Le chat aime la rivière tranquille à Paris. " * 8,  # over MAX_LENGTH: truncated
    "the the the the cat cat",  # repeated tokens: max weight per token id
]
QUERIES = ["Where does the cat see the river?", "Katze Brücke Berlin 你好"]
OUTPUTS = {"dense": True, "sparse": True, "colbert": True}
FLAG_OUTPUTS = {"return_dense": True, "return_sparse": True, "return_colbert_vecs": True}


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the
    threads' spin-waiting made this module 3x slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def m3_dir(tiny_xlmr_dir: Path) -> Path:
    return tiny_xlmr_dir


@pytest.fixture(scope="session")
def encoder(m3_dir: Path) -> LocalEncoder:
    return get_encoder(model=str(m3_dir), max_length=MAX_LENGTH, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def torch_encoder(m3_dir: Path) -> LocalEncoder:
    """The same model on torch (backend="auto" runs it on ONNX Runtime): tests hook its forward."""
    return get_encoder(
        model=str(m3_dir), max_length=MAX_LENGTH, device="cpu", dtype="float32", backend="torch"
    )


@pytest.fixture(scope="session")
def ours(encoder: LocalEncoder) -> M3Output:
    return encoder.encode_m3(TEXTS, **OUTPUTS, batch_size=3)


@pytest.fixture(scope="session")
def flag_model(m3_dir: Path) -> Any:
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(str(m3_dir), use_fp16=False, devices="cpu")


@pytest.fixture(scope="session")
def flag_left(m3_dir: Path) -> Any:
    """FlagEmbedding with a left-padding copy of the tokenizer."""
    from FlagEmbedding import BGEM3FlagModel
    from transformers import AutoTokenizer

    model = BGEM3FlagModel(str(m3_dir), use_fp16=False, devices="cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(m3_dir), padding_side="left")
    model.tokenizer = tokenizer
    model.model.tokenizer = tokenizer
    return model


@pytest.fixture(scope="session")
def reference(flag_model: Any) -> dict[str, Any]:
    return flag_model.encode(TEXTS, batch_size=3, max_length=MAX_LENGTH, **FLAG_OUTPUTS)


@pytest.fixture(scope="session")
def no_heads_dir(m3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("no-heads") / "xlmr"
    shutil.copytree(m3_dir, target, ignore=shutil.ignore_patterns("*.pt"))
    return target


class ForwardRecorder:
    """Records the input shape of every forward pass of ``encoder.model``."""

    def __init__(self, encoder: LocalEncoder) -> None:
        self.model = encoder.model
        self.shapes: list[tuple[int, int]] = []

    def __enter__(self) -> ForwardRecorder:
        def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            self.shapes.append(tuple(kwargs["input_ids"].shape))

        self.handle = self.model.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


# -- helpers --------------------------------------------------------------------------------


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def assert_dense_equal(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    assert _cosines(ours, theirs).min() >= 0.99999
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def assert_sparse_equal(ours: list[dict[int, float]], theirs: list[dict[Any, float]]) -> None:
    assert len(ours) == len(theirs)
    for mine, other in zip(ours, theirs, strict=True):
        other = {int(k): float(v) for k, v in other.items()}
        assert set(mine) == set(other)
        assert all(isinstance(k, int) and isinstance(v, float) for k, v in mine.items())
        for token, weight in other.items():
            assert abs(mine[token] - weight) <= 1e-5


def assert_colbert_equal(ours: list[np.ndarray], theirs: list[np.ndarray]) -> None:
    assert len(ours) == len(theirs)
    for mine, other in zip(ours, theirs, strict=True):
        assert mine.dtype == np.float32 and mine.shape == other.shape
        assert _cosines(mine, other).min() >= 0.99999
        np.testing.assert_allclose(mine, other, atol=1e-5)


def assert_outputs_equal(a: M3Output, b: M3Output) -> None:
    assert a.dense is not None and b.dense is not None
    assert a.sparse is not None and b.sparse is not None
    assert a.colbert is not None and b.colbert is not None
    assert_dense_equal(a.dense, b.dense)
    assert_sparse_equal(a.sparse, b.sparse)
    assert_colbert_equal(a.colbert, b.colbert)


def _as_output(result: dict[str, Any]) -> M3Output:
    return M3Output(
        dense=result["dense_vecs"],
        sparse=result["lexical_weights"],
        colbert=result["colbert_vecs"],
    )


# -- against FlagEmbedding ------------------------------------------------------------------


def test_batch_matches_flagembedding(ours: M3Output, reference: dict[str, Any]) -> None:
    assert_outputs_equal(ours, _as_output(reference))
    # The dense vectors of different texts differ by far more than the tolerance.
    dense = ours.dense_array()
    gaps = np.abs(dense[:, None] - dense[None]).max(-1) + np.eye(len(dense))
    assert gaps.min() > 1e-4
    # Repeated tokens keep their largest weight; special tokens are left out.
    assert ours.sparse is not None and ours.sparse[2] == {}
    assert ours.colbert is not None and ours.colbert[2].shape == (1, 32)  # "" -> just </s>


def test_single_texts_match_flagembedding(
    encoder: LocalEncoder, flag_model: Any, ours: M3Output
) -> None:
    for i in (0, 2, 3, 6, 7):  # short, empty, CJK + emoji, truncated, repeated tokens
        text = TEXTS[i]
        mine = encoder.encode_m3([text], **OUTPUTS)
        theirs = flag_model.encode([text], batch_size=1, max_length=MAX_LENGTH, **FLAG_OUTPUTS)
        assert_outputs_equal(mine, _as_output(theirs))
        # Batch neighbours do not change a text's outputs.
        assert ours.dense is not None and ours.sparse is not None and ours.colbert is not None
        single = M3Output(
            dense=ours.dense[i : i + 1],
            sparse=ours.sparse[i : i + 1],
            colbert=ours.colbert[i : i + 1],
        )
        assert_outputs_equal(mine, single)


def test_flagembedding_left_padding(encoder: LocalEncoder, flag_left: Any, ours: M3Output) -> None:
    """FlagEmbedding's own left-padded run: lexical weights equal ours for every row.

    Its dense (hidden[:, 0]) and ColBERT (first tokens - 1 positions) slicing assumes right
    padding, so under left padding only rows without padding (the longest) are comparable for
    those two outputs.
    """
    left = flag_left.encode(TEXTS, batch_size=len(TEXTS), max_length=MAX_LENGTH, **FLAG_OUTPUTS)
    assert ours.sparse is not None and ours.dense is not None and ours.colbert is not None
    assert_sparse_equal(ours.sparse, left["lexical_weights"])
    lengths = [len(ids) for ids in encoder.tokenize(TEXTS).ids]
    unpadded = [i for i, n in enumerate(lengths) if n == max(lengths)]
    assert unpadded
    assert_dense_equal(ours.dense[unpadded], left["dense_vecs"][unpadded])
    assert_colbert_equal(
        [ours.colbert[i] for i in unpadded], [left["colbert_vecs"][i] for i in unpadded]
    )


def test_our_heads_do_not_depend_on_padding_side(
    torch_encoder: LocalEncoder, ours: M3Output
) -> None:
    """The same hidden states, padded on the left, give the same outputs."""
    encoder = torch_encoder
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(encoder.source.path), padding_side="left")
    inputs = tokenizer(
        TEXTS, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
    )
    assert (inputs["attention_mask"][:, 0] == 0).any()  # some rows are left-padded
    with torch.inference_mode():
        hidden = encoder.model(**inputs)[0]
    dense, sparse, colbert = batch_outputs(
        ForwardBatch(
            hidden=hidden, attention_mask=inputs["attention_mask"], input_ids=inputs["input_ids"]
        ),
        pooling="cls",
        normalize=True,
        sparse_head=encoder.load_head("sparse"),
        colbert_head=encoder.load_head("colbert"),
        unused_ids=frozenset({0, 1, 2, 3}),
    )
    assert_outputs_equal(M3Output(dense, sparse, colbert), ours)


def test_one_forward_pass_per_batch(torch_encoder: LocalEncoder) -> None:
    encoder = torch_encoder
    with ForwardRecorder(encoder) as dense_only:
        encoder.encode_m3(TEXTS, dense=True, batch_size=3)
    with ForwardRecorder(encoder) as everything:
        encoder.encode_m3(TEXTS, **OUTPUTS, batch_size=3)
    # 3 batches (or their row slices, run by worker threads in any order, on a multi-core
    # machine); the sparse and multi-vector outputs come from the dense output's passes.
    assert sorted(everything.shapes) == sorted(dense_only.shapes)
    assert 3 <= len(everything.shapes) <= 3 * max(1, encoder.runtime.split_workers)


def test_dense_is_encode_and_unrequested_outputs_are_none(
    encoder: LocalEncoder, ours: M3Output
) -> None:
    np.testing.assert_allclose(ours.dense_array(), encoder.encode(TEXTS), atol=1e-6)
    sparse_only = encoder.encode_m3(TEXTS[:2], dense=False, sparse=True)
    assert sparse_only.dense is None and sparse_only.colbert is None
    assert sparse_only.sparse is not None and len(sparse_only) == 2
    with pytest.raises(ValueError, match="not requested"):
        sparse_only.dense_array()
    with pytest.raises(ValueError, match="at least one"):
        encoder.encode_m3(TEXTS, dense=False)
    with pytest.raises(TypeError, match="item 1"):
        encoder.encode_m3(["a", 3], sparse=True)  # type: ignore[list-item]


def test_empty_input_makes_no_model_call(torch_encoder: LocalEncoder) -> None:
    encoder = torch_encoder
    with ForwardRecorder(encoder) as recorder:
        empty = encoder.encode_m3([], **OUTPUTS)
    assert recorder.shapes == []
    assert empty.dense is not None and empty.dense.shape == (0, 32)
    assert empty.sparse == [] and empty.colbert == []


def test_lexical_tokens_match_flagembedding(
    encoder: LocalEncoder, flag_model: Any, reference: dict[str, Any], ours: M3Output
) -> None:
    assert ours.sparse is not None
    collisions = 0
    for mine, theirs in zip(ours.sparse, reference["lexical_weights"], strict=True):
        readable = lexical_tokens(mine, encoder.tokenizer)
        expected = flag_model.convert_id_to_token([theirs])
        expected = expected if isinstance(expected, dict) else expected[0]
        assert readable.keys() == expected.keys()
        # FlagEmbedding keeps the last of several ids with the same text ("1" and "▁1");
        # lexical_tokens keeps the largest weight.
        largest: dict[str, float] = {}
        for token_id, weight in theirs.items():
            text = encoder.tokenizer.decode([int(token_id)])
            largest[text] = max(float(weight), largest.get(text, 0.0))
        collisions += len(theirs) - len(largest)
        assert all(abs(readable[k] - v) <= 1e-5 for k, v in largest.items())
    assert collisions > 0  # the numbers text has some


def test_bfloat16_is_close(m3_dir: Path, ours: M3Output) -> None:
    encoder = get_encoder(model=str(m3_dir), max_length=MAX_LENGTH, device="cpu", dtype="bfloat16")
    low = encoder.encode_m3(TEXTS, **OUTPUTS)
    assert low.dense is not None and low.dense.dtype == np.float32
    assert _cosines(low.dense, ours.dense_array()).min() > 0.99
    assert low.colbert is not None and ours.colbert is not None
    assert all(a.shape == b.shape for a, b in zip(low.colbert, ours.colbert, strict=True))


# -- scores ---------------------------------------------------------------------------------


def test_hybrid_score_matches_flagembedding_compute_score(
    encoder: LocalEncoder, flag_model: Any, ours: M3Output
) -> None:
    weights = [0.4, 0.2, 0.4]
    queries = encoder.encode_m3(QUERIES, **OUTPUTS)
    scores = hybrid_score(queries, ours, weights=weights)
    assert set(scores) == {"dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"}
    pairs = [(q, t) for q in QUERIES for t in TEXTS]
    theirs = flag_model.compute_score(
        pairs,
        batch_size=1,  # no padding inside compute_score's batches (its ColBERT sees zeros there)
        max_query_length=MAX_LENGTH,
        max_passage_length=MAX_LENGTH,
        weights_for_different_modes=weights,
    )
    for mode, matrix in scores.items():
        assert matrix.shape == (len(QUERIES), len(TEXTS))
        np.testing.assert_allclose(matrix.ravel(), theirs[mode], atol=1e-5, err_msg=mode)
    assert scores["sparse"].max() > 0  # shared tokens exist


def test_score_helpers_match_flagembedding(
    flag_model: Any, reference: dict[str, Any], ours: M3Output
) -> None:
    assert ours.sparse is not None
    query = flag_model.encode(QUERIES, max_length=MAX_LENGTH, **FLAG_OUTPUTS)
    lexical = flag_model.compute_lexical_matching_score(
        query["lexical_weights"], reference["lexical_weights"]
    )
    scores = hybrid_score(_as_output(query), ours)  # FlagEmbedding's keys are str: no overlap
    assert scores["sparse"].max() == 0.0
    query["lexical_weights"] = [{int(k): v for k, v in w.items()} for w in query["lexical_weights"]]
    scores = hybrid_score(_as_output(query), ours)
    np.testing.assert_allclose(scores["sparse"], lexical, atol=1e-5)
    for i, q in enumerate(query["colbert_vecs"]):
        for j, p in enumerate(reference["colbert_vecs"]):
            expected = float(flag_model.colbert_score(q, p))
            assert abs(colbert_score(q, p) - expected) <= 1e-5
            assert abs(scores["colbert"][i, j] - expected) <= 1e-5
            mine = lexical_matching_score(query["lexical_weights"][i], ours.sparse[j])
            assert abs(mine - float(lexical[i, j])) <= 1e-5
    dense_only = hybrid_score(M3Output(dense=ours.dense), M3Output(dense=ours.dense))
    assert set(dense_only) == {"dense"}
    with pytest.raises(ValueError, match=r"\(dense, sparse, colbert\)"):
        hybrid_score(ours, ours, weights=[1.0, 1.0])


# -- long texts and the token budget --------------------------------------------------------


def test_chunked_long_text(m3_dir: Path) -> None:
    encoder = get_encoder(model=str(m3_dir), max_length=32, long_text="chunk", device="cpu")
    unit = "The cat likes the river in London. Die Katze mag die Brücke. "
    text = unit * 30
    tokenized = encoder.tokenize([text])
    assert tokenized.chunked and len(tokenized.ids) >= 10
    assert sum(len(w) for w in tokenized.ids) >= 10 * 32
    out = encoder.encode_m3([text, "Hello world!"], **OUTPUTS)
    assert out.dense is not None and out.sparse is not None and out.colbert is not None
    assert out.dense.shape == (2, 32) and len(out.sparse) == len(out.colbert) == 2
    assert abs(np.linalg.norm(out.dense[0]) - 1.0) < 1e-5

    # The rule, window by window.
    sparse_head, colbert_head = encoder.load_head("sparse"), encoder.load_head("colbert")
    dense_windows, sparse_windows, colbert_windows = [], [], []
    for ids in tokenized.ids:
        d, s, c = batch_outputs(
            encoder.backend.forward([ids]),
            pooling="cls",
            normalize=True,
            normalize_dense=False,
            sparse_head=sparse_head,
            colbert_head=colbert_head,
            unused_ids=frozenset({0, 1, 2, 3}),
        )
        assert d is not None and s is not None and c is not None
        dense_windows.append(d[0])
        sparse_windows.append(s[0])
        colbert_windows.append(c[0])
    sizes = np.array([len(ids) for ids in tokenized.ids], dtype=np.float64)
    weighted = (np.array(dense_windows) * sizes[:, None]).sum(0) / sizes.sum()
    np.testing.assert_allclose(out.dense[0], weighted / np.linalg.norm(weighted), atol=1e-5)
    plain = np.mean(dense_windows, axis=0)
    assert float(out.dense[0] @ plain / np.linalg.norm(plain)) > 0.999  # close to the mean
    np.testing.assert_allclose(encoder.encode([text])[0], out.dense[0], atol=1e-6)

    merged: dict[int, float] = {}
    for weights in sparse_windows:
        for token, weight in weights.items():
            merged[token] = max(weight, merged.get(token, 0.0))
    assert out.sparse[0] == pytest.approx(merged, abs=1e-6)

    assert out.colbert[0].shape == (sum(len(ids) - 1 for ids in tokenized.ids), 32)
    np.testing.assert_allclose(out.colbert[0], np.concatenate(colbert_windows), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out.colbert[0], axis=1), 1.0, atol=1e-5)

    # A short text in the same call is untouched by the policy.
    short = get_encoder(model=str(m3_dir), max_length=32, device="cpu").encode_m3(
        ["Hello world!"], **OUTPUTS
    )
    assert_outputs_equal(
        M3Output(out.dense[1:], out.sparse[1:], out.colbert[1:]),
        short,
    )


def test_token_budget_is_respected(m3_dir: Path, ours: M3Output) -> None:
    budget = 100
    encoder = get_encoder(
        model=str(m3_dir),
        max_length=MAX_LENGTH,
        max_batch_tokens=budget,
        device="cpu",
        backend="torch",  # ForwardRecorder hooks the torch model
    )
    with ForwardRecorder(encoder) as recorder:
        budgeted = encoder.encode_m3(TEXTS, **OUTPUTS)
    assert len(recorder.shapes) > 1
    assert all(rows * width <= budget for rows, width in recorder.shapes), recorder.shapes
    assert_outputs_equal(budgeted, ours)


# -- errors ---------------------------------------------------------------------------------


def test_missing_head_file_is_a_clear_error(no_heads_dir: Path) -> None:
    encoder = get_encoder(model=str(no_heads_dir), max_length=MAX_LENGTH, device="cpu")
    assert encoder.encode_m3(["dense still works"]).dense_array().shape == (1, 32)
    with pytest.raises(FileNotFoundError, match=r"sparse_linear\.pt.*not a bge-m3 model"):
        encoder.encode_m3(["x"], sparse=True)
    with pytest.raises(FileNotFoundError, match=r"colbert_linear\.pt.*not a bge-m3 model"):
        encoder.encode_m3(["x"], colbert=True)
    with pytest.raises(FileNotFoundError, match="not a bge-m3 model"):
        get_encoder(model=str(no_heads_dir), backend="flagembedding", device="cpu")


# -- backend="flagembedding" ----------------------------------------------------------------


def test_flagembedding_backend_gives_the_same_outputs(m3_dir: Path, ours: M3Output) -> None:
    encoder = get_encoder(
        model=str(m3_dir), max_length=MAX_LENGTH, backend="flagembedding", device="cpu"
    )
    assert encoder.reference_backend is not None
    assert_outputs_equal(encoder.encode_m3(TEXTS, **OUTPUTS, batch_size=3), ours)
    np.testing.assert_allclose(encoder.encode(TEXTS), ours.dense_array(), atol=1e-5)
    empty = encoder.encode_m3([], **OUTPUTS)
    assert empty.dense is not None and empty.dense.shape == (0, 32) and empty.sparse == []
    with pytest.raises(ValueError, match="chunk"):
        get_encoder(model=str(m3_dir), backend="flagembedding", long_text="chunk", device="cpu")


# -- framework adapters ---------------------------------------------------------------------


def test_llamaindex_sparse_embedding(
    m3_dir: Path, no_heads_dir: Path, encoder: LocalEncoder, ours: M3Output
) -> None:
    from llama_index.core.base.embeddings.base_sparse import BaseSparseEmbedding

    from llamaindex_localembed import LocalSparseEmbedding

    embed_model = LocalSparseEmbedding(model=str(m3_dir), max_length=MAX_LENGTH, device="cpu")
    assert isinstance(embed_model, BaseSparseEmbedding)
    assert embed_model.encoder is encoder
    assert embed_model.model_name == str(m3_dir)
    assert LocalSparseEmbedding.class_name() == "LocalSparseEmbedding"
    assert ours.sparse is not None
    batch = embed_model.get_text_embedding_batch(TEXTS)
    assert_sparse_equal(batch, ours.sparse)
    assert_sparse_equal([embed_model.get_text_embedding(TEXTS[1])], ours.sparse[1:2])
    query = embed_model.get_query_embedding(QUERIES[0])
    assert_sparse_equal(
        [query], encoder.encode_m3(QUERIES[:1], dense=False, sparse=True).sparse or []
    )
    similarity = embed_model.similarity(query, batch[1])
    assert 0.0 < similarity <= 1.0
    assert embed_model.as_tokens(batch[0]) == lexical_tokens(batch[0], encoder.tokenizer)
    with pytest.raises(ValueError, match="did you mean 'max_length'"):
        LocalSparseEmbedding(model=str(m3_dir), max_lenght=8)
    with pytest.raises(FileNotFoundError, match="not a bge-m3 model"):
        LocalSparseEmbedding(model=str(no_heads_dir), max_length=MAX_LENGTH, device="cpu")


async def test_llamaindex_sparse_embedding_async(m3_dir: Path) -> None:
    from llamaindex_localembed import LocalSparseEmbedding

    embed_model = LocalSparseEmbedding(model=str(m3_dir), max_length=MAX_LENGTH, device="cpu")
    assert await embed_model.aget_text_embedding_batch(
        TEXTS
    ) == embed_model.get_text_embedding_batch(TEXTS)
    assert await embed_model.aget_query_embedding("cat") == embed_model.get_query_embedding("cat")
    assert await embed_model.aget_text_embedding("cat") == embed_model.get_text_embedding("cat")


def test_langchain_sparse_embeddings(
    m3_dir: Path, no_heads_dir: Path, encoder: LocalEncoder, ours: M3Output
) -> None:
    from langchain_localembed import LocalSparseEmbeddings, SparseVector

    embeddings = LocalSparseEmbeddings(model=str(m3_dir), max_length=MAX_LENGTH, device="cpu")
    assert embeddings.encoder is encoder
    vectors = embeddings.embed_documents(TEXTS)
    assert all(isinstance(v, SparseVector) for v in vectors)
    assert all(v.indices == sorted(v.indices) and v.tokens is None for v in vectors)
    assert_sparse_equal(
        [dict(zip(v.indices, v.values, strict=True)) for v in vectors], ours.sparse or []
    )
    query = embeddings.embed_query(QUERIES[0])
    expected = encoder.encode_m3(QUERIES[:1], dense=False, sparse=True).sparse or []
    assert_sparse_equal([dict(zip(query.indices, query.values, strict=True))], expected)
    assert asyncio.run(embeddings.aembed_query(QUERIES[0])) == query
    again = asyncio.run(embeddings.aembed_documents(TEXTS))
    assert [v.indices for v in again] == [v.indices for v in vectors]
    assert np.allclose(
        np.concatenate([v.values for v in again]),
        np.concatenate([v.values for v in vectors]),
        atol=1e-6,
    )

    readable = LocalSparseEmbeddings(
        model=str(m3_dir), max_length=MAX_LENGTH, device="cpu", convert_to_tokens=True
    ).embed_documents(TEXTS[:1])[0]
    assert readable.indices == vectors[0].indices
    assert np.allclose(readable.values, vectors[0].values, atol=1e-6)
    assert readable.tokens == [encoder.tokenizer.decode([i]) for i in readable.indices]
    with pytest.raises(ValueError, match="did you mean 'convert_to_tokens'"):
        LocalSparseEmbeddings(model=str(m3_dir), convert_to_token=True)
    with pytest.raises(FileNotFoundError, match="not a bge-m3 model"):
        LocalSparseEmbeddings(model=str(no_heads_dir), max_length=MAX_LENGTH, device="cpu")


def test_langchain_sparse_embeddings_in_qdrant(m3_dir: Path, ours: M3Output) -> None:
    qdrant = pytest.importorskip("langchain_qdrant")
    from langchain_localembed import LocalEmbeddings, LocalSparseEmbeddings

    sparse = LocalSparseEmbeddings(model=str(m3_dir), max_length=MAX_LENGTH, device="cpu")
    assert isinstance(sparse, qdrant.SparseEmbeddings)
    assert isinstance(sparse.embed_query("cat"), qdrant.SparseVector)
    docs = [t for t in TEXTS if t]
    store = qdrant.QdrantVectorStore.from_texts(
        docs,
        embedding=LocalEmbeddings(model=str(m3_dir), max_length=MAX_LENGTH, device="cpu"),
        sparse_embedding=sparse,
        retrieval_mode=qdrant.RetrievalMode.SPARSE,
        location=":memory:",
    )
    query = "Katze Brücke Berlin"
    found = store.similarity_search_with_score(query, k=len(docs))
    # Qdrant's sparse score is the lexical matching score.
    encoder = sparse.encoder
    q = encoder.encode_m3([query], dense=False, sparse=True)
    d = encoder.encode_m3(docs, dense=False, sparse=True)
    expected = dict(zip(docs, hybrid_score(q, d)["sparse"][0], strict=True))
    assert found and found[0][0].page_content == max(expected, key=expected.__getitem__)
    for document, score in found:
        assert abs(score - expected[document.page_content]) <= 1e-4
    hybrid = qdrant.QdrantVectorStore.from_texts(
        docs,
        embedding=LocalEmbeddings(model=str(m3_dir), max_length=MAX_LENGTH, device="cpu"),
        sparse_embedding=sparse,
        retrieval_mode=qdrant.RetrievalMode.HYBRID,
        location=":memory:",
    )
    assert len(hybrid.similarity_search(query, k=2)) == 2


def test_langchain_sparse_embeddings_without_langchain_qdrant(
    m3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With langchain-qdrant unimportable the adapter still works, on its own stand-ins.

    A second copy of the module is loaded while ``import langchain_qdrant`` fails.
    """
    import importlib.util

    import langchain_localembed.sparse as installed

    monkeypatch.setitem(sys.modules, "langchain_qdrant", None)  # import -> ImportError
    monkeypatch.setitem(sys.modules, "langchain_qdrant.sparse_embeddings", None)
    spec = importlib.util.spec_from_file_location("_sparse_without_qdrant", installed.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert not module.LANGCHAIN_QDRANT
    assert [c.__module__ for c in module.SparseVector.__mro__[1:3]] == [
        "_sparse_without_qdrant",
        "pydantic.main",
    ]
    embeddings = module.LocalSparseEmbeddings(
        model=str(m3_dir), max_length=MAX_LENGTH, device="cpu"
    )
    vector = embeddings.embed_query("Hello world!")
    assert isinstance(vector, module.SparseVector)
    assert vector.indices and vector.indices == sorted(vector.indices)
    with pytest.raises(ValueError, match="extra"):
        module.SparseVector(indices=[1], values=[1.0], weights=[1.0])
    assert asyncio.run(embeddings.aembed_documents(["Hello world!"])) == [vector]
