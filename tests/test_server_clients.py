"""Real clients against a real several-model ``localembed serve`` process on 127.0.0.1.

The openai client, huggingface_hub's InferenceClient (what LangChain's
HuggingFaceEndpointEmbeddings calls), LangChain's HuggingFaceEndpointEmbeddings itself and
LlamaIndex's TextEmbeddingsInference, each unchanged; plus the command's edges (port
checks, the serve extra, curl's form content type, keep-alive).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from localembed import get_encoder, get_reranker
from tests import model_factory
from tests.test_server_live import KEY, ROOT, Server, free_port

pytestmark = [pytest.mark.slow, pytest.mark.allow_hosts(["127.0.0.1"])]

TEXTS = ["Paris is the capital of France.", "Cats purr when they are content.", "ok"]
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_factory.build_tiny_bert_reranker(tmp_path_factory.mktemp("clients-rr"))


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_bert_dir: Path,
    tiny_xlmr_dir: Path,
    reranker_dir: Path,
) -> Iterator[Server]:
    config = tmp_path_factory.mktemp("clients-config") / "models.toml"
    config.write_text(
        f"""
[server]
preload = false

[models.bert]
model = "{tiny_bert_dir}"
pooling = "mean"

[models.m3]
model = "{tiny_xlmr_dir}"
pooling = "cls"

[models.rr]
kind = "reranker"
model = "{reranker_dir}"
""",
        encoding="utf-8",
    )
    running = Server("--config", str(config))
    yield running
    assert running.stop() == 0


def close(got: object, expected: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), expected, atol=1e-5)


def test_openai_client_picks_the_model(server: Server, tiny_xlmr_dir: Path) -> None:
    from openai import NotFoundError, OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    response = client.embeddings.create(model="m3", input=TEXTS)
    close(
        [item.embedding for item in response.data],
        get_encoder(model=str(tiny_xlmr_dir), pooling="cls").encode(TEXTS),
    )
    assert response.model == "m3"
    models = {model.id for model in client.models.list()}
    assert models == {"bert", "m3", "rr"}
    with pytest.raises(NotFoundError, match="not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="x")


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub refuses every request, even to 127.0.0.1, under HF_HUB_OFFLINE=1.

    (pytest-socket still allows 127.0.0.1 only.)
    """
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.mark.usefixtures("hub_online")
def test_inference_client_feature_extraction(
    server: Server, tiny_bert_dir: Path, tiny_xlmr_dir: Path
) -> None:
    from huggingface_hub import InferenceClient

    bert = get_encoder(model=str(tiny_bert_dir), pooling="mean")
    default = InferenceClient(model=server.url, token=KEY)
    close(default.feature_extraction(TEXTS), bert.encode(TEXTS))
    close(default.feature_extraction(TEXTS[0]), bert.encode(TEXTS[:1]))
    other = InferenceClient(model=f"{server.url}/models/m3", token=KEY)
    m3 = get_encoder(model=str(tiny_xlmr_dir), pooling="cls")
    close(other.feature_extraction(TEXTS), m3.encode(TEXTS))


@pytest.mark.usefixtures("hub_online")
def test_langchain_huggingface_endpoint_embeddings(server: Server, tiny_bert_dir: Path) -> None:
    """langchain-huggingface 1.x refuses a URL as ``model``: give it the InferenceClients."""
    from huggingface_hub import AsyncInferenceClient, InferenceClient
    from langchain_huggingface import HuggingFaceEndpointEmbeddings

    embeddings = HuggingFaceEndpointEmbeddings(huggingfacehub_api_token=KEY)
    embeddings.client = InferenceClient(model=server.url, token=KEY)
    embeddings.async_client = AsyncInferenceClient(model=server.url, token=KEY)
    bert = get_encoder(model=str(tiny_bert_dir), pooling="mean")
    close(embeddings.embed_documents(TEXTS), bert.encode(TEXTS))
    close([embeddings.embed_query(TEXTS[1])], bert.encode(TEXTS[1:2]))


