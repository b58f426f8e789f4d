"""Several models in one server app (in process): routing, lazy load, eviction, idle unload."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from localembed import EncoderConfig, RerankerConfig, get_encoder, get_reranker
from localembed.errors import InputError
from localembed.server import ServerSettings, create_app
from localembed.server.models import ModelSpec, read_config_file
from tests import model_factory

TEXTS = ["Paris is the capital of France.", "Cats purr when content.", "", "x " * 30]


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_factory.build_tiny_bert_reranker(tmp_path_factory.mktemp("models-rr"))


@pytest.fixture(scope="module")
def specs(tiny_bert_dir: Path, tiny_xlmr_dir: Path, reranker_dir: Path) -> list[ModelSpec]:
    return [
        ModelSpec("bert", "embedding", EncoderConfig(model=str(tiny_bert_dir), pooling="mean")),
        ModelSpec("m3", "embedding", EncoderConfig(model=str(tiny_xlmr_dir), pooling="cls")),
        ModelSpec("rr", "reranker", RerankerConfig(model=str(reranker_dir))),
    ]


def bert(tiny_bert_dir: Path) -> Any:
    return get_encoder(model=str(tiny_bert_dir), pooling="mean")


def m3(tiny_xlmr_dir: Path) -> Any:
    return get_encoder(model=str(tiny_xlmr_dir), pooling="cls")


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["index"] for item in data] == list(range(len(data)))
    return np.asarray([item["embedding"] for item in data], dtype=np.float32)


def listed(client: TestClient) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in client.get("/v1/models").json()["data"]}


def test_lazy_models_load_on_first_request_and_route_by_model(
    specs: list[ModelSpec], tiny_bert_dir: Path, tiny_xlmr_dir: Path
) -> None:
    app = create_app(models=specs, settings=ServerSettings(preload=False))
    with TestClient(app) as client:
        before = listed(client)
        assert {k: (v["kind"], v["loaded"]) for k, v in before.items()} == {
            "bert": ("embedding", False),
            "m3": ("embedding", False),
            "rr": ("reranker", False),
        }
        assert before["bert"]["default"] and before["rr"]["default"]
        assert client.get("/health").json()["status"] == "ok"  # nothing to preload
        got = vectors(client.post("/v1/embeddings", json={"input": TEXTS, "model": "m3"}))
        np.testing.assert_allclose(got, m3(tiny_xlmr_dir).encode(TEXTS), atol=1e-5)
        after = listed(client)
        assert after["m3"]["loaded"] and not after["bert"]["loaded"]
        # No model: the default embedding model.
        response = client.post("/v1/embeddings", json={"input": TEXTS})
        np.testing.assert_allclose(vectors(response), bert(tiny_bert_dir).encode(TEXTS), atol=1e-5)
        assert response.json()["model"] == "bert"
        # A reranker is not an embedding model, and an unknown id lists the served ones.
        wrong = client.post("/v1/embeddings", json={"input": "x", "model": "rr"})
        assert wrong.status_code == 404 and "'rr' is a reranker model" in wrong.text
        unknown = client.post("/v1/embeddings", json={"input": "x", "model": "nope"}).json()
        assert "'bert', 'm3'" in unknown["error"]["message"]


def test_eviction_finishes_the_requests_in_progress_first(
    specs: list[ModelSpec], tiny_bert_dir: Path, tiny_xlmr_dir: Path
) -> None:
    """With room for one model, loading another waits for the first one's requests."""
    long_texts = [f"text number {i} " * 8 for i in range(1500)]

    async def scenario() -> tuple[httpx.Response, httpx.Response, list[str], Any]:
        app = create_app(models=specs, settings=ServerSettings(preload=False, max_loaded_models=1))
        state = app.state.localembed
        await state.start()
        transport = httpx.ASGITransport(app=app)
        order: list[str] = []
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await client.post("/v1/embeddings", json={"input": "warm", "model": "bert"})

                async def post(model: str, texts: list[str]) -> httpx.Response:
                    response = await client.post(
                        "/v1/embeddings", json={"input": texts, "model": model}, timeout=300
                    )
                    order.append(model)
                    return response

                slow = asyncio.create_task(post("bert", long_texts))
                while state.models["bert"].active == 0:
                    await asyncio.sleep(0.001)
                other = await post("m3", TEXTS)
                first = await slow
                metrics = (await client.get("/metrics")).text
                models = (await client.get("/v1/models")).json()["data"]
        finally:
            await state.stop()
        return first, other, order, (metrics, models)

    first, other, order, (metrics, models) = asyncio.run(scenario())
    assert order == ["bert", "m3"]  # m3 loaded only after bert's request had answered
    got = vectors(first)
    assert got.shape[0] == len(long_texts)  # nothing lost
    expected = bert(tiny_bert_dir).encode(long_texts[:3] + long_texts[-3:])
    np.testing.assert_allclose(np.vstack([got[:3], got[-3:]]), expected, atol=1e-5)
    np.testing.assert_allclose(vectors(other), m3(tiny_xlmr_dir).encode(TEXTS), atol=1e-5)
    assert 'localembed_model_unloads_total{model="bert",reason="evicted"} 1.0' in metrics
    assert {m["id"]: m["loaded"] for m in models} == {"bert": False, "m3": True, "rr": False}


