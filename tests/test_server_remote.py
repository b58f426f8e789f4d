"""A forwarding app (Ray Serve's ingress, in process): it answers as the app that holds the models.

The ingress app loads nothing; each request goes, as received, to an app serving its one
model (what a Ray Serve model deployment runs). Every answer, errors included, must be the
answer of one ``create_app`` serving all the models.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from localembed import EncoderConfig, RerankerConfig
from localembed.server import ServerSettings, create_app
from localembed.server.models import ModelSpec, check_specs
from localembed.server.remote import Answer, Forwarded, Remote, call_app
from tests import model_factory


@pytest.fixture(scope="module")
def specs(tiny_bert_dir: Path, tiny_xlmr_dir: Path, tmp_path_factory: Any) -> list[ModelSpec]:
    reranker_dir = model_factory.build_tiny_bert_reranker(tmp_path_factory.mktemp("remote-rr"))
    return [
        ModelSpec(
            "bert",
            "embedding",
            EncoderConfig(model=str(tiny_bert_dir), pooling="mean", max_length=16),
            aliases=frozenset({"bert-alias"}),
        ),
        ModelSpec(
            "team/m3",
            "embedding",
            EncoderConfig(model=str(tiny_xlmr_dir), pooling="cls"),
            api_keys=frozenset({"team-key"}),
        ),
        ModelSpec("rr", "reranker", RerankerConfig(model=str(reranker_dir))),
    ]


class InProcessModels:
    """One app per model, started on first use in the caller's event loop."""

    def __init__(self, specs: list[ModelSpec], settings: ServerSettings) -> None:
        self.apps = {spec.id: create_app(models=[spec], settings=settings) for spec in specs}
        self.stack = AsyncExitStack()
        self.started: set[str] = set()
        self.forwarded: list[str] = []

    async def forward(self, model_id: str, request: Forwarded) -> Answer:
        app = self.apps[model_id]
        if model_id not in self.started:
            self.started.add(model_id)
            await self.stack.enter_async_context(app.router.lifespan_context(app))
        self.forwarded.append(model_id)
        return await call_app(app, request)

    async def statuses(self) -> dict[str, tuple[str, str | None]]:
        return {
            model_id: (app.state.localembed.models[model_id].status, None)
            for model_id, app in self.apps.items()
        }


REQUESTS: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
    # (method, path, JSON body, model the request reaches or None: answered by the ingress)
    ("POST", "/v1/embeddings", {"input": ["a cat", "", "x " * 40]}, "bert"),
    ("POST", "/v1/embeddings", {"input": "a cat", "model": "bert-alias"}, "bert"),
    ("POST", "/v1/embeddings", {"input": ["a", "b"], "model": "team/m3"}, "team/m3"),
    ("POST", "/models/team/m3/v1/embeddings", {"input": "a cat"}, "team/m3"),
    ("POST", "/models/team/m3/embed", {"inputs": ["a cat", "a dog"]}, "team/m3"),
    ("POST", "/embed", {"inputs": "a cat"}, "bert"),
    ("POST", "/tokenize", {"inputs": "a cat"}, "bert"),
    ("GET", "/info", None, "bert"),
    ("GET", "/models/rr/info", None, "rr"),
    ("POST", "/v1/rerank", {"query": "cat", "documents": ["a cat", "a car"]}, "rr"),
    ("POST", "/rerank", {"query": "cat", "texts": ["a cat", "a car"]}, "rr"),
    ("POST", "/v1/embeddings", {"input": "x", "model": "nope"}, None),
    ("POST", "/v1/embeddings", {"input": "x", "model": "rr"}, None),
    ("POST", "/v1/embeddings", {"input": []}, None),
    ("POST", "/v1/embeddings", {"input": "x", "dimensions": 4096}, "bert"),
    ("POST", "/embed", {"inputs": 3}, None),
    ("POST", "/v1/rerank", {"query": "cat"}, None),
]


def answers(client: TestClient, key: str) -> list[tuple[int, Any, str | None]]:
    got = []
    for method, path, body, _ in REQUESTS:
        response = client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {key}"}
        )
        body_of = response.json()
        if path.endswith("/info"):
            body_of = {k: v for k, v in body_of.items() if k != "process"}
        got.append((response.status_code, body_of, response.headers.get("x-truncated-inputs")))
    return got


