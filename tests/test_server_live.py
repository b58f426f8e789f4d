"""A real `localembed serve` process on 127.0.0.1: real OpenAI clients, graceful SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from localembed import get_encoder

pytestmark = [pytest.mark.slow, pytest.mark.allow_hosts(["127.0.0.1"])]

ROOT = Path(__file__).resolve().parent.parent
KEY = "live-key"
TEXTS = ["Paris is the capital of France.", "Cats purr when they are content.", "ok"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """``localembed serve`` in a subprocess, waited for until healthy."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        env["LOCALEMBED_API_KEY"] = KEY
        self.process = subprocess.Popen(
            [sys.executable, "-m", "localembed.cli", "serve", "--port", str(self.port), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read() if self.process.stdout else ""
                pytest.fail(f"the server exited with {self.process.returncode}:\n{output}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail("the server did not become healthy in 120 s")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()  # the embedded default model
    yield running
    assert running.stop() == 0


def cosines(got: list[list[float]], expected: np.ndarray) -> np.ndarray:
    vectors = np.asarray(got, dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    reference = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    result: np.ndarray = (vectors * reference).sum(axis=1)
    return result


MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def test_openai_client(server: Server) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    response = client.embeddings.create(model=MODEL, input=TEXTS)
    expected = get_encoder().encode(TEXTS)
    assert [item.index for item in response.data] == [0, 1, 2]
    assert cosines([item.embedding for item in response.data], expected).min() >= 0.99999
    assert response.usage.prompt_tokens > 0
    floats = client.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    assert cosines([floats.data[0].embedding], expected[:1]).min() >= 0.99999
    short = client.embeddings.create(model=MODEL, input=TEXTS, dimensions=64)
    assert len(short.data[0].embedding) == 64
    from openai import AuthenticationError, BadRequestError

    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).embeddings.create(
            model=MODEL, input="x"
        )
    with pytest.raises(BadRequestError, match="dimensions"):
        client.embeddings.create(model=MODEL, input="x", dimensions=4096)


def test_langchain_openai_embeddings(server: Server) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model=MODEL, base_url=f"{server.url}/v1", api_key=KEY, check_embedding_ctx_length=False
    )
    encoder = get_encoder()
    assert cosines(embeddings.embed_documents(TEXTS), encoder.encode(TEXTS)).min() >= 0.99999
    query = embeddings.embed_query(TEXTS[0])
    assert cosines([query], encoder.encode(TEXTS[:1])).min() >= 0.99999


def test_llamaindex_openai_embedding(server: Server) -> None:
    from llama_index.embeddings.openai import OpenAIEmbedding

    # model_name= sends any model id (model= only takes OpenAI's own names).
    embedding = OpenAIEmbedding(api_base=f"{server.url}/v1", api_key=KEY, model_name=MODEL)
    encoder = get_encoder()
    vectors = embedding.get_text_embedding_batch(TEXTS)
    assert cosines(vectors, encoder.encode(TEXTS)).min() >= 0.99999
    query = embedding.get_query_embedding(TEXTS[1])
    assert cosines([query], encoder.encode(TEXTS[1:2])).min() >= 0.99999


def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0(
    tiny_bert_dir: Path,
) -> None:
    server = Server("--model", str(tiny_bert_dir), "--pooling", "mean", "--batch-size", "4")
    headers = {"Authorization": f"Bearer {KEY}"}
    texts = [f"text number {i} " * 12 for i in range(1200)]
    results: list[httpx.Response] = []

    def slow_request() -> None:
        results.append(
            httpx.post(
                f"{server.url}/v1/embeddings", json={"input": texts}, headers=headers, timeout=120
            )
        )

    thread = threading.Thread(target=slow_request)
    thread.start()
    deadline = time.monotonic() + 60
    admitted = re.compile(r"^localembed_queue_depth(\{[^}]*\})? 1\.0$", re.M)
    while time.monotonic() < deadline:  # until the request is admitted
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        if admitted.search(metrics):
            break
        time.sleep(0.02)
    else:
        pytest.fail("the request was never admitted (no queue depth of 1 in /metrics)")
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.TransportError):  # the listening socket is closed
        httpx.post(f"{server.url}/v1/embeddings", json={"input": "new"}, headers=headers, timeout=5)
    thread.join(timeout=120)
    assert server.process.wait(timeout=60) == 0
    assert len(results) == 1 and results[0].status_code == 200
    data = results[0].json()["data"]
    assert len(data) == len(texts) and [item["index"] for item in data] == list(range(len(texts)))
    expected = get_encoder(model=str(tiny_bert_dir), pooling="mean", batch_size=4).encode(texts[:5])
    assert np.abs(np.asarray([item["embedding"] for item in data[:5]]) - expected).max() <= 1e-5


SLOW_MODELING_PY = """
import time
from pathlib import Path

from transformers import BertModel


class SlowModel(BertModel):
    def __init__(self, config, *args, **kwargs):
        Path({marker!r}).touch()  # the load has started
        time.sleep(120)  # a load far longer than the test may take
        super().__init__(config, *args, **kwargs)
"""


def test_sigterm_during_a_model_load_exits_without_waiting_for_it(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request waiting for a lazy load gets a 503 at once; the process exits without the load."""
    import json
    import shutil

    slow = tmp_path / "slow-model"
    shutil.copytree(tiny_bert_dir, slow)
    config = json.loads((slow / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_slow.SlowModel"}
    (slow / "config.json").write_text(json.dumps(config))
    started = tmp_path / "load-started"
    (slow / "modeling_slow.py").write_text(SLOW_MODELING_PY.format(marker=str(started)))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    server = Server("--model", str(slow), "--trust-remote-code", "--lazy", "--load-timeout", "100")
    headers = {"Authorization": f"Bearer {KEY}"}
    results: list[httpx.Response] = []

    def waiting_request() -> None:
        results.append(
            httpx.post(
                f"{server.url}/v1/embeddings", json={"input": "a"}, headers=headers, timeout=60
            )
        )

    thread = threading.Thread(target=waiting_request)
    thread.start()
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline and status != "loading":
        listed = httpx.get(f"{server.url}/v1/models", headers=headers, timeout=5).json()
        status = listed["data"][0]["status"]
        time.sleep(0.05)
    assert status == "loading"
    while time.monotonic() < deadline and not started.exists():
        time.sleep(0.05)
    assert started.exists()  # the load is under way in its thread (in the model's __init__)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    answered = time.monotonic() - signalled
    code = server.process.wait(timeout=30)
    exited = time.monotonic() - signalled
    output = server.process.stdout.read() if server.process.stdout else ""
    assert len(results) == 1, output
    assert results[0].status_code == 503, results[0].text
    assert results[0].json()["error"]["code"] == "shutting_down"
    assert code == 0, output
    assert answered < 20 and exited < 25, (answered, exited, output)  # the load takes 120 s
    assert "exiting without waiting for localembed-load" in output


def test_a_client_that_disconnects_frees_the_model(server: Server) -> None:
    """A client that gives up on a long request cancels it: the model's queue empties within
    a pass (not after minutes of texts nobody reads), and the next request is served."""
    headers = {"Authorization": f"Bearer {KEY}"}
    texts = [f"document {i}: " + "words of a long text " * 40 for i in range(2000)]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.url}/v1/embeddings",
            json={"input": texts, "model": MODEL},
            headers=headers,
            timeout=httpx.Timeout(60, read=2),
        )

    def metric(name: str) -> float:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        found = re.search(rf"^{re.escape(name)}\S* (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    deadline = time.monotonic() + 30
    while metric("localembed_queue_depth") > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric("localembed_queue_depth") == 0
    failures = 'localembed_request_failures_total{reason="client_disconnected"}'
    assert metric(failures) >= 1
    started = time.monotonic()
    response = httpx.post(
        f"{server.url}/v1/embeddings", json={"input": ["after"]}, headers=headers, timeout=60
    )
    assert response.status_code == 200 and time.monotonic() - started < 20