def test_two_cold_models_wanted_at_once_under_a_cap_are_both_served(
    specs: list[ModelSpec],
) -> None:
    """With room for one model, cold requests for two models at once both get their rows:
    the requests a load was for take the model before the other load can evict it (they
    used to evict each other until both timed out, loading 8 times each)."""

    async def scenario() -> tuple[list[int], dict[str, tuple[int, int]]]:
        settings = ServerSettings(preload=False, max_loaded_models=1, load_timeout_s=120)
        app = create_app(models=specs, settings=settings)
        state = app.state.localembed
        await state.start()
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                responses = await asyncio.gather(
                    *(
                        client.post(
                            "/v1/embeddings", json={"input": "hello", "model": m}, timeout=300
                        )
                        for m in ("bert", "m3", "bert", "m3")
                    )
                )
        finally:
            await state.stop()
        loads = {m: (s.loads, s.unloads) for m, s in state.models.items() if m != "rr"}
        return [r.status_code for r in responses], loads

    statuses, loads = asyncio.run(scenario())
    assert statuses == [200, 200, 200, 200]
    assert all(loaded <= 2 for loaded, _ in loads.values()), loads


def test_a_failed_load_evicts_nothing_shows_no_path_and_is_tried_again(
    specs: list[ModelSpec], tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from localembed.server import state as state_module

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_bert_dir, broken)
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    bad = ModelSpec("bad", "embedding", EncoderConfig(model=str(broken), pooling="mean"))
    gone = ModelSpec("gone", "embedding", EncoderConfig(model=str(tmp_path / "secret" / "m")))
    pickled = tmp_path / "pickled-model"  # pickle weights only: refused without the opt-in
    shutil.copytree(tiny_bert_dir, pickled)
    for weights in pickled.glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    unsafe = ModelSpec("unsafe", "embedding", EncoderConfig(model=str(pickled), pooling="mean"))
    settings = ServerSettings(preload=False, max_loaded_models=1)
    monkeypatch.setattr(state_module, "LOAD_RETRY_S", 1.0)
    models = [specs[0], bad, gone, unsafe]
    with TestClient(create_app(models=models, settings=settings)) as client:
        assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 200
        failed = client.post("/v1/embeddings", json={"input": "x", "model": "bad"})
        assert failed.status_code == 503 and failed.json()["error"]["code"] == "model_load_failed"
        assert int(failed.headers["Retry-After"]) >= 1
        assert str(tmp_path) not in failed.text and "broken-model" not in failed.text
        assert "config.json" in failed.text  # still says which file
        assert listed(client)["bert"]["loaded"]  # nothing was evicted for it
        assert listed(client)["bad"]["status"] == "failed"
        for model_id in ("gone", "unsafe"):  # a missing directory; pickle weights only
            failed = client.post("/v1/embeddings", json={"input": "x", "model": model_id})
            assert failed.status_code == 503, failed.text
            assert str(tmp_path) not in failed.text and "secret" not in failed.text
            assert listed(client)["bert"]["loaded"]
        shutil.copy(tiny_bert_dir / "config.json", broken / "config.json")  # repaired
        time.sleep(1.1)
        repaired = client.post("/v1/embeddings", json={"input": "x", "model": "bad"})
        assert repaired.status_code == 200, repaired.text
        loaded = {m: v["loaded"] for m, v in listed(client).items()}
        assert loaded == {"bert": False, "bad": True, "gone": False, "unsafe": False}


