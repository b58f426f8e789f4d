"""LocalReranker against sentence-transformers' CrossEncoder and FlagEmbedding's compute_score."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from localembed import LocalReranker, get_reranker
from localembed.reranker import RerankerConfig
from tests import model_factory

QUERY = "where do cats sleep"
DOCUMENTS = [
    "Cats sleep in warm places.",
    "The river runs through Paris " * 6,
    "",
    "dogs",
    "A cat sleeps on the sofa, the bed, the windowsill and sometimes in a box " * 3,
    "Le chat dort au soleil.",
    "cats",
]
PAIRS = [(QUERY, document) for document in DOCUMENTS] + [
    ("", "a document for an empty query"),
    ("a long query that goes on " * 8, "short"),
    ("cats?", "Cats sleep in warm places."),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def reranker_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rerankers")
    return {
        "bert": model_factory.build_tiny_bert_reranker(root / "bert"),
        "xlm-roberta": model_factory.build_tiny_xlm_roberta_reranker(root / "xlmr"),
    }


def _cross_encoder(path: Path, **options: Any) -> Any:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(path), device="cpu", **options)


@pytest.mark.parametrize("name", ["bert", "xlm-roberta"])
@pytest.mark.parametrize("activation", ["auto", "none"])
def test_scores_equal_cross_encoder_predict(
    reranker_dirs: dict[str, Path], name: str, activation: str
) -> None:
    reranker = get_reranker(model=str(reranker_dirs[name]), device="cpu", activation=activation)
    oracle = _cross_encoder(reranker_dirs[name])
    expected = oracle.predict(
        PAIRS, activation_fn=torch.nn.Identity() if activation == "none" else None
    )
    scores = reranker.score(PAIRS)
    assert scores.shape == (len(PAIRS),) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    assert reranker.activation == ("sigmoid" if activation == "auto" else "none")
    if activation == "none":
        assert np.ptp(scores) > 100 * 1e-5  # the logits differ well beyond the tolerance


@pytest.mark.parametrize("name", ["bert", "xlm-roberta"])
def test_scores_do_not_depend_on_batch_neighbours_or_order(
    reranker_dirs: dict[str, Path], name: str
) -> None:
    reranker = get_reranker(model=str(reranker_dirs[name]), device="cpu", activation="none")
    together = reranker.score(PAIRS)
    alone = np.array([reranker.score([pair])[0] for pair in PAIRS])
    reverse = reranker.score(PAIRS[::-1], batch_size=3)[::-1]
    budgeted = get_reranker(
        model=str(reranker_dirs[name]), device="cpu", activation="none", max_batch_tokens=40
    ).score(PAIRS)
    for other in (alone, reverse, budgeted):
        np.testing.assert_allclose(other, together, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["bert", "xlm-roberta"])
def test_truncation_matches_cross_encoder_and_is_counted(
    reranker_dirs: dict[str, Path], name: str, caplog: pytest.LogCaptureFixture
) -> None:
    reranker = get_reranker(model=str(reranker_dirs[name]), device="cpu", max_length=16)
    tokenizer = reranker.tokenizer
    over = sum(len(tokenizer(q, d)["input_ids"]) > 16 for q, d in PAIRS)
    assert 0 < over < len(PAIRS)
    with caplog.at_level(logging.WARNING, logger="localembed"):
        scores = reranker.score(PAIRS)
    assert f"{over} of {len(PAIRS)} pairs were longer than 16 tokens" in caplog.text
    queries, documents = zip(*PAIRS, strict=True)
    tokenized = reranker.tokenize(list(queries), list(documents))
    assert tokenized.truncated == over
    assert max(len(ids) for ids in tokenized.ids) == 16
    expected = _cross_encoder(reranker_dirs[name], max_length=16).predict(PAIRS)
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)


def test_very_long_document_is_cut_like_cross_encoder(reranker_dirs: dict[str, Path]) -> None:
    reranker = get_reranker(model=str(reranker_dirs["bert"]), device="cpu", max_length=16)
    pairs = [("cats", "sleeping cats " * 5000), ("cats " * 5000, "sleep")]
    expected = _cross_encoder(reranker_dirs["bert"], max_length=16).predict(pairs)
    np.testing.assert_allclose(reranker.score(pairs), expected, atol=1e-5, rtol=0)


def test_rerank_orders_like_cross_encoder_rank(reranker_dirs: dict[str, Path]) -> None:
    reranker = get_reranker(model=str(reranker_dirs["xlm-roberta"]), device="cpu")
    oracle = _cross_encoder(reranker_dirs["xlm-roberta"]).rank(QUERY, DOCUMENTS)
    ranked = reranker.rerank(QUERY, DOCUMENTS)
    assert [index for index, _ in ranked] == [row["corpus_id"] for row in oracle]
    np.testing.assert_allclose(
        [score for _, score in ranked], [row["score"] for row in oracle], atol=1e-5
    )
    assert reranker.rerank(QUERY, DOCUMENTS, top_n=3) == ranked[:3]
    assert reranker.rerank(QUERY, DOCUMENTS, top_n=0) == []


def test_ties_keep_input_order(reranker_dirs: dict[str, Path]) -> None:
    reranker = get_reranker(model=str(reranker_dirs["bert"]), device="cpu")
    ranked = reranker.rerank(QUERY, ["same", "other", "same", "same"])
    same = [index for index, _ in ranked if index != 1]
    assert same == [0, 2, 3]


def test_equal_pairs_get_equal_scores_whatever_their_batches(
    reranker_dirs: dict[str, Path],
) -> None:
    """Equal documents in different batches (other neighbours, other padding) score exactly
    alike, so ties keep input order; scored apart, the last bits differed (batch_size=2)."""
    reranker = get_reranker(model=str(reranker_dirs["bert"]), device="cpu")
    fillers = [f"filler text that is rather long {'and longer ' * (i % 7)}" for i in range(40)]
    documents = ["same", *fillers, "same", "same"]
    scores = reranker.score([("q", document) for document in documents], batch_size=2)
    assert scores[0] == scores[-2] == scores[-1]
    alone = reranker.score([("q", "same")])
    assert abs(float(scores[0]) - float(alone[0])) <= 1e-6
    ranked = [index for index, _ in reranker.rerank("q", documents, batch_size=2)]
    same = [index for index in ranked if documents[index] == "same"]
    assert same == [0, len(documents) - 2, len(documents) - 1]


def test_bad_input_gets_the_encoder_errors(reranker_dirs: dict[str, Path]) -> None:
    reranker = get_reranker(model=str(reranker_dirs["bert"]), device="cpu")
    assert reranker.rerank(QUERY, []) == []
    assert reranker.score([]).shape == (0,)
    with pytest.raises(TypeError, match="item 1 is int"):
        reranker.rerank(QUERY, ["a", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="single str"):
        reranker.rerank(QUERY, "a document")
    with pytest.raises(TypeError, match="query must be a str"):
        reranker.rerank(None, ["a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="single str"):
        reranker.score("query")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pair 1: the document is bytes"):
        reranker.score([("q", "d"), ("q", b"d")])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="pair 0 is str"):
        reranker.score(["qd"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="top_n"):
        reranker.rerank(QUERY, ["a"], top_n=-1)


def test_equal_settings_share_one_model(reranker_dirs: dict[str, Path]) -> None:
    path = str(reranker_dirs["bert"])
    first = get_reranker(model=path, device="cpu")
    assert get_reranker(RerankerConfig(model_name=path, device="cpu")) is first
    assert get_reranker(model=Path(path), device="cpu", batch_size=32) is first
    assert get_reranker(model=path, device="cpu", activation="none") is not first
    assert isinstance(first, LocalReranker)


def test_options_are_validated_with_hints() -> None:
    with pytest.raises(ValueError, match="did you mean 'activation'"):
        RerankerConfig(model="m", activaton="none")
    with pytest.raises(ValueError, match="device must be one of"):
        RerankerConfig(model="m", device="gpu")
    with pytest.raises(ValueError, match="model"):
        RerankerConfig()  # type: ignore[call-arg]


def test_a_bare_encoder_is_not_a_reranker(tiny_bert_dir: Path) -> None:
    with pytest.raises(ValueError, match="is not a reranker"):
        get_reranker(model=str(tiny_bert_dir), device="cpu")


def test_saved_activation_is_followed(reranker_dirs: dict[str, Path], tmp_path: Path) -> None:
    """A CrossEncoder saved with Identity (as the ms-marco models are) gives raw logits."""
    target = tmp_path / "identity"
    _cross_encoder(reranker_dirs["bert"], activation_fn=torch.nn.Identity()).save(str(target))
    reranker = get_reranker(model=str(target), device="cpu")
    assert reranker.activation == "none"
    assert reranker.sources["activation"] == "sentence-transformers"
    expected = _cross_encoder(target).predict(PAIRS)
    np.testing.assert_allclose(reranker.score(PAIRS), expected, atol=1e-5, rtol=0)
    assert (expected < 0).any() or (expected > 1).any()  # logits, not probabilities


def test_several_labels_score_per_label(tmp_path: Path) -> None:
    path = model_factory.build_tiny_bert_reranker(tmp_path / "three", num_labels=3)
    reranker = get_reranker(model=str(path), device="cpu")
    expected = _cross_encoder(path).predict(PAIRS)
    scores = reranker.score(PAIRS)
    assert scores.shape == (len(PAIRS), 3)
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="one-label model"):
        reranker.rerank(QUERY, DOCUMENTS)


def test_missing_head_weights_are_an_error(
    reranker_dirs: dict[str, Path], tiny_bert_dir: Path, tmp_path: Path
) -> None:
    """A classification config over bare encoder weights would score with a random head."""
    target = tmp_path / "no-head"
    shutil.copytree(tiny_bert_dir, target)
    shutil.copyfile(reranker_dirs["bert"] / "config.json", target / "config.json")
    with pytest.raises(OSError, match="missing"):
        get_reranker(model=str(target), device="cpu")


def test_onnx_backend_matches_torch(
    reranker_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("LOCALEMBED_CACHE", str(tmp_path))
    for name in ("bert", "xlm-roberta"):
        path = str(reranker_dirs[name])
        torch_scores = get_reranker(model=path, device="cpu", activation="none").score(PAIRS)
        onnx = get_reranker(model=path, device="cpu", activation="none", backend="onnx")
        assert onnx.model is None and onnx.runtime is not None
        np.testing.assert_allclose(onnx.score(PAIRS), torch_scores, atol=1e-4, rtol=0)
    assert list(tmp_path.rglob("model.onnx"))  # exported into the cache folder


def test_int8_is_close(reranker_dirs: dict[str, Path]) -> None:
    path = str(reranker_dirs["xlm-roberta"])
    exact = get_reranker(model=path, device="cpu").score(PAIRS)
    quantized = get_reranker(model=path, device="cpu", quantize="int8").score(PAIRS)
    assert np.abs(quantized - exact).max() < 0.05


# -- bge-m3 -----------------------------------------------------------------------------------

M3_MAX_LENGTH = 64


@pytest.mark.parametrize("weights", [None, (0.4, 0.2, 0.4)])
def test_bge_m3_reranks_like_flagembedding_compute_score(
    tiny_xlmr_dir: Path, weights: tuple[float, float, float] | None
) -> None:
    from FlagEmbedding import BGEM3FlagModel

    options: dict[str, Any] = {"m3_weights": weights} if weights else {}
    reranker = get_reranker(
        model=str(tiny_xlmr_dir), device="cpu", max_length=M3_MAX_LENGTH, **options
    )
    assert reranker.scoring == "bge-m3"
    flag = BGEM3FlagModel(str(tiny_xlmr_dir), use_fp16=False, devices="cpu")
    theirs = flag.compute_score(
        PAIRS,
        batch_size=1,  # no padding inside compute_score's batches (its ColBERT sees zeros there)
        max_query_length=M3_MAX_LENGTH,
        max_passage_length=M3_MAX_LENGTH,
        weights_for_different_modes=list(weights) if weights else None,
    )
    np.testing.assert_allclose(
        reranker.score(PAIRS), theirs["colbert+sparse+dense"], atol=1e-5, rtol=0
    )
    ranked = reranker.rerank(QUERY, DOCUMENTS, top_n=4)
    expected = np.argsort(-np.asarray(theirs["colbert+sparse+dense"][: len(DOCUMENTS)]))
    assert [index for index, _ in ranked] == list(expected[:4])
    dense = get_reranker(
        model=str(tiny_xlmr_dir), device="cpu", max_length=M3_MAX_LENGTH, m3_score="dense"
    )
    np.testing.assert_allclose(dense.score(PAIRS), theirs["dense"], atol=1e-5, rtol=0)


# -- the command ------------------------------------------------------------------------------


def test_cli_rerank_prints_the_ranking(
    reranker_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from localembed.cli import main

    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(text or "-" for text in DOCUMENTS) + "\n", encoding="utf-8")
    texts = docs.read_text(encoding="utf-8").splitlines()
    path = str(reranker_dirs["xlm-roberta"])
    expected = get_reranker(model=path, device="cpu").rerank(QUERY, texts, top_n=3)
    common = [QUERY, "--file", str(docs), "--model", path, "--device", "cpu", "--top-n", "3"]
    assert main(["rerank", *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "doc", "source", "score", "document"]
    assert [int(line.split()[1]) - 1 for line in lines[1:]] == [i for i, _ in expected]
    assert [line.split()[2] for line in lines[1:]] == [f"docs.txt:{i + 1}" for i, _ in expected]
    assert main(["rerank", *common, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["index"], r["document"]) for r in report["results"]] == [
        (i, texts[i]) for i, _ in expected
    ]
    np.testing.assert_allclose(
        [r["relevance_score"] for r in report["results"]], [s for _, s in expected], atol=1e-6
    )
    assert all(r["source"] == f"docs.txt:{r['index'] + 1}" for r in report["results"])
    assert main(["rerank", QUERY, "--model", path]) == 2  # no documents
    assert "give documents" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: an unknown flag is a usage error
        main(["rerank", QUERY, "--doc", "a", "--model", path, "--activaton", "none"])
    assert main(["rerank", QUERY, "--doc", "a", "--model", path, "--top-n", "0"]) == 2


def test_non_finite_scores_raise_the_encoder_error_naming_the_pairs(
    reranker_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from localembed import NonFiniteEmbeddingError

    path = model_factory.overflow_word(reranker_dirs["bert"], tmp_path / "nan-rr")
    reranker = get_reranker(model=str(path), device="cpu")
    with pytest.raises(NonFiniteEmbeddingError, match=r"2 of 3 pairs .*rows 0, 2\)") as raised:
        reranker.rerank("where", ["a cat", "dog", "cat"])
    assert raised.value.rows == [0, 2]


def test_cli_rerank_numbers_doc_and_file_documents_apart(
    reranker_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--doc texts come first: doc counts over all; source says --doc N or FILE:LINE."""
    import json

    from localembed.cli import main

    docs = tmp_path / "docs.txt"
    docs.write_text("file one\nfile two\n", encoding="utf-8")
    path = str(reranker_dirs["bert"])
    argv = ["rerank", QUERY, "--doc", "inline one", "--doc", "inline two", "--file", str(docs)]
    assert main([*argv, "--model", path, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    by_index = {r["index"]: (r["source"], r["document"]) for r in results}
    assert by_index == {
        0: ("--doc 1", "inline one"),
        1: ("--doc 2", "inline two"),
        2: ("docs.txt:1", "file one"),
        3: ("docs.txt:2", "file two"),
    }
    assert main([*argv, "--model", path]) == 0
    rows = [line.split(maxsplit=4) for line in capsys.readouterr().out.splitlines()[1:]]
    shown = {(row[1], row[2] if row[2] != "--doc" else f"--doc {row[3]}") for row in rows}
    assert shown == {("1", "--doc 1"), ("2", "--doc 2"), ("3", "docs.txt:1"), ("4", "docs.txt:2")}