def test_llamaindex_text_embeddings_inference(
    server: Server, tiny_bert_dir: Path, tiny_xlmr_dir: Path
) -> None:
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    bert = get_encoder(model=str(tiny_bert_dir), pooling="mean")
    embedding = TextEmbeddingsInference(model_name="bert", base_url=server.url, auth_token=KEY)
    close(embedding.get_text_embedding_batch(TEXTS), bert.encode(TEXTS))
    m3 = TextEmbeddingsInference(
        model_name="m3", base_url=f"{server.url}/models/m3", auth_token=KEY
    )
    expected = get_encoder(model=str(tiny_xlmr_dir), pooling="cls").encode(TEXTS[:1])
    close([m3.get_text_embedding(TEXTS[0])], expected)


def test_rerank_routes(server: Server, reranker_dir: Path) -> None:
    documents = ["Cats sleep in warm places.", "Paris is in France.", ""]
    expected = get_reranker(model=str(reranker_dir)).rerank("where do cats sleep", documents)
    cohere = httpx.post(
        f"{server.url}/v1/rerank",
        json={"query": "where do cats sleep", "documents": documents, "model": "rr"},
        headers=AUTH,
    ).json()
    assert [r["index"] for r in cohere["results"]] == [i for i, _ in expected]
    tei = httpx.post(
        f"{server.url}/rerank",
        json={"query": "where do cats sleep", "texts": documents},
        headers=AUTH,
    ).json()
    assert [r["index"] for r in tei] == [i for i, _ in expected]
    np.testing.assert_allclose([r["score"] for r in tei], [s for _, s in expected], atol=1e-6)


def test_a_json_body_without_its_content_type_is_read_as_json(server: Server) -> None:
    """What ``curl -d '{...}'`` sends: application/x-www-form-urlencoded."""
    form = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    sent = httpx.post(f"{server.url}/v1/embeddings", content=b'{"input": "x"}', headers=form)
    assert sent.status_code == 200 and len(sent.json()["data"]) == 1
    broken = httpx.post(f"{server.url}/v1/embeddings", content=b"input=x", headers=form)
    assert broken.status_code == 400
    assert "Content-Type: application/json" in broken.json()["error"]["message"]


def test_an_idle_keep_alive_connection_outlives_the_clients_pool_timeout(server: Server) -> None:
    """The server keeps idle connections longer than httpx's 5 s pool expiry (no ReadError)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"
        conn.sendall(request)
        assert read_response(conn).startswith(b"HTTP/1.1 200")
        time.sleep(6)  # uvicorn's default keep-alive (5 s) would have closed it
        conn.sendall(request)
        assert read_response(conn).startswith(b"HTTP/1.1 200")


def read_response(conn: socket.socket) -> bytes:
    """One whole HTTP response (headers, then Content-Length bytes of body), however it arrives."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, data
        body += chunk
    return head + b"\r\n\r\n" + body


def run_serve(
    *args: str, code: str | None = None, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(environ or {})}
    program = code or "from localembed.cli import main; raise SystemExit(main())"
    return subprocess.run(
        [sys.executable, "-c", program, "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_port_out_of_range_is_a_usage_error() -> None:
    result = run_serve("--port", "99999")
    assert result.returncode == 2
    assert "--port must be an integer from 0 to 65535, got '99999'" in result.stderr


def test_a_port_in_use_exits_1_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_serve("--port", str(port))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        f"localembed: port {port} on 127.0.0.1 is already in use; pick another with --port"
    )


def test_serve_without_the_serve_extra_names_it() -> None:
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"
        "from localembed.cli import main; raise SystemExit(main())"
    )
    result = run_serve("--port", str(free_port()), code=code)
    assert result.returncode == 1
    assert 'pip install "localembed[serve]"' in result.stderr
    assert "localembed serve needs uvicorn" in result.stderr


def test_a_heap_policy_typo_stops_the_server_with_one_line() -> None:
    result = run_serve("--port", "0", environ={"LOCALEMBED_HEAP": "trimm"})
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "localembed: LOCALEMBED_HEAP='trimm' is not one of trim, mmap, off"
    )