def test_weights_are_estimated_as_the_loader_reads_them(
    tmp_path: Path, tiny_bert_dir: Path
) -> None:
    import shutil

    from localembed.loading import locate_model
    from localembed.server.memory import weights_size

    embedded = locate_model(None).path
    assert weights_size(None) == (embedded / "model.safetensors").stat().st_size > 0
    copy = tmp_path / "with-exports"
    shutil.copytree(tiny_bert_dir, copy)
    own = weights_size(str(copy))
    (copy / "onnx").mkdir()
    (copy / "onnx" / "model.onnx").write_bytes(b"0" * 4096)
    (copy / "pytorch_model.bin").write_bytes(b"0" * 4096)  # not read: safetensors are there
    assert weights_size(str(copy)) == own > 0
    assert weights_size("no-such/model-anywhere") == 0


def test_a_memory_cap_evicts_the_least_recently_used(specs: list[ModelSpec]) -> None:
    settings = ServerSettings(preload=False, max_loaded_mb=1e-6)  # below any model
    with TestClient(create_app(models=specs, settings=settings)) as client:
        for model in ("bert", "m3", "bert"):
            client.post("/v1/embeddings", json={"input": "x", "model": model}).raise_for_status()
            assert [m for m, v in listed(client).items() if v["loaded"]] == [model]
        text = client.get("/metrics").text
    assert 'localembed_model_loads_total{model="bert"} 2.0' in text
    assert 'localembed_model_unloads_total{model="m3",reason="evicted"} 1.0' in text


