"""The OpenAI-compatible server app (localembed.server), in process: shapes, errors, metrics."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient

from localembed import get_encoder
from localembed.encoder import LocalEncoder
from localembed.server import ServerSettings, create_app
from localembed.server.errors import TEI_PATHS

TEXTS = ["Paris is the capital of France.", "Cats purr when content.", "", "x " * 30]
KEY = {"Authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir: Path) -> LocalEncoder:
    return get_encoder(
        model=str(tiny_bert_dir),
        pooling="mean",
        max_length=32,
        query_instruction="query: ",
        document_instruction="passage: ",
    )


def client_for(encoder: LocalEncoder, **settings: Any) -> TestClient:
    return TestClient(create_app(encoder=encoder, settings=ServerSettings(**settings)))


@pytest.fixture(scope="module")
def client(encoder: LocalEncoder) -> Iterator[TestClient]:
    with client_for(encoder, api_key="s3cret") as client:
        yield client


def embed(client: TestClient, **body: Any) -> httpx.Response:
    return client.post("/v1/embeddings", json=body, headers=KEY)


def vectors_of(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["index"] for item in data] == list(range(len(data)))
    assert all(item["object"] == "embedding" for item in data)
    return np.asarray([item["embedding"] for item in data], dtype=np.float32)


def test_embeddings_match_the_encoder_row_for_row(
    client: TestClient, encoder: LocalEncoder
) -> None:
    response = embed(client, input=TEXTS, model=encoder.source.path.name)
    assert np.abs(vectors_of(response) - encoder.encode(TEXTS)).max() <= 1e-5
    body = response.json()
    tokens = sum(len(ids) for ids in encoder.tokenize(TEXTS).ids)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    # The id is the directory's name: a server never shows its file system.
    assert body["model"] == encoder.source.path.name and body["object"] == "list"
    # The path as the operator gave it is accepted too (never shown).
    assert embed(client, input="x", model=encoder.source.name).status_code == 200
    assert response.headers["X-Truncated-Inputs"] == "0"
    # /embeddings (no /v1), a single string, and no model all work too.
    single = client.post("/embeddings", json={"input": TEXTS[1]}, headers=KEY)
    assert np.abs(vectors_of(single)[0] - encoder.encode(TEXTS[1:2])[0]).max() <= 1e-5


def test_input_type_applies_the_model_s_instructions(
    client: TestClient, encoder: LocalEncoder
) -> None:
    queries = vectors_of(embed(client, input=TEXTS, input_type="query"))
    documents = vectors_of(embed(client, input=TEXTS, input_type="document"))
    assert np.abs(queries - encoder.encode_queries(TEXTS)).max() <= 1e-5
    assert np.abs(documents - encoder.encode_documents(TEXTS)).max() <= 1e-5


def test_base64_is_little_endian_float32(client: TestClient) -> None:
    floats = vectors_of(embed(client, input=TEXTS))
    response = embed(client, input=TEXTS, encoding_format="base64")
    decoded = np.stack(
        [
            np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
            for item in response.json()["data"]
        ]
    )
    np.testing.assert_array_equal(decoded, floats)


def test_dimensions_cut_then_renormalize(client: TestClient, encoder: LocalEncoder) -> None:
    full = encoder.encode(TEXTS)
    cut = vectors_of(embed(client, input=TEXTS, dimensions=8))
    expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    assert cut.shape == (len(TEXTS), 8)
    assert np.abs(cut - expected).max() <= 1e-5
    same = vectors_of(embed(client, input=TEXTS, dimensions=encoder.dimension))
    assert np.abs(same - full).max() <= 1e-5
    refused = embed(client, input=TEXTS, dimensions=encoder.dimension + 1)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "dimensions"
    assert str(encoder.dimension) in refused.json()["error"]["message"]


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": ["fine", 3]}, "input[1]", "valid string"),
        ({"input": []}, "input", "empty"),
        ({"input": [[1, 2, 3]]}, "input", "token-id input is not supported"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format", "float"),
        ({"input": "x", "dimensions": 0}, "dimensions", "greater than 0"),
        ({"input": "x", "dimension": 8}, "dimension", "Extra inputs"),
        ({}, "input", "required"),
        ({"input": "x", "input_type": "passage"}, "input_type", "query"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(
    client: TestClient, body: dict[str, Any], param: str, words: str
) -> None:
    error = error_of(embed(client, **body), 400)
    assert error["param"] == param
    assert words in error["message"]
    assert error["type"] == "invalid_request_error"


def test_bodies_that_are_not_json_objects_are_400(client: TestClient) -> None:
    for content in (
        b"{not json",
        b"[1, 2]",
        b"",
        b"null",
        "\udcff".encode("utf-8", "surrogatepass"),
    ):
        response = client.post(
            "/v1/embeddings", content=content, headers={**KEY, "content-type": "application/json"}
        )
        error_of(response, 400)


def test_an_unknown_model_is_a_404_naming_the_served_one(
    client: TestClient, encoder: LocalEncoder
) -> None:
    error = error_of(embed(client, input="x", model="text-embedding-3-small"), 404)
    assert error["code"] == "model_not_found" and encoder.source.path.name in error["message"]
    assert str(encoder.source.path) not in error["message"]


def test_api_key(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        response = client.post("/v1/embeddings", json={"input": "x"}, headers=headers)
        assert error_of(response, 401)["code"] == "invalid_api_key"
        assert response.headers["WWW-Authenticate"] == "Bearer"
        error_of(client.get("/v1/models", headers=headers), 401)
        tei = client.get("/info", headers=headers)  # TEI's body on a TEI route
        assert tei.status_code == 401 and tei.json()["error_type"] == "Validation", tei.text
        assert "API key" in tei.json()["error"]
    assert client.get("/health").status_code == 200  # public
    assert client.get("/metrics").status_code == 200  # public
    assert client.get("/v1/models", headers=KEY).status_code == 200


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from localembed.server.run import add_serve_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    monkeypatch.setenv("LOCALEMBED_API_KEY", "from-env")
    assert settings_from_args(parser.parse_args([])).api_key == "from-env"
    assert settings_from_args(parser.parse_args(["--api-key", "flag"])).api_key == "flag"
    settings = settings_from_args(parser.parse_args(["--no-truncate", "--max-queue", "3"]))
    assert settings.truncate is False and settings.max_queue == 3
    monkeypatch.delenv("LOCALEMBED_API_KEY")
    assert settings_from_args(parser.parse_args([])).api_key is None


def test_too_many_inputs_or_too_large_a_body_is_413(encoder: LocalEncoder) -> None:
    with client_for(encoder, max_client_batch=3, max_request_bytes=2000) as client:
        assert client.post("/v1/embeddings", json={"input": ["a"] * 3}).status_code == 200
        error = error_of(client.post("/v1/embeddings", json={"input": ["a"] * 4}), 413)
        assert error["code"] == "too_many_inputs" and "at most 3" in error["message"]
        error = error_of(client.post("/v1/embeddings", json={"input": "y" * 3000}), 413)
        assert error["code"] == "request_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield b'{"input": "'
            for _ in range(10):
                yield b"z" * 500
            yield b'"}'

        response = client.post(
            "/v1/embeddings", content=chunks(), headers={"content-type": "application/json"}
        )
        assert error_of(response, 413)["code"] == "request_too_large"


def test_over_long_inputs_are_counted_or_refused(encoder: LocalEncoder) -> None:
    texts = ["short", "word " * 100, "also short", "word " * 200]
    with client_for(encoder) as client:
        response = client.post("/v1/embeddings", json={"input": texts})
        assert response.headers["X-Truncated-Inputs"] == "2"
        assert np.abs(vectors_of(response) - encoder.encode(texts)).max() <= 1e-5
    with client_for(encoder, truncate=False) as client:
        error = error_of(client.post("/v1/embeddings", json={"input": texts}), 400)
        assert error["param"] == "input[1]" and error["code"] == "input_too_long"
        assert "over the model's limit of 32" in error["message"]
        fits = client.post("/v1/embeddings", json={"input": texts[::2]})
        assert fits.headers["X-Truncated-Inputs"] == "0"


async def test_a_full_queue_is_429(encoder: LocalEncoder) -> None:
    app = create_app(encoder=encoder, settings=ServerSettings(max_queue=1))
    state = app.state.localembed
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        slow = asyncio.create_task(
            client.post("/v1/embeddings", json={"input": [f"text {i} " * 8 for i in range(2000)]})
        )
        while state.in_flight == 0 and not slow.done():
            await asyncio.sleep(0.001)
        refused = await client.post("/v1/embeddings", json={"input": "x"})
        assert not slow.done()
        assert (await slow).status_code == 200
        after = await client.post("/v1/embeddings", json={"input": "x"})
    error = error_of(refused, 429)
    assert error["code"] == "queue_full" and refused.headers["Retry-After"] == "1"
    assert after.status_code == 200


def test_503_while_loading_and_after_a_failed_load(tiny_bert_dir: Path, tmp_path: Path) -> None:
    import localembed.encoder as encoder_module
    from localembed import EncoderConfig

    config = EncoderConfig(model=str(tiny_bert_dir), pooling="cls", max_length=17)
    no_wait = ServerSettings(load_timeout_s=0)  # answer 503 at once while the model loads
    with encoder_module._encoders._lock:  # get_encoder cannot finish while this is held
        client = TestClient(create_app(config, no_wait))
        client.__enter__()
        health = client.get("/health")
        refused = client.post("/v1/embeddings", json={"input": "x"})
    try:
        assert health.status_code == 503 and health.json()["status"] == "loading"
        assert error_of(refused, 503)["code"] == "model_loading"
        for _ in range(600):
            if client.get("/health").status_code == 200:
                break
            import time

            time.sleep(0.05)
        assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 200
    finally:
        client.__exit__(None, None, None)
    missing = EncoderConfig(model=str(tmp_path / "missing"))
    with TestClient(create_app(missing, no_wait)) as broken:
        for _ in range(600):
            if broken.get("/health").json()["status"] != "loading":
                break
            import time

            time.sleep(0.05)
        assert broken.get("/health").json()["status"] == "failed"
        error = error_of(broken.post("/v1/embeddings", json={"input": "x"}), 503)
        assert error["code"] == "model_load_failed" and "missing" in error["message"]
        assert broken.get("/v1/models").json()["data"][0]["status"] == "failed"


def test_models_info_health(client: TestClient, encoder: LocalEncoder) -> None:
    models = client.get("/v1/models", headers=KEY).json()
    assert models["data"][0]["id"] == encoder.source.path.name and models["object"] == "list"
    assert models["data"][0]["kind"] == "embedding" and models["data"][0]["loaded"] is True
    info = client.get("/info", headers=KEY).json()
    assert str(encoder.source.path.parent) not in str(info)  # no file-system path
    assert info["model_id"] == encoder.source.path.name
    assert info["encoder"]["max_length"] == 32 and info["encoder"]["pooling"] == "mean"
    assert info["server"]["api_key"] == "set" and "s3cret" not in str(info)
    assert client.get("/health").json()["status"] == "ok"


def test_metrics(encoder: LocalEncoder) -> None:
    with client_for(encoder, max_client_batch=2) as client:
        client.post("/v1/embeddings", json={"input": ["a", "b"]})
        client.post("/v1/embeddings", json={"input": ["a", "b", "c"]})
        client.post("/v1/embeddings", json={"input": [1.5]})
        client.get("/no/such/path")
        text = client.get("/metrics").text
    assert 'localembed_requests_total{endpoint="/v1/embeddings",status="200"} 1.0' in text
    assert 'localembed_requests_total{endpoint="/v1/embeddings",status="413"} 1.0' in text
    assert 'localembed_requests_total{endpoint="other",status="404"} 1.0' in text
    assert 'localembed_request_failures_total{reason="too_many_inputs"} 1.0' in text
    assert 'localembed_request_failures_total{reason="invalid_request"} 1.0' in text
    model = f'{{model="{encoder.source.path.name}"}}'
    assert f"localembed_texts_total{model} 2.0" in text
    assert f"localembed_queue_seconds_count{model} 1.0" in text
    assert f"localembed_batch_size_count{model}" in text
    assert f"localembed_batch_tokens_sum{model}" in text
    assert f"localembed_queue_depth{model} 0.0" in text
    assert f"localembed_model_loaded{model} 1.0" in text
    assert 'localembed_request_seconds_count{endpoint="/v1/embeddings"} 3.0' in text


def test_sparse_endpoint_for_bge_m3(tiny_xlmr_dir: Path, encoder: LocalEncoder) -> None:
    m3 = get_encoder(model=str(tiny_xlmr_dir), pooling="cls")
    texts = ["the cat sat", "on the mat again"]
    with TestClient(create_app(encoder=m3)) as client:
        response = client.post("/v1/embeddings/sparse", json={"input": texts})
        dense = client.post("/v1/embeddings", json={"input": texts})
    assert response.status_code == 200, response.text
    expected = m3.encode_m3(texts, dense=False, sparse=True).sparse
    assert expected is not None
    for item, weights in zip(response.json()["data"], expected, strict=True):
        assert item["indices"] == sorted(weights)
        assert np.allclose(item["values"], [weights[i] for i in sorted(weights)], atol=1e-6)
    assert np.abs(vectors_of(dense) - m3.encode(texts)).max() <= 1e-5
    with client_for(encoder) as client:  # not a bge-m3 model
        error = error_of(client.post("/v1/embeddings/sparse", json={"input": "x"}), 400)
        assert error["code"] == "sparse_not_supported"


def test_no_request_gets_a_5xx(encoder: LocalEncoder) -> None:
    """Schemathesis fuzzes every operation of the app's own OpenAPI document."""
    settings = ServerSettings(api_key="s3cret", max_client_batch=64)
    app = create_app(encoder=encoder, settings=settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=KEY)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.path for operation in operations} >= {
        "/v1/embeddings",
        "/v1/embeddings/sparse",
    }
    statuses: list[int] = []

    from schemathesis.generation.modes import GenerationMode

    runs = [(operation, GenerationMode.POSITIVE) for operation in operations]
    # Invalid bodies too (GET operations take no input to break).
    runs += [(op, GenerationMode.NEGATIVE) for op in operations if op.method.lower() == "post"]
    for operation, mode in runs:

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def no_server_error(case: Any) -> None:
            for headers in (KEY, {}):  # with and without the key
                response = case.call(headers=headers)
                statuses.append(response.status_code)
                assert response.status_code < 500, (case.body, response.text)
                if response.status_code >= 400 and response.status_code != 401:
                    error = response.json()["error"]
                    if case.operation.path in TEI_PATHS:  # text-embeddings-inference body
                        assert isinstance(error, str) and response.json()["error_type"]
                    else:
                        assert set(error) == {"message", "type", "param", "code"}

        no_server_error()
    assert 200 in statuses and 400 in statuses and 401 in statuses


