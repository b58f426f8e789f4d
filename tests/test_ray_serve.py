"""localembed.ray.serve_application on a real local Ray instance: 2 replicas on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from localembed import EncoderConfig, get_encoder
from localembed.server import ServerSettings
from tests.test_ray import local_ray  # noqa: F401  (the shared local Ray instance fixture)

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"]), pytest.mark.slow]

KEY = {"Authorization": "Bearer ray-key"}


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
        )
        serve.run(app, name="localembed", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def test_two_replicas_serve_the_encoder_s_vectors(served: str, tiny_bert_dir: Path) -> None:
    texts = ["a cat on a mat", "the stock market fell", ""]
    expected = get_encoder(model=str(tiny_bert_dir), pooling="mean", max_length=32).encode(texts)
    status = serve.status().applications["localembed"].deployments["localembed"]
    assert status.replica_states.get("RUNNING") == 2
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
    assert len(processes) == 2  # both replicas answered
    refused = httpx.post(f"{served}/v1/embeddings", json={"input": "x"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{served}/health").json()["status"] == "ok"


def test_several_models_on_ray_serve(
    request: pytest.FixtureRequest, served: str, tiny_bert_dir: Path
) -> None:
    """The multi-model app on a replica, under a route prefix: the same routes, lazy loads."""
    from localembed import RerankerConfig, get_reranker
    from localembed.ray import serve_application
    from localembed.server.models import ModelSpec
    from tests import model_factory

    reranker_dir = model_factory.build_tiny_bert_reranker(
        request.getfixturevalue("tmp_path_factory").mktemp("ray-rr")
    )
    models = [
        ModelSpec("bert", "embedding", EncoderConfig(model=str(tiny_bert_dir), pooling="mean")),
        ModelSpec("rr", "reranker", RerankerConfig(model=str(reranker_dir))),
    ]
    url = f"{served}/several"  # beside the other application (Serve's proxy strips it)
    try:
        app = serve_application(
            settings=ServerSettings(api_key="ray-key", preload=False, max_loaded_models=1),
            models=models,
            num_cpus_per_replica=0.5,
            name="several",
        )
        serve.run(app, name="several", route_prefix="/several")
        listed = httpx.get(f"{url}/v1/models", headers=KEY, timeout=60).json()["data"]
        assert [(m["id"], m["kind"], m["loaded"]) for m in listed] == [
            ("bert", "embedding", False),
            ("rr", "reranker", False),
        ]
        texts = ["a cat on a mat", ""]
        expected = get_encoder(model=str(tiny_bert_dir), pooling="mean").encode(texts)
        got = httpx.post(f"{url}/embed", json={"inputs": texts}, headers=KEY, timeout=120).json()
        assert np.abs(np.asarray(got) - expected).max() <= 1e-5
        ranked = httpx.post(
            f"{url}/v1/rerank",
            json={"query": "cat", "documents": ["a cat", "a car"], "model": "rr"},
            headers=KEY,
            timeout=120,
        ).json()
        order = get_reranker(model=str(reranker_dir)).rerank("cat", ["a cat", "a car"])
        assert [r["index"] for r in ranked["results"]] == [i for i, _ in order]
        listed = httpx.get(f"{url}/v1/models", headers=KEY).json()["data"]
        loaded = {m["id"]: m["loaded"] for m in listed}
        assert loaded == {"bert": False, "rr": True}  # one at a time: bert was evicted
        prefixed = httpx.post(
            f"{url}/models/bert/embed", json={"inputs": "x"}, headers=KEY, timeout=120
        )
        assert prefixed.status_code == 200, prefixed.text
    finally:
        serve.delete("several")
