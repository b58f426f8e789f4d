"""localembed.ray.serve_application on a real local Ray instance, on 127.0.0.1.

An ingress deployment and one deployment per model (2 replicas of the first app's model).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from localembed import EncoderConfig, get_encoder
from localembed.server import ServerSettings, create_app
from tests.test_ray import local_ray  # noqa: F401  (the shared local Ray instance fixture)

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"]), pytest.mark.slow]

KEY = {"Authorization": "Bearer ray-key"}


SAME_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/embeddings", {"input": ["a cat on a mat", "", "x " * 40]}),
    ("POST", "/v1/embeddings", {"input": "a dog", "model": "bert", "encoding_format": "base64"}),
    ("POST", "/models/bert/embed", {"inputs": ["a cat", "a dog"]}),
    ("POST", "/embed", {"inputs": "a cat"}),
    ("POST", "/tokenize", {"inputs": "a cat"}),
    ("POST", "/v1/rerank", {"query": "cat", "documents": ["a cat", "a car"], "model": "team/rr"}),
    ("POST", "/rerank", {"query": "cat", "texts": ["a cat", "a car"], "return_text": True}),
    ("POST", "/v1/embeddings", {"input": "x", "model": "nope"}),
    ("POST", "/v1/embeddings", {"input": "x", "model": "team/rr"}),
    ("POST", "/v1/embeddings", {"input": []}),
]
"""Requests the Ray application and the in-process app must answer alike."""


def assert_close(got: Any, expected: Any, where: str) -> None:
    """Equal JSON, floats within 1e-5 (the replicas may use another thread count)."""
    if isinstance(expected, float):
        assert isinstance(got, (int, float)) and abs(got - expected) <= 1e-5, where
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), where
        for key in expected:
            assert_close(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for index, (one, other) in enumerate(zip(got, expected, strict=True)):
            assert_close(one, other, f"{where}[{index}]")
    else:
        assert got == expected, where


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_settings_are_checked_in_the_driver() -> None:
    from localembed.ray import serve_application

    with pytest.raises(ValueError, match="both min_replicas and max_replicas"):
        serve_application(min_replicas=1)
    with pytest.raises(ValueError, match="0 <= min_replicas <= max_replicas"):
        serve_application(min_replicas=3, max_replicas=2)


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest, tiny_bert_dir: Path) -> Iterator[str]:
    from localembed.ray import serve_application

    request.getfixturevalue("local_ray")  # the shared local Ray instance of tests/test_ray.py

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = serve_application(
            EncoderConfig(model=str(tiny_bert_dir), pooling="mean", max_length=32),
            ServerSettings(api_key="ray-key"),
            num_replicas=2,
            num_cpus_per_replica=0.5,
            num_cpus_per_ingress=0.1,
        )
        serve.run(app, name="localembed", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def test_two_replicas_serve_the_encoder_s_vectors(served: str, tiny_bert_dir: Path) -> None:
    texts = ["a cat on a mat", "the stock market fell", ""]
    expected = get_encoder(model=str(tiny_bert_dir), pooling="mean", max_length=32).encode(texts)
    deployments = serve.status().applications["localembed"].deployments
    assert deployments["localembed"].replica_states.get("RUNNING") == 1  # the ingress
    model = deployments[f"localembed:{tiny_bert_dir.name}"]  # the model's own deployment
    assert model.replica_states.get("RUNNING") == 2
    processes = set()
    for _ in range(40):
        response = httpx.post(f"{served}/v1/embeddings", json={"input": texts}, headers=KEY)
        assert response.status_code == 200, response.text
        got = np.asarray([item["embedding"] for item in response.json()["data"]])
        assert np.abs(got - expected).max() <= 1e-5
        processes.add(httpx.get(f"{served}/info", headers=KEY).json()["process"])
        if len(processes) == 2:
            break
        time.sleep(0.05)
    assert len(processes) == 2  # both replicas of the model's deployment answered
    refused = httpx.post(f"{served}/v1/embeddings", json={"input": "x"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{served}/health").json()["status"] == "ok"


def test_several_models_on_ray_serve(
    request: pytest.FixtureRequest, served: str, tiny_bert_dir: Path
) -> None:
    """A deployment per model under a route prefix: the answers of ``localembed serve``."""
    from localembed import RerankerConfig, get_reranker
    from localembed.ray import serve_application
    from localembed.server.models import ModelSpec
    from tests import model_factory

    reranker_dir = model_factory.build_tiny_bert_reranker(
        request.getfixturevalue("tmp_path_factory").mktemp("ray-rr")
    )
    models = [
        ModelSpec("bert", "embedding", EncoderConfig(model=str(tiny_bert_dir), pooling="mean")),
        ModelSpec(
            "team/rr",
            "reranker",
            RerankerConfig(model=str(reranker_dir)),
            ray={"num_replicas": 1, "num_cpus": 0.2},  # its own [models.ID.ray] options
        ),
    ]
    settings = ServerSettings(api_key="ray-key", preload=False)
    url = f"{served}/several"  # beside the other application (Serve's proxy strips it)
    try:
        app = serve_application(
            settings=settings,
            models=models,
            num_cpus_per_replica=0.3,
            num_cpus_per_ingress=0.1,
            name="several",
        )
        serve.run(app, name="several", route_prefix="/several")
        deployments = serve.status().applications["several"].deployments
        assert set(deployments) == {"several", "several:bert", "several:team_rr"}
        listed = httpx.get(f"{url}/v1/models", headers=KEY, timeout=60).json()["data"]
        assert [(m["id"], m["kind"], m["loaded"]) for m in listed] == [
            ("bert", "embedding", False),
            ("team/rr", "reranker", False),
        ]
        with TestClient(create_app(models=models, settings=settings)) as local:
            for method, path, body in SAME_ROUTES:
                expected = local.request(method, path, json=body, headers=KEY)
                got = httpx.request(method, f"{url}{path}", json=body, headers=KEY, timeout=120)
                assert got.status_code == expected.status_code, (path, body, got.text)
                assert_close(got.json(), expected.json(), where=f"{method} {path} {body}")
        texts = ["a cat on a mat", ""]
        expected_vectors = get_encoder(model=str(tiny_bert_dir), pooling="mean").encode(texts)
        got = httpx.post(f"{url}/embed", json={"inputs": texts}, headers=KEY, timeout=120).json()
        assert np.abs(np.asarray(got) - expected_vectors).max() <= 1e-5
        order = get_reranker(model=str(reranker_dir)).rerank("cat", ["a cat", "a car"])
        ranked = httpx.post(
            f"{url}/models/team/rr/v1/rerank",
            json={"query": "cat", "documents": ["a cat", "a car"]},
            headers=KEY,
            timeout=120,
        ).json()
        assert [r["index"] for r in ranked["results"]] == [i for i, _ in order]
        listed = httpx.get(f"{url}/v1/models", headers=KEY).json()["data"]
        assert {m["id"]: m["loaded"] for m in listed} == {"bert": True, "team/rr": True}
    finally:
        serve.delete("several")