def test_a_draining_server_refuses_new_requests_with_503(encoder: LocalEncoder) -> None:
    app = create_app(encoder=encoder)
    with TestClient(app) as client:
        assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 200
        app.state.localembed.draining = True  # what SIGTERM sets (localembed.server.run)
        response = client.post("/v1/embeddings", json={"input": "x"})
        assert error_of(response, 503)["code"] == "shutting_down"
        assert client.get("/health").status_code == 503


def test_no_truncate_over_long_input_with_a_lone_surrogate_is_a_400(
    encoder: LocalEncoder, tiny_xlmr_dir: Path
) -> None:
    """The over-long check repairs invalid unicode as the encoder does (it used to 500)."""
    texts = ["short", "bad \udc80 byte " + "word " * 100]
    body = '{"input": ["short", "bad \\udc80 byte ' + "word " * 100 + '"]}'
    with client_for(encoder, truncate=False) as client:
        response = client.post(
            "/v1/embeddings", content=body, headers={"content-type": "application/json"}
        )
        error = error_of(response, 400)
        assert error["param"] == "input[1]" and error["code"] == "input_too_long"
    m3 = get_encoder(model=str(tiny_xlmr_dir), pooling="cls", max_length=16)
    assert m3.tokenize(texts).truncated == 1
    with TestClient(create_app(encoder=m3, settings=ServerSettings(truncate=False))) as client:
        response = client.post(
            "/v1/embeddings/sparse", content=body, headers={"content-type": "application/json"}
        )
        error = error_of(response, 400)
        assert error["param"] == "input[1]" and error["code"] == "input_too_long"


