"""POST /v1/rerank on the server app (in process): Cohere's shape, the reranker's order, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from localembed import get_encoder, get_reranker
from localembed.server import ServerSettings, create_app
from tests import model_factory

QUERY = "where do cats sleep"
DOCUMENTS = [
    "Cats sleep in warm places.",
    "Paris is the capital of France.",
    "",
    "A cat sleeps on the sofa, the bed and the windowsill " * 3,
    "dogs",
]
KEY = {"Authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_factory.build_tiny_bert_reranker(tmp_path_factory.mktemp("server-rr"))


def client_for(model: Path, **settings: Any) -> TestClient:
    encoder = get_encoder(model=str(model), device="cpu")
    return TestClient(create_app(encoder=encoder, settings=ServerSettings(**settings)))


def test_rerank_returns_the_reranker_order(tiny_bert_dir: Path, reranker_dir: Path) -> None:
    expected = get_reranker(model=str(reranker_dir), device="cpu").rerank(QUERY, DOCUMENTS)
    with client_for(tiny_bert_dir, reranker=str(reranker_dir), api_key="s3cret") as client:
        response = client.post(
            "/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS}, headers=KEY
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert [r["index"] for r in body["results"]] == [i for i, _ in expected]
        np.testing.assert_allclose(
            [r["relevance_score"] for r in body["results"]], [s for _, s in expected], atol=1e-6
        )
        assert all("document" not in r for r in body["results"])
        assert body["model"] == reranker_dir.name  # the id: no file-system path

        top = client.post(
            "/v1/rerank",
            json={"query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": True},
            headers=KEY,
        ).json()["results"]
        assert [(r["index"], r["document"]["text"]) for r in top] == [
            (i, DOCUMENTS[i]) for i, _ in expected[:2]
        ]
        # Cohere's v1 document objects: their text is ranked, other fields ignored.
        objects = [{"text": text, "id": str(i)} for i, text in enumerate(DOCUMENTS)]
        as_objects = client.post(
            "/v1/rerank",
            json={"query": QUERY, "documents": objects, "return_documents": True},
            headers=KEY,
        ).json()["results"]
        assert [(r["index"], r["document"]["text"]) for r in as_objects] == [
            (i, DOCUMENTS[i]) for i, _ in expected
        ]
        empty = client.post("/v1/rerank", json={"query": QUERY, "documents": []}, headers=KEY)
        assert empty.status_code == 200 and empty.json()["results"] == []
        assert (
            client.post("/v1/rerank", json={"query": QUERY, "documents": ["a"]}).status_code == 401
        )


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"query": QUERY, "documents": ["a", 3]}, 400, "documents[1]"),
        ({"query": QUERY, "documents": ["a", {"txt": "b"}]}, 400, "documents[1].text"),
        ({"query": QUERY, "documents": "a document"}, 400, "documents"),
        ({"query": 3, "documents": ["a"]}, 400, "query"),
        ({"query": QUERY, "documents": ["a"], "top_n": 0}, 400, "top_n"),
        ({"query": QUERY, "documents": ["a"], "topn": 1}, 400, "topn"),
        ({"query": QUERY, "documents": ["a"], "model": "other"}, 404, "model"),
        ({"query": QUERY, "documents": ["a"] * 5}, 413, "documents"),
    ],
)
def test_bad_requests_name_the_parameter(
    tiny_bert_dir: Path, reranker_dir: Path, body: dict[str, Any], status: int, param: str
) -> None:
    with client_for(tiny_bert_dir, reranker=str(reranker_dir), max_client_batch=4) as client:
        response = client.post("/v1/rerank", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_without_a_reranker_a_plain_model_answers_404(tiny_bert_dir: Path) -> None:
    with client_for(tiny_bert_dir) as client:
        response = client.post("/v1/rerank", json={"query": QUERY, "documents": ["a"]})
    assert response.status_code == 404
    assert "--reranker" in response.json()["error"]["message"]


def test_a_served_bge_m3_reranks_by_its_heads(tiny_xlmr_dir: Path) -> None:
    expected = get_reranker(model=str(tiny_xlmr_dir), device="cpu").rerank(QUERY, DOCUMENTS)
    with client_for(tiny_xlmr_dir) as client:
        response = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [i for i, _ in expected]
    np.testing.assert_allclose(
        [r["relevance_score"] for r in results], [s for _, s in expected], atol=1e-6
    )


def test_top_n_must_be_a_json_integer(tiny_bert_dir: Path, reranker_dir: Path) -> None:
    with client_for(tiny_bert_dir, reranker=str(reranker_dir)) as client:
        for value in (True, 1.0, "1"):
            body = {"query": QUERY, "documents": ["a", "b"], "top_n": value}
            response = client.post("/v1/rerank", json=body)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == "top_n"


def test_no_truncate_refuses_an_over_long_pair_naming_the_document(
    tiny_bert_dir: Path, reranker_dir: Path
) -> None:
    documents = ["short", "word " * 600, "also short"]
    body = {"query": QUERY, "documents": documents}
    with client_for(tiny_bert_dir, reranker=str(reranker_dir), truncate=False) as client:
        response = client.post("/v1/rerank", json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "documents[1]" and error["code"] == "input_too_long"
        fits = client.post("/v1/rerank", json={"query": QUERY, "documents": documents[::2]})
        assert fits.status_code == 200
    with client_for(tiny_bert_dir, reranker=str(reranker_dir)) as client:  # --truncate
        assert client.post("/v1/rerank", json=body).status_code == 200


def test_non_finite_scores_are_a_422_naming_the_documents(
    tiny_bert_dir: Path, reranker_dir: Path, tmp_path: Path
) -> None:
    nan_reranker = model_factory.overflow_word(reranker_dir, tmp_path / "nan-rr")
    with client_for(tiny_bert_dir, reranker=str(nan_reranker)) as client:
        body = {"query": "where", "documents": ["dog", "a cat", "bird"]}
        response = client.post("/v1/rerank", json=body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "non_finite_embedding" and error["param"] == "documents[1]"