def test_idle_models_unload_and_load_again(specs: list[ModelSpec]) -> None:
    settings = ServerSettings(idle_unload_s=1.0)
    with TestClient(create_app(models=specs[:1], settings=settings)) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 'localembed_model_loads_total{model="bert"} 1.0' in client.get("/metrics").text
        while listed(client)["bert"]["loaded"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not listed(client)["bert"]["loaded"]
        assert client.post("/v1/embeddings", json={"input": "again"}).status_code == 200
        text = client.get("/metrics").text
    assert 'localembed_model_unloads_total{model="bert",reason="idle"} 1.0' in text
    assert 'localembed_model_loads_total{model="bert"} 2.0' in text


def test_a_request_that_cannot_wait_for_the_load_gets_503_with_retry_after(
    specs: list[ModelSpec],
) -> None:
    settings = ServerSettings(preload=False, load_timeout_s=0)
    with TestClient(create_app(models=specs[:1], settings=settings)) as client:
        refused = client.post("/v1/embeddings", json={"input": "x"})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
        assert refused.json()["error"]["code"] == "model_loading"
        deadline = time.monotonic() + 60
        while not listed(client)["bert"]["loaded"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 200


def test_model_api_keys_scope_the_models(specs: list[ModelSpec]) -> None:
    from dataclasses import replace

    scoped = [replace(specs[0], api_keys=frozenset({"bert-key"})), specs[2]]
    settings = ServerSettings(api_key="admin", preload=False)
    with TestClient(create_app(models=scoped, settings=settings)) as client:

        def status(key: str, path: str, body: dict[str, Any]) -> int:
            headers = {"Authorization": f"Bearer {key}"}
            return client.post(path, json=body, headers=headers).status_code

        embed = {"input": "x", "model": "bert"}
        rerank = {"query": "q", "documents": ["a"], "model": "rr"}
        assert status("bert-key", "/v1/embeddings", embed) == 200
        assert status("admin", "/v1/embeddings", embed) == 200
        assert status("bert-key", "/v1/rerank", rerank) == 401  # not this key's model
        assert status("admin", "/v1/rerank", rerank) == 200
        assert status("other", "/v1/embeddings", embed) == 401


def test_reranker_and_m3_rerank_routes(
    specs: list[ModelSpec], reranker_dir: Path, tiny_xlmr_dir: Path
) -> None:
    query, documents = "where do cats sleep", ["Cats sleep in warm places.", "Paris", ""]
    expected = get_reranker(model=str(reranker_dir)).rerank(query, documents)
    with TestClient(create_app(models=specs, settings=ServerSettings(preload=False))) as client:
        body = client.post("/v1/rerank", json={"query": query, "documents": documents}).json()
        assert body["model"] == "rr"
        assert [(r["index"], round(r["relevance_score"], 5)) for r in body["results"]] == [
            (i, round(s, 5)) for i, s in expected
        ]
        # A served bge-m3 reranks by its own heads when named.
        m3_expected = get_reranker(model=str(tiny_xlmr_dir), scoring="bge-m3").rerank(
            query, documents
        )
        by_m3 = client.post(
            "/v1/rerank", json={"query": query, "documents": documents, "model": "m3"}
        ).json()
        assert [r["index"] for r in by_m3["results"]] == [i for i, _ in m3_expected]
        not_m3 = client.post("/v1/rerank", json={"query": "q", "documents": ["a"], "model": "bert"})
        assert not_m3.status_code == 404 and "'rr'" in not_m3.text


def test_tei_routes_in_tei_shapes(
    specs: list[ModelSpec], tiny_bert_dir: Path, tiny_xlmr_dir: Path, reranker_dir: Path
) -> None:
    with TestClient(create_app(models=specs, settings=ServerSettings(preload=False))) as client:
        embedded = client.post("/embed", json={"inputs": TEXTS, "truncate": True}).json()
        np.testing.assert_allclose(embedded, bert(tiny_bert_dir).encode(TEXTS), atol=1e-5)
        single = client.post("/embed", json={"inputs": "one text"}).json()
        assert np.asarray(single).shape == (1, bert(tiny_bert_dir).dimension)
        # InferenceClient.feature_extraction posts to the URL itself, options nested.
        root = client.post("/", json={"inputs": ["a", "b"], "parameters": {"dimensions": 8}})
        assert np.asarray(root.json()).shape == (2, 8)
        # Another model: put /models/ID in front of the route.
        other = client.post("/models/m3/embed", json={"inputs": TEXTS}).json()
        np.testing.assert_allclose(other, m3(tiny_xlmr_dir).encode(TEXTS), atol=1e-5)
        sparse = client.post("/models/m3/embed_sparse", json={"inputs": ["the cat sat"]}).json()
        weights = m3(tiny_xlmr_dir).encode_m3(["the cat sat"], dense=False, sparse=True).sparse
        assert weights is not None
        assert [item["index"] for item in sparse[0]] == sorted(weights[0])
        assert set(sparse[0][0]) == {"index", "value"}
        ranks = client.post(
            "/rerank", json={"query": "cats", "texts": ["Paris", "cats nap"], "return_text": True}
        ).json()
        expected = get_reranker(model=str(reranker_dir)).rerank("cats", ["Paris", "cats nap"])
        assert [(r["index"], r["text"]) for r in ranks] == [
            (i, ["Paris", "cats nap"][i]) for i, _ in expected
        ]
        assert set(ranks[0]) == {"index", "score", "text"}
        tokens = client.post("/tokenize", json={"inputs": "héllo cat"}).json()
        ids = bert(tiny_bert_dir).tokenizer("héllo cat")["input_ids"]
        assert [t["id"] for t in tokens[0]] == ids
        assert tokens[0][0]["special"] and tokens[0][0]["start"] is None
        text = "héllo cat".encode()
        for token in tokens[0][1:-1]:  # byte offsets into the input
            assert text[token["start"] : token["stop"]].decode() == token["text"]
        info = client.get("/info").json()
        assert info["model_id"] == "bert" and info["model_type"] == {
            "embedding": {"pooling": "mean"}
        }
        assert info["max_client_batch_size"] == 2048 and str(tiny_bert_dir) not in str(info)
        rr_info = client.get("/models/rr/info").json()
        assert "reranker" in rr_info["model_type"] and str(reranker_dir) not in str(rr_info)
        error = client.post("/embed", json={"inputs": [["a"]]})
        assert error.status_code == 422
        assert (
            error.json()
            == {
                "error": error.json()["error"],
                "error_type": "Validation",
            }
            and "inputs[0]" in error.json()["error"]
        )


def test_tei_routes_answer_as_tei_does(
    specs: list[ModelSpec], tiny_bert_dir: Path, tiny_xlmr_dir: Path
) -> None:
    """TEI's statuses and error types, its normalize default, huggingface_hub 1.x's
    top-level options, a model named in the body, and errors refused before the app."""
    raw = EncoderConfig(model=str(tiny_bert_dir), pooling="mean", normalize=False)
    models = [*specs, ModelSpec("raw", "embedding", raw)]
    settings = ServerSettings(preload=False, max_client_batch=3, truncate=False)
    with TestClient(create_app(models=models, settings=settings)) as client:

        def tei_error(response: httpx.Response, status: int, kind: str) -> str:
            assert response.status_code == status, response.text
            body = response.json()
            assert set(body) == {"error", "error_type"} and body["error_type"] == kind, body
            return str(body["error"])

        # normalize defaults to true, as in TEI, even for a model that does not normalize.
        plain = get_encoder(model=str(tiny_bert_dir), pooling="mean", normalize=False)
        expected = plain.encode(["a cat", "a dog"])
        unit = client.post("/models/raw/embed", json={"inputs": ["a cat", "a dog"]}).json()
        np.testing.assert_allclose(
            unit, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5
        )
        kept = client.post("/models/raw/embed", json={"inputs": ["a cat"], "normalize": False})
        np.testing.assert_allclose(kept.json(), expected[:1], atol=1e-5)
        assert abs(np.linalg.norm(expected[0]) - 1) > 0.1  # the raw vectors are not unit
        # huggingface_hub 1.x posts every option at the top level; a body may name the model.
        top = client.post(
            "/", json={"inputs": ["a cat"], "encoding_format": "float", "model": "m3"}
        )
        np.testing.assert_allclose(top.json(), m3(tiny_xlmr_dir).encode(["a cat"]), atol=1e-5)
        base64 = client.post("/embed", json={"inputs": "a", "encoding_format": "base64"})
        assert "encoding_format" in tei_error(base64, 422, "Validation")
        # TEI's statuses: validation 422, no inputs 400 Empty.
        assert "must not be empty" in tei_error(
            client.post("/embed", json={"inputs": []}), 400, "Empty"
        )
        tei_error(client.post("/rerank", json={"query": "q", "texts": []}), 400, "Empty")
        tei_error(client.post("/embed", json={"inputs": ["a"] * 4}), 422, "Validation")
        tei_error(client.post("/embed", json={"inputs": "a", "dimensions": 999}), 422, "Validation")
        tei_error(client.post("/embed", json={"inputs": "a", "dimensions": 0}), 422, "Validation")
        long = tei_error(
            client.post("/embed", json={"inputs": ["a", "word " * 600]}), 422, "Validation"
        )
        assert long.startswith("inputs[1]") and "truncate: true" in long, long
        cut = client.post("/embed", json={"inputs": ["a", "word " * 600], "truncate": True})
        assert cut.status_code == 200 and cut.headers["X-Truncated-Inputs"] == "1"
        wrong_method = client.get("/embed")
        tei_error(wrong_method, 405, "Validation")
        assert "POST" in wrong_method.headers["Allow"]
        # Refused before the app (body too large): TEI's body on a TEI route.
        huge = client.post("/embed", json={"inputs": "x" * (17 << 20)})
        tei_error(huge, 413, "Validation")
        # A JSON body sent without any Content-Type is read as JSON.
        bare = client.post("/embed", content=b'{"inputs": "a cat"}')
        assert bare.status_code == 200 and "content-type" not in bare.request.headers
        assert client.head("/health").status_code == 200
        # Requests under /models/ID/ count as their route.
        assert 'endpoint="/embed",status="200"' in client.get("/metrics").text


def test_metrics_are_per_model(specs: list[ModelSpec]) -> None:
    with TestClient(create_app(models=specs, settings=ServerSettings(preload=False))) as client:
        client.post("/v1/embeddings", json={"input": ["a", "b"], "model": "m3"})
        client.post("/v1/rerank", json={"query": "q", "documents": ["a", "b", "c"]})
        text = client.get("/metrics").text
    assert 'localembed_texts_total{model="m3"} 2.0' in text
    assert 'localembed_texts_total{model="rr"} 3.0' in text
    assert 'localembed_texts_total{model="bert"} 0.0' in text  # listed, never used
    assert 'localembed_model_requests_total{model="m3"} 1.0' in text
    assert 'localembed_model_loaded{model="bert"} 0.0' in text
    assert 'localembed_model_loaded{model="m3"} 1.0' in text
    assert 'localembed_queue_depth{model="m3"} 0.0' in text
    resident = next(
        line
        for line in text.splitlines()
        if line.startswith('localembed_model_resident_bytes{model="m3"}')
    )
    assert float(resident.split()[-1]) > 0
    assert "localembed_process_resident_bytes" in text


def test_config_file(tmp_path: Path, tiny_bert_dir: Path, reranker_dir: Path) -> None:
    config = tmp_path / "models.toml"
    config.write_text(
        f"""
[server]
max_loaded_models = 2

[models.small]
model = "{tiny_bert_dir}"
pooling = "mean"
api_keys = ["k1"]
max_queue = 4

[models."team/rr"]
kind = "reranker"
model = "{reranker_dir}"
""",
        encoding="utf-8",
    )
    server, specs = read_config_file(config)
    assert server == {"max_loaded_models": 2}
    weights = tmp_path / "weights.toml"  # a TOML array for a tuple option
    weights.write_text(
        f'[models.m3rr]\nkind = "reranker"\nmodel = "{reranker_dir}"\n'
        "m3_weights = [0.4, 0.2, 0.4]\n",
        encoding="utf-8",
    )
    assert read_config_file(weights)[1][0].config.m3_weights == (0.4, 0.2, 0.4)
    assert [(s.id, s.kind, s.max_queue) for s in specs] == [
        ("small", "embedding", 4),
        ("team/rr", "reranker", None),
    ]
    assert specs[0].config.pooling == "mean" and specs[0].api_keys == frozenset({"k1"})
    with TestClient(create_app(models=specs, settings=ServerSettings(**server))) as client:
        # An id with a slash works in the /models/ID/ prefix too.
        ranks = client.post("/models/team/rr/rerank", json={"query": "q", "texts": ["a"]})
        assert ranks.status_code == 200 and ranks.json()[0]["index"] == 0
    bad = tmp_path / "bad.toml"
    for text, words in [
        ('[models.a]\npoolin = "mean"', "[models.a]: unknown option 'poolin' (did you mean"),
        ('[models.a]\nkind = "sparse"', "kind must be 'embedding' or 'reranker'"),
        ("[model.a]", "unknown table(s) model"),
        ("[models.a\n", "not valid TOML"),
        ("[models.a]\napi_keys = []", "api_keys must be a non-empty list"),
        ("[server]\nmax_loaded_model = 2", "unknown setting 'max_loaded_model' (did you mean"),
        ('[server]\npreload = "no"', "[server]: preload"),
        ("[server]\nmax_loaded_models = true", "[server]: max_loaded_models"),
        ('[models.a]\nmax_length = "64"', "[models.a]: max_length"),
        ('[models.""]', "non-empty name"),
        ("[models]", "no [models.ID] table"),
    ]:
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(InputError, match=re.escape(words)):
            read_config_file(bad)


def test_duplicate_ids_are_refused(specs: list[ModelSpec]) -> None:
    from dataclasses import replace

    with pytest.raises(InputError, match="two served models are named 'bert'"):
        create_app(models=[specs[0], replace(specs[1], id="bert")])
    # Two ids for one model with the same settings would share one encoder (and count its
    # batches twice): aliases are the way.
    with pytest.raises(InputError, match=r"'bert' and 'bert2' are the same model.*aliases"):
        create_app(models=[specs[0], replace(specs[0], id="bert2")])


def test_concurrent_rerank_requests_share_forward_passes_and_keep_their_rows(
    specs: list[ModelSpec], reranker_dir: Path
) -> None:
    """The reranker's pair batcher merges requests; each still gets rerank()'s answer."""
    reranker = get_reranker(model=str(reranker_dir))
    bodies = [
        {
            "query": f"query {i} about cats",
            "documents": [f"doc {j} " * (i + j) for j in range(i + 1)],
        }
        for i in range(8)
    ]

    async def scenario() -> list[httpx.Response]:
        app = create_app(models=specs[2:], settings=ServerSettings(preload=False))
        await app.state.localembed.start()
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return list(
                    await asyncio.gather(*(client.post("/v1/rerank", json=b) for b in bodies))
                )
        finally:
            await app.state.localembed.stop()

    for body, response in zip(bodies, asyncio.run(scenario()), strict=True):
        expected = reranker.rerank(body["query"], body["documents"])
        results = response.json()["results"]
        assert [r["index"] for r in results] == [i for i, _ in expected]
        np.testing.assert_allclose(
            [r["relevance_score"] for r in results], [s for _, s in expected], atol=1e-5
        )


MMAP_PROBE = """
import sys

from localembed.server.memory import fix_mmap_threshold, resident_bytes

if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
first = bytearray(4 << 20)  # mapped; freeing it raises glibc's dynamic threshold to 4 MiB
del first
base = resident_bytes()
second = bytearray(4 << 20)  # with the raised threshold: from the heap, kept when freed
del second
print(resident_bytes() - base)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_fixed_mmap_threshold_returns_a_freed_batch_s_memory() -> None:
    """What keeps the server's RSS from creeping over batches of new shapes."""

    def kept(mode: str) -> int:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
        done = subprocess.run(
            [sys.executable, "-c", MMAP_PROBE, mode],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return int(done.stdout.strip())

    assert kept("plain") >= 3 << 20  # glibc's default keeps the freed 4 MiB
    assert kept("fixed") < 1 << 20  # returned to the system


TRIM_PROBE = """
import sys
import time

from localembed.server.memory import HeapTrimmer, resident_bytes

first = bytearray(4 << 20)  # mapped; freeing it raises glibc's dynamic threshold to 4 MiB
del first
hole = bytearray(4 << 20)  # from the heap now
above = bytearray(64 << 10)  # keeps the freed block a hole, not the heap's top
del hole
base = resident_bytes()
if sys.argv[1] == "trim":
    assert HeapTrimmer(interval=0.05).start()
time.sleep(0.5)
print(base - resident_bytes())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_the_heap_trimmer_returns_a_freed_hole_in_the_heap() -> None:
    """What keeps the server's RSS from creeping (``LOCALEMBED_HEAP=trim``, the default)."""

    def returned(mode: str) -> int:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
        done = subprocess.run(
            [sys.executable, "-c", TRIM_PROBE, mode],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return int(done.stdout.strip())

    assert returned("plain") < 1 << 20  # glibc keeps the hole's pages
    assert returned("trim") >= 3 << 20  # the trimmer's thread hands them back


def test_the_heap_policy_is_read_from_the_environment_and_a_typo_is_an_error() -> None:
    from localembed.errors import InputError
    from localembed.server.memory import bound_heap

    assert bound_heap({"LOCALEMBED_HEAP": "off"}) == "off"
    with pytest.raises(InputError, match="'trimm' is not one of trim, mmap, off"):
        bound_heap({"LOCALEMBED_HEAP": "trimm"})


def test_a_served_bge_m3_reranks_with_the_loaded_encoder_itself(specs: list[ModelSpec]) -> None:
    """Its reranker holds no second copy of the weights (the memory cap counts one)."""
    app = create_app(models=specs, settings=ServerSettings(preload=False))
    with TestClient(app) as client:
        body = {"query": "cats", "documents": ["Cats purr.", "Paris"], "model": "m3"}
        response = client.post("/v1/rerank", json=body)
        assert response.status_code == 200, response.text
        served = app.state.localembed.models["m3"]
        assert served.extras["reranker"].encoder is served.model