def test_non_finite_vectors_are_a_422_naming_the_inputs(nan_bert_dir: Path) -> None:
    """A model that overflows ("cat" embeds to NaN) never sends NaN, and never a 5xx."""
    nan_encoder = get_encoder(model=str(nan_bert_dir), pooling="mean")
    with TestClient(create_app(encoder=nan_encoder)) as client:
        for encoding_format in ("float", "base64"):
            response = client.post(
                "/v1/embeddings",
                json={"input": ["dog", "cat", "the cat"], "encoding_format": encoding_format},
            )
            error = error_of(response, 422)
            assert error["code"] == "non_finite_embedding" and error["param"] == "input[1]"
            assert "input[1], input[2]" in error["message"]
        assert client.post("/v1/embeddings", json={"input": ["dog"]}).status_code == 200


def test_dimensions_must_be_a_json_integer(client: TestClient) -> None:
    for value in (True, 1.0, "1"):
        error = error_of(embed(client, input="x", dimensions=value), 400)
        assert error["param"] == "dimensions"


def test_a_restarted_app_serves_again(encoder: LocalEncoder) -> None:
    """Shutting down drains; starting the same app again (a new TestClient) serves again."""
    app = create_app(encoder=encoder)
    with TestClient(app) as client:
        assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 200
    with TestClient(app) as client:
        assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 200
        assert client.get("/health").status_code == 200