def test_forwarded_requests_answer_as_the_app_that_holds_the_models(
    specs: list[ModelSpec],
) -> None:
    settings = ServerSettings(api_key="server-key", preload=False)
    with TestClient(create_app(models=specs, settings=settings)) as client:
        expected = answers(client, "server-key")
    models = InProcessModels(check_specs(specs), settings)
    remote = Remote(forward=models.forward, statuses=models.statuses)
    ingress = create_app(models=specs, settings=settings, remote=remote)
    with TestClient(ingress) as client:
        listed = client.get("/v1/models", headers={"Authorization": "Bearer server-key"}).json()
        assert [m["loaded"] for m in listed["data"]] == [False, False, False]
        got = answers(client, "server-key")
        listed = client.get("/v1/models", headers={"Authorization": "Bearer server-key"}).json()
        # The model key may use its model, not the others (checked where the models are too).
        team = {"Authorization": "Bearer team-key"}
        allowed = client.post(
            "/v1/embeddings", json={"input": "a", "model": "team/m3"}, headers=team
        )
        refused = client.post("/v1/embeddings", json={"input": "a"}, headers=team)
        health = client.get("/health")
        own = client.get("/metrics").text
        replica = client.get("/models/bert/metrics", headers={"Authorization": "Bearer server-key"})
        client.portal.call(models.stack.aclose)  # type: ignore[union-attr]  # stop the model apps
    for request, one, other in zip(REQUESTS, expected, got, strict=True):
        assert one == other, request
    reached = [model for *_, model in REQUESTS if model is not None] + ["team/m3", "bert"]
    assert models.forwarded == reached  # each to its model's app; refusals stay at the ingress
    assert [m["loaded"] for m in listed["data"]] == [True, True, True]
    assert allowed.status_code == 200
    assert refused.status_code == 401 and "may not use model 'bert'" in refused.text
    assert health.status_code == 200 and health.json()["status"] == "ok"
    # The ingress's metrics count requests; a model's series come from its own app.
    assert 'localembed_requests_total{endpoint="/v1/embeddings",status="200"}' in own
    assert 'localembed_model_loads_total{model="bert"} 0.0' in own  # loads nothing itself
    assert 'localembed_model_loads_total{model="bert"} 1.0' in replica.text
    assert not ingress.state.localembed.models["bert"].model  # the ingress loaded nothing


def test_a_model_s_ray_table_is_checked_when_the_file_is_read(tmp_path: Path) -> None:
    from localembed.errors import InputError
    from localembed.server.models import read_config_file

    path = tmp_path / "models.toml"
    path.write_text(
        '[models.a]\nmodel = "m"\nray = { num_replicas = 2, num_cpus = 0.5 }\n'
        '[models.b]\nmodel = "n"\n'
    )
    _, specs = read_config_file(path)
    assert [spec.ray for spec in specs] == [{"num_replicas": 2, "num_cpus": 0.5}, {}]
    for table, message in [
        ("ray = { replicas = 2 }", r"\[models.a\].ray: unknown option 'replicas'"),
        ("ray = { num_replicas = 0 }", r"num_replicas must be an integer >= 1, got 0"),
        ("ray = { num_replicas = 1.5 }", r"num_replicas must be an integer >= 1, got 1.5"),
        ("ray = { num_gpus = true }", r"num_gpus must be a number >= 0, got True"),
        ('ray = "big"', r"ray must be a table"),
    ]:
        path.write_text(f'[models.a]\nmodel = "m"\n{table}\n')
        with pytest.raises(InputError, match=message):
            read_config_file(path)


def test_a_model_s_ray_table_overrides_the_application_s_replica_options() -> None:
    from localembed.errors import InputError
    from localembed.ray import _deployment_options

    defaults = {
        "num_replicas": 1,
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 8,
        "max_ongoing_requests": 64,
        "num_cpus": 1,
        "num_gpus": None,
    }
    spec = ModelSpec("a", "embedding", EncoderConfig(), ray={"num_replicas": 3, "num_gpus": 1})
    assert _deployment_options(spec, defaults) == {
        "max_ongoing_requests": 64,
        "num_replicas": 3,  # its fixed count, not the application's autoscaling
        "ray_actor_options": {"num_cpus": 1, "num_gpus": 1},
    }
    autoscaled = ModelSpec("b", "embedding", EncoderConfig(), ray={"min_replicas": 0})
    assert _deployment_options(autoscaled, defaults)["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 4,
        "target_ongoing_requests": 8,
    }
    wrong = ModelSpec("c", "embedding", EncoderConfig(), ray={"min_replicas": 5})
    with pytest.raises(InputError, match="model 'c': need 0 <= min_replicas <= max_replicas"):
        _deployment_options(wrong, defaults)


def test_a_failed_forward_is_a_503_in_the_route_s_shape(specs: list[ModelSpec]) -> None:
    """The model's process gone or overloaded: 503 with Retry-After, never a 500."""

    async def gone(model_id: str, request: Forwarded) -> Answer:
        message = "the replica died"
        raise ConnectionError(message)

    async def statuses() -> dict[str, tuple[str, str | None]]:
        return {}

    app = create_app(models=specs, remote=Remote(forward=gone, statuses=statuses))
    with TestClient(app) as client:
        openai = client.post("/v1/embeddings", json={"input": "a", "model": "bert-alias"})
        tei = client.post("/models/bert/embed", json={"inputs": "a"})
        health = client.get("/health")
    assert openai.status_code == 503 and openai.headers["retry-after"] == "1"
    assert openai.json()["error"]["code"] == "model_unavailable"
    assert "model 'bert' is unavailable (ConnectionError" in openai.json()["error"]["message"]
    assert tei.status_code == 503 and tei.json()["error_type"] == "Unhealthy"  # TEI's 503
    assert "model 'bert' is unavailable" in tei.json()["error"]
    assert health.status_code == 200  # the ingress itself is up