PRECISION_TEXTS = ["Paris is the capital of France.", "Cats purr when content.", "a", "x " * 30]


@pytest.mark.parametrize("precision", ["float32", "float16", "int8", "uint8", "binary", "ubinary"])
def test_precision_matches_the_encoder_in_both_formats(
    client: TestClient, encoder: LocalEncoder, precision: str
) -> None:
    expected = encoder.encode(PRECISION_TEXTS, precision=precision)  # type: ignore[arg-type]
    response = embed(client, input=PRECISION_TEXTS, precision=precision)
    assert response.status_code == 200, response.text
    listed = [item["embedding"] for item in response.json()["data"]]
    if expected.dtype.kind in "iu":
        assert all(isinstance(value, int) for row in listed for value in row)
    np.testing.assert_array_equal(np.asarray(listed, dtype=expected.dtype), expected)
    encoded = embed(client, input=PRECISION_TEXTS, precision=precision, encoding_format="base64")
    little = expected.dtype.newbyteorder("<")
    decoded = np.stack(
        [
            np.frombuffer(base64.b64decode(item["embedding"]), dtype=little)
            for item in encoded.json()["data"]
        ]
    )
    np.testing.assert_array_equal(decoded, expected)


def test_int8_ranges_from_a_corpus_quantize_a_single_query(
    client: TestClient, encoder: LocalEncoder
) -> None:
    from sentence_transformers.quantization import quantize_embeddings

    from localembed.precision import calibration_ranges

    ranges = calibration_ranges(encoder.encode(PRECISION_TEXTS))
    for precision in ("int8", "uint8"):
        response = embed(client, input="a query", precision=precision, ranges=ranges.tolist())
        got = np.asarray(response.json()["data"][0]["embedding"])
        query = encoder.encode(["a query"])
        np.testing.assert_array_equal(got, quantize_embeddings(query, precision, ranges=ranges)[0])
        np.testing.assert_array_equal(
            got, encoder.encode(["a query"], precision=precision, ranges=ranges)[0]
        )


def test_dimensions_then_precision_use_the_encoder_s_finish(
    client: TestClient, encoder: LocalEncoder
) -> None:
    cut = get_encoder(encoder.config.model_copy(update={"truncate_dim": 8}))
    for precision in ("float32", "int8", "binary"):
        got = embed(client, input=PRECISION_TEXTS, dimensions=8, precision=precision).json()
        expected = cut.encode(PRECISION_TEXTS, precision=precision)  # type: ignore[arg-type]
        np.testing.assert_allclose(
            np.asarray([item["embedding"] for item in got["data"]]), expected, atol=1e-6
        )
    ranges = np.zeros((2, 8)).tolist()  # the output's 8 dimensions, not the model's
    assert embed(client, input="q", dimensions=8, precision="int8", ranges=ranges).is_success


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": "x", "precision": "int4"}, "precision", "'binary'"),
        ({"input": "x", "precision": "int8"}, "precision", "ranges"),
        ({"input": ["x"], "precision": "uint8"}, "precision", "at least two inputs"),
        ({"input": ["x", "y"], "ranges": [[0.0], [1.0]]}, "ranges", "only to precision"),
        ({"input": "x", "precision": "int8", "ranges": [[0.0], [1.0]]}, "ranges", "two lists"),
        ({"input": "x", "precision": "int8", "ranges": [[0.0]]}, "ranges", "two lists"),
        ({"input": "x", "precision": "int8", "ranges": []}, "ranges", "two lists"),
        ({"input": "x", "precision": "int8", "ranges": [[0.0], [1.0], [2.0]]}, "ranges", "two"),
        ({"input": "x", "precision": "int8", "ranges": [["a"], [1.0]]}, "ranges[0][0]", "number"),
        ({"input": "x", "precision": "int8", "ranges": "big"}, "ranges", "list"),
    ],
)
def test_bad_precision_or_ranges_is_a_400_naming_it(
    client: TestClient, body: dict[str, Any], param: str, words: str
) -> None:
    error = error_of(embed(client, **body), 400)
    assert error["param"] == param
    assert words in error["message"]


def test_non_finite_ranges_are_a_400(client: TestClient, encoder: LocalEncoder) -> None:
    dimension = encoder.dimension
    for bad in ("NaN", "Infinity", "1e39", "-1e400"):
        row = ", ".join(["0"] * (dimension - 1) + [bad])
        content = f'{{"input": "x", "precision": "int8", "ranges": [[{row}], [{row}]]}}'
        response = client.post(
            "/v1/embeddings",
            content=content,
            headers={**KEY, "Content-Type": "application/json"},
        )
        error = error_of(response, 400)
        assert error["param"] == "ranges" and "finite" in error["message"], bad


def test_metrics_export_each_models_cache_counts(tiny_bert_dir: Path, tmp_path: Path) -> None:
    cached = get_encoder(model=str(tiny_bert_dir), pooling="mean", cache=str(tmp_path / "cache"))
    with client_for(cached) as client:
        first = vectors_of(client.post("/v1/embeddings", json={"input": ["a cat", "a dog"]}))
        again = vectors_of(client.post("/v1/embeddings", json={"input": ["a cat", "a dog"]}))
        assert np.array_equal(first, again)
        metrics = client.get("/metrics").text
    stats = cached.cache_stats()
    assert stats["hits"] >= 2 and stats["misses"] >= 2
    lines = [line for line in metrics.splitlines() if line.startswith("localembed_cache{")]
    hits = [line for line in lines if 'stat="hits"' in line]
    assert hits and float(hits[0].rsplit(" ", 1)[1]) == stats["hits"]


def test_max_wait_ms_is_accepted_ignored_and_warned_about(
    encoder: LocalEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    """Deprecated: a config file or script that sets it still runs, and says it is ignored."""
    with caplog.at_level("WARNING", logger="localembed.server"):
        app = create_app(encoder=encoder, settings=ServerSettings(max_wait_ms=5))
    assert "--max-wait-ms (max_wait_ms) is deprecated and ignored" in caplog.text
    with TestClient(app) as client:
        assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 200
    assert encoder.batcher.max_wait == 0  # no lone request is held
