"""The embedding cache: keys, bit-identical hits, corruption, concurrency, eviction, surfaces.

Real stores only: SQLite files in tmp directories and a real ``redis-server`` on 127.0.0.1
(started and stopped here; skipped with the reason where the binary is absent).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import localembed
from localembed import EncoderConfig, NonFiniteEmbeddingError, clear_encoder_cache, get_encoder
from localembed.cache import EmbeddingCache, Rows, cache_namespace, key_fields, open_store
from localembed.cache.records import KEY_FIELDS, decode, namespace_digest
from localembed.cache.sqlite_store import DATABASE_NAME
from localembed.fingerprint import model_fingerprint

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["Paris is the capital of France.", "Cats purr.", "", "ok", "Cats purr."]


@pytest.fixture(autouse=True)
def _fresh_encoders() -> Iterator[None]:
    clear_encoder_cache()  # each test counts its own hits and misses
    yield
    clear_encoder_cache()


def _rows_of(directory: Path) -> list[tuple[bytes, bytes]]:
    with sqlite3.connect(directory / DATABASE_NAME) as db:
        return [(bytes(k), bytes(v)) for k, v in db.execute("SELECT key, value FROM entries")]


# -- the key ---------------------------------------------------------------------------------


def test_every_setting_that_shapes_a_vector_misses(tiny_bert_dir: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "c")
    base = {"model": str(tiny_bert_dir), "cache": cache}
    texts = ["a cat sat on the mat", "dogs bark at night"]
    first = get_encoder(**base)
    first.encode(texts)
    assert first.cache_stats()["misses"] == 2
    again = get_encoder(**base, batch_size=7)  # a call-time option that changes no vector
    again.encode(texts)
    assert again.cache_stats()["hits"] == 2
    variants = {
        "pooling": {"pooling": "max"},
        "normalize": {"normalize": False},
        "max_length": {"max_length": 4},
        "long_text": {"long_text": "chunk"},
        "truncate_dim": {"truncate_dim": 16},
        "dtype": {"dtype": "bfloat16"},
        "quantize": {"quantize": "int8"},
    }
    for name, change in variants.items():
        variant = get_encoder(**base, **change)
        variant.encode(texts)
        stats = variant.cache_stats()
        assert (stats["hits"], stats["misses"]) == (0, 2), name
    # The instruction actually prepended: per call, and per kind through the settings.
    first.encode(texts, "query: ")
    assert first.cache_stats()["misses"] == 4
    instructed = get_encoder(**base, document_instruction="passage: ")
    instructed.encode_documents(texts)
    assert instructed.cache_stats()["misses"] == 2
    instructed.encode(texts, "passage: ")  # the same prepended text: a hit
    assert instructed.cache_stats()["hits"] == 2
    # The text's exact code points: NFC vs NFD, trailing space, case.
    first.encode(["caf\u00e9", "cafe\u0301", "Cats purr. ", "cats purr."])
    assert first.cache_stats()["misses"] == 8


def test_the_version_and_the_model_files_are_in_the_key(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = str(tmp_path / "c")
    texts = ["a cat sat on the mat"]
    get_encoder(model=str(tiny_bert_dir), cache=cache).encode(texts)
    clear_encoder_cache()
    monkeypatch.setattr(localembed, "__version__", "99.0")
    newer = get_encoder(model=str(tiny_bert_dir), cache=cache)
    newer.encode(texts)
    assert newer.cache_stats()["misses"] == 1
    monkeypatch.undo()
    # Each kind of file: config, tokenizer, weights, a sentence-transformers module, a head.
    for name, edit in {
        "config.json": lambda p: p.write_text(p.read_text().replace("}", ', "x_note": 1}', 1)),
        "tokenizer_config.json": lambda p: p.write_text(p.read_text() + "\n"),
        "model.safetensors": lambda p: p.write_bytes(p.read_bytes() + b"\0"),
        "1_Pooling/config.json": lambda p: p.write_text('{"pooling_mode_mean_tokens": true}'),
        "sparse_linear.pt": lambda p: p.write_bytes(b"head"),
    }.items():
        copy = tmp_path / f"model-{name.replace('/', '-')}"
        shutil.copytree(tiny_bert_dir, copy)
        before = model_fingerprint(copy)
        path = copy / name
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            path.write_text("")
            before = model_fingerprint(copy)
        edit(path)
        assert model_fingerprint(copy) != before, name
    # A copy of the model in another directory is the same model: it hits.
    same = tmp_path / "same-model"
    shutil.copytree(tiny_bert_dir, same)
    (same / "README.md").write_text("docs change no vector")
    clear_encoder_cache()
    copied = get_encoder(model=str(same), cache=cache)
    copied.encode(texts)
    assert copied.cache_stats()["hits"] == 1
    # Rewritten weights in place (one value changed): a miss.
    _bump_first_weight(same)
    clear_encoder_cache()
    rewritten = get_encoder(model=str(same), cache=cache)
    rewritten.encode(texts)
    assert rewritten.cache_stats()["misses"] == 1


def test_each_key_field_changes_the_namespace() -> None:
    base: dict[str, object] = dict.fromkeys(KEY_FIELDS, "x")
    digests = {namespace_digest(base)}
    for name in KEY_FIELDS:  # device_type and backend included (no GPU / ONNX export here)
        digests.add(namespace_digest({**base, name: "y"}))
    assert len(digests) == len(KEY_FIELDS) + 1
    with pytest.raises(ValueError, match="missing"):
        namespace_digest({name: 1 for name in KEY_FIELDS if name != "backend"})


def test_precision_is_applied_after_the_cache_bit_for_bit(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    texts = [f"text number {i} about cats" for i in range(6)]
    plain = get_encoder(model=str(tiny_bert_dir))
    cached = get_encoder(model=str(tiny_bert_dir), cache=str(tmp_path / "c"))
    cached.encode(texts)  # fill with float32 vectors
    ranges = np.stack([np.full(plain.dimension, -0.5), np.full(plain.dimension, 0.5)])
    for precision, given in [
        ("float16", None),
        ("int8", None),
        ("uint8", ranges),
        ("binary", None),
        ("ubinary", None),
    ]:
        expected = plain.encode(texts, precision=precision, ranges=given)
        got = cached.encode(texts, precision=precision, ranges=given)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), precision
    assert cached.cache_stats()["misses"] == 6  # every precision came from the stored rows


# -- hits, corruption, non-finite ------------------------------------------------------------


def test_a_hit_is_bit_identical_and_misses_run_in_one_call(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    cache = str(tmp_path / "c")
    encoder = get_encoder(model=str(tiny_bert_dir), cache=cache)
    first = encoder.encode(TEXTS)
    assert np.array_equal(first[1], first[4])  # a repeated text computed once
    assert encoder.cache_stats()["computed"] == 4
    clear_encoder_cache()
    later = get_encoder(model=str(tiny_bert_dir), cache=cache)
    assert later.encode(TEXTS).tobytes() == first.tobytes()
    assert later.cache_stats()["hits"] == len(TEXTS)
    calls: list[list[str]] = []
    assert later.cache is not None

    def compute(texts: list[str]) -> Rows:
        calls.append(texts)
        return later._rows(texts, later._options(None))

    rows = later.cache.encode(["new one", TEXTS[0], "new two", "new one"], None, compute)
    assert calls == [["new one", "new two"]]
    assert rows.vectors[0].tobytes() == rows.vectors[3].tobytes()
    assert rows.vectors[1].tobytes() == first[0].tobytes()


@pytest.mark.parametrize("damage", ["truncate", "flip", "swap", "garbage"])
def test_corrupt_sqlite_rows_are_recomputed_never_returned(
    tiny_bert_dir: Path, tmp_path: Path, damage: str
) -> None:
    directory = tmp_path / "c"
    texts = ["first text", "second text"]
    reference = get_encoder(model=str(tiny_bert_dir), cache=str(directory)).encode(texts)
    (key_a, value_a), (key_b, value_b) = sorted(_rows_of(directory))
    with sqlite3.connect(directory / DATABASE_NAME) as db:
        if damage == "truncate":
            db.execute("UPDATE entries SET value = substr(value, 1, 40) WHERE key = ?", (key_a,))
        elif damage == "flip":
            broken = bytearray(value_a)
            broken[30] ^= 0x04  # one bit of one float
            db.execute("UPDATE entries SET value = ? WHERE key = ?", (bytes(broken), key_a))
        elif damage == "swap":  # whole, valid records under each other's key
            db.execute("UPDATE entries SET value = ? WHERE key = ?", (value_b, key_a))
            db.execute("UPDATE entries SET value = ? WHERE key = ?", (value_a, key_b))
        else:
            db.execute("UPDATE entries SET value = X'00' WHERE key = ?", (key_a,))
    clear_encoder_cache()
    encoder = get_encoder(model=str(tiny_bert_dir), cache=str(directory))
    again = encoder.encode(texts)
    stats = encoder.cache_stats()
    assert stats["corrupt"] == (2 if damage == "swap" else 1)
    assert stats["computed"] == stats["corrupt"]
    np.testing.assert_allclose(again, reference, atol=1e-6)
    assert all(decode(k, v) is not None for k, v in _rows_of(directory))  # rewritten whole
    clear_encoder_cache()
    healed = get_encoder(model=str(tiny_bert_dir), cache=str(directory))
    assert healed.encode(texts).tobytes() == again.tobytes()
    assert healed.cache_stats()["hits"] == 2


def test_a_non_finite_vector_is_never_cached(nan_bert_dir: Path, tmp_path: Path) -> None:
    directory = tmp_path / "c"
    encoder = get_encoder(model=str(nan_bert_dir), cache=str(directory))
    for _ in range(2):
        with pytest.raises(NonFiniteEmbeddingError):
            encoder.encode(["a dog", "a cat"])
    assert _rows_of(directory) == []
    encoder.encode(["a dog"])
    with pytest.raises(NonFiniteEmbeddingError):
        encoder.encode(["a dog", "my cat"])  # the dog is a hit; the cat still raises
    assert len(_rows_of(directory)) == 1


# -- concurrency -----------------------------------------------------------------------------


def test_threads_writing_one_cache(tiny_bert_dir: Path, tmp_path: Path) -> None:
    directory = tmp_path / "c"
    texts = [f"sentence {i} about a cat" for i in range(40)]
    reference = get_encoder(model=str(tiny_bert_dir)).encode(texts)
    encoders = [
        get_encoder(model=str(tiny_bert_dir), cache=str(directory), batch_size=b)
        for b in (8, 9, 10, 11)
    ]
    errors: list[BaseException] = []
    results: list[np.ndarray] = []

    def work(index: int) -> None:
        encoder = encoders[index % len(encoders)]
        order = texts[index:] + texts[:index]
        try:
            for _ in range(3):
                out = (
                    encoder.encode_queries(order) if index % 2 else encoder.encode(order)
                )  # the micro-batched path and the direct one
                results.append(np.roll(out, index, axis=0))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for out in results:
        np.testing.assert_allclose(out, reference, atol=1e-5)
    rows = _rows_of(directory)
    assert len(rows) == len(texts) and all(decode(k, v) is not None for k, v in rows)
    with sqlite3.connect(directory / DATABASE_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        meta = dict(db.execute("SELECT name, value FROM meta"))
    assert meta["entries"] == len(rows)
    assert meta["bytes"] == sum(len(v) for _, v in rows)


def test_two_cli_runs_on_one_cache(tiny_bert_dir: Path, tmp_path: Path) -> None:
    directory = tmp_path / "c"
    source = tmp_path / "in.txt"
    source.write_text("".join(f"line {i} of a shared corpus\n" for i in range(300)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "localembed.cli", "embed", str(source), "--model"]
    runs = [
        subprocess.Popen(
            [
                *command,
                str(tiny_bert_dir),
                "-o",
                str(tmp_path / f"out{i}.npy"),
                "--cache",
                str(directory),
                "--chunk-size",
                "16",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    first, second = (np.load(tmp_path / f"out{i}.npy") for i in range(2))
    np.testing.assert_allclose(first, second, atol=1e-6)
    rows = _rows_of(directory)
    assert len(rows) == 300 and all(decode(k, v) is not None for k, v in rows)
    with sqlite3.connect(directory / DATABASE_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    third = subprocess.run(
        [*command, str(tiny_bert_dir), "-o", str(tmp_path / "out2.npy"), "--cache", str(directory)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "cache: 300 hits, 0 misses (0 computed)" in third.stderr
    assert np.load(tmp_path / "out2.npy").tobytes() in (first.tobytes(), second.tobytes())


# -- eviction --------------------------------------------------------------------------------


def test_lru_eviction_under_the_cap(tiny_bert_dir: Path, tmp_path: Path) -> None:
    directory = str(tmp_path / "c")
    probe = get_encoder(model=str(tiny_bert_dir), cache=str(tmp_path / "probe"))
    probe.encode(["x"])
    entry = probe.cache_stats()["bytes"]
    cap = entry * 10
    encoder = get_encoder(model=str(tiny_bert_dir), cache=directory, cache_max_bytes=cap)
    old = [f"old {i}" for i in range(6)]
    encoder.encode(old)
    time.sleep(0.01)
    encoder.encode(old[:3])  # the first three are now the most recently used
    encoder.encode([f"new {i}" for i in range(6)])  # 12 entries > cap of 10: two go
    stats = encoder.cache_stats()
    assert stats["bytes"] <= cap and stats["entries"] == 10 and stats["evictions"] == 2
    before = encoder.cache_stats()["hits"]
    encoder.encode(old[:3])
    assert encoder.cache_stats()["hits"] - before == 3  # kept: recently used
    misses = encoder.cache_stats()["misses"]
    encoder.encode(old[3:])  # written together (one `used` time): two of these three went
    assert encoder.cache_stats()["misses"] - misses == 2  # evicted: least recently used


# -- redis -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        pytest.skip("no redis-server or valkey-server binary on PATH (apt install redis-server)")
    port = _free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            "64mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("redis-server did not start")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_redis_hits_are_bit_identical_and_corruption_is_recomputed(
    tiny_bert_dir: Path, redis_url: str
) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    texts = ["redis one", "redis two", "redis three"]
    encoder = get_encoder(model=str(tiny_bert_dir), cache=redis_url)
    first = encoder.encode(texts)
    clear_encoder_cache()
    again = get_encoder(model=str(tiny_bert_dir), cache=redis_url)
    assert again.encode(texts).tobytes() == first.tobytes()
    assert again.cache_stats()["hits"] == 3
    keys = sorted(client.keys("localembed:v1:*"))
    assert len(keys) == 3
    value = client.get(keys[0])
    client.set(keys[0], value[:-5])  # truncated
    client.setrange(keys[1], 20, b"\xff")  # bits flipped
    client.set(keys[2], client.get(keys[0]))  # another key's bytes
    clear_encoder_cache()
    healed = get_encoder(model=str(tiny_bert_dir), cache=redis_url)
    out = healed.encode(texts)
    assert healed.cache_stats()["corrupt"] == 3 and healed.cache_stats()["computed"] == 3
    np.testing.assert_allclose(out, first, atol=1e-6)
    assert all(decode(k.removeprefix(b"localembed:v1:"), client.get(k)) for k in keys)


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_redis_threads_and_the_server_eviction(tiny_bert_dir: Path, redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    texts = [f"shared {i}" for i in range(30)]
    encoder = get_encoder(model=str(tiny_bert_dir), cache=redis_url)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            encoder.encode_documents(texts)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(decode(k.removeprefix(b"localembed:v1:"), client.get(k)) for k in client.scan_iter())
    # The server's own cap: filling past maxmemory evicts (allkeys-lru), nothing breaks.
    store = open_store(redis_url)
    filler = [(os.urandom(32), os.urandom(64 * 1024)) for _ in range(1500)]  # ~96 MiB
    store.put_many(filler)
    assert encoder.cache_stats()["evictions"] > 0
    out = encoder.encode_documents(texts)  # hits or recomputed: always right
    np.testing.assert_allclose(out, get_encoder(model=str(tiny_bert_dir)).encode(texts), atol=1e-5)
    client.flushdb()
    with pytest.raises(ValueError, match="maxmemory"):
        open_store(redis_url, max_bytes=10)


# -- surfaces --------------------------------------------------------------------------------


def test_the_micro_batcher_and_async_callers_use_the_cache(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    encoder = get_encoder(model=str(tiny_bert_dir), cache=str(tmp_path / "c"))
    queries = [f"query {i}" for i in range(5)]
    first = encoder.encode_queries(queries)

    async def many() -> list[np.ndarray]:
        return await asyncio.gather(*(encoder.aencode_queries(queries) for _ in range(4)))

    for out in asyncio.run(many()):
        assert out.tobytes() == first.tobytes()
    assert encoder.cache_stats()["hits"] == 20
    encoded = encoder.batcher.encode_call(["query 0", "brand new"])
    assert encoded.tokens == sum(encoded.text_tokens) and len(encoded.text_tokens) == 2
    assert encoder.cache_stats()["computed"] == 6


def test_server_with_a_cache_config_counts_and_keeps_refusing_over_long(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from localembed.server.app import create_app
    from localembed.server.settings import ServerSettings

    config = EncoderConfig(model=str(tiny_bert_dir), cache=str(tmp_path / "c"), max_length=8)
    long_text = "word " * 40
    app = create_app(config, ServerSettings(truncate=False))
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        body = {"input": ["short one", "short two"], "model": str(tiny_bert_dir)}
        response = client.post("/v1/embeddings", json=body)
        assert response.status_code == 200, response.text
        first = response.json()
        second = client.post("/v1/embeddings", json=body).json()
        assert first["data"] == second["data"]
        assert first["usage"] == second["usage"]
        encoder = get_encoder(config)
        assert encoder.cache_stats()["hits"] == 2
    # An over-long text cached by a truncating caller is still refused by this server.
    encoder.encode([long_text])
    with TestClient(create_app(config, ServerSettings(truncate=False))) as client:
        while client.get("/health").status_code != 200:
            time.sleep(0.1)
        refused = client.post(
            "/v1/embeddings", json={"input": [long_text], "model": str(tiny_bert_dir)}
        )
        assert refused.status_code == 400, refused.text
    assert encoder.cache_stats()["hits"] >= 3


def test_info_prints_the_fingerprint(tiny_bert_dir: Path) -> None:
    import contextlib
    import io

    from localembed.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["info", str(tiny_bert_dir), "--json"]) == 0
    assert model_fingerprint(tiny_bert_dir) in out.getvalue()


def test_sparse_adapters_refuse_a_cache(tmp_path: Path) -> None:
    from langchain_localembed import LocalSparseEmbeddings

    with pytest.raises(ValueError, match="sparse weights"):
        LocalSparseEmbeddings(cache=str(tmp_path / "c"))


def test_adapters_pass_the_cache(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from langchain_localembed import LocalEmbeddings
    from llamaindex_localembed import LocalEmbedding

    cache = str(tmp_path / "c")
    lc = LocalEmbeddings(model=str(tiny_bert_dir), cache=cache)
    li = LocalEmbedding(model=str(tiny_bert_dir), cache=cache)
    vector = lc.embed_documents(["shared text"])[0]
    assert li.get_text_embedding("shared text") == vector
    assert li.encoder.cache_stats()["hits"] == 1


def test_namespace_for_other_caches(tiny_bert_dir: Path) -> None:
    encoder = get_encoder(model=str(tiny_bert_dir))
    assert cache_namespace(encoder) != cache_namespace(
        get_encoder(model=str(tiny_bert_dir), pooling="max")
    )
    assert isinstance(EmbeddingCache, type)


def test_a_truncated_hit_is_still_reported(
    tiny_bert_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = get_encoder(model=str(tiny_bert_dir), cache=str(tmp_path / "c"), max_length=8)
    long_text = "word " * 40
    encoder.encode([long_text, "short"])
    caplog.clear()
    with caplog.at_level("WARNING", logger="localembed"):
        encoder.encode(["short", long_text])
    assert encoder.cache_stats()["hits"] == 2
    assert "1 of 2 texts served from the embedding cache were truncated" in caplog.text
    assert "(rows 1)" in caplog.text


def test_a_new_setting_joins_the_key_by_default(tiny_bert_dir: Path) -> None:
    from localembed.cache import NOT_KEYED

    encoder = get_encoder(model=str(tiny_bert_dir))
    fields = key_fields(encoder)
    keyed = set(fields) | set(fields["options"])  # type: ignore[arg-type]
    for name in EncoderConfig.model_fields:
        assert name in NOT_KEYED or name in keyed, name


def test_the_key_names_the_versions_that_compute_a_vector(tiny_bert_dir: Path) -> None:
    import tokenizers
    import torch
    import transformers

    versions = key_fields(get_encoder(model=str(tiny_bert_dir)))["runtime_versions"]
    assert versions == {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }
    base: dict[str, object] = dict.fromkeys(KEY_FIELDS, "x")
    newer = {**base, "runtime_versions": {**versions, "torch": "99.0"}}
    assert namespace_digest({**base, "runtime_versions": versions}) != namespace_digest(newer)


def _bump_first_weight(model: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = model / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 0.5
    save_file(tensors, weights, metadata={"format": "pt"})


def test_weights_rewritten_under_a_loaded_model_never_key_its_vectors(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    # A model loaded without a cache, its weights then rewritten in place: a cached encoder of
    # the same settings shares the loaded (old) weights, so it must not key their vectors by
    # the new files' fingerprint (a later process loading the new weights would hit them).
    model = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model)
    cache = str(tmp_path / "c")
    texts = ["a cat sat on the mat"]
    old = get_encoder(model=str(model)).encode(texts)
    _bump_first_weight(model)
    with pytest.raises(localembed.ModelError, match="changed on disk since it was loaded"):
        get_encoder(model=str(model), cache=cache).encode(texts)
    clear_encoder_cache()
    fresh = get_encoder(model=str(model), cache=cache)
    new = fresh.encode(texts)
    assert fresh.cache_stats()["hits"] == 0
    assert not np.allclose(new, old)


def test_weights_rewritten_with_size_and_mtime_put_back_never_key_loaded_vectors(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    # As above, but the rewrite keeps the size (same shapes) and puts back the old mtime
    # (cp -p, rsync -t): only the change time tells the loaded files from the new ones.
    model = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model)
    weights = model / "model.safetensors"
    texts = ["a cat sat on the mat"]
    get_encoder(model=str(model)).encode(texts)
    before = weights.stat()
    bumped = tmp_path / "bumped"
    shutil.copytree(model, bumped)
    _bump_first_weight(bumped)
    weights.write_bytes((bumped / "model.safetensors").read_bytes())  # in place: same inode
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = weights.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    with pytest.raises(localembed.ModelError, match="changed on disk since it was loaded"):
        get_encoder(model=str(model), cache=str(tmp_path / "c")).encode(texts)


def test_a_rewrite_that_keeps_size_and_mtime_changes_the_fingerprint(tmp_path: Path) -> None:
    # cp -p / rsync -t / os.utime put back the old modification time; the size of retrained
    # weights of one architecture is the same: the content digest must still be recomputed.
    model = tmp_path / "model"
    model.mkdir()
    weights = model / "model.safetensors"
    weights.write_bytes(b"\1" * 64)
    before = model_fingerprint(model)
    stat = weights.stat()
    weights.write_bytes(b"\2" * 64)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_mtime_ns == stat.st_mtime_ns
    assert model_fingerprint(model) != before


def test_a_stored_non_finite_vector_is_recomputed_not_raised(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    # A record with a valid checksum around a NaN (written by another tool or an older
    # version): never returned, and it must not block the text forever either.
    from localembed.cache.records import Record, encode

    directory = tmp_path / "c"
    texts = ["first text", "second text"]
    reference = get_encoder(model=str(tiny_bert_dir), cache=str(directory)).encode(texts)
    with sqlite3.connect(directory / DATABASE_NAME) as db:
        for key, value in _rows_of(directory):
            record = decode(key, value)
            assert record is not None
            vector = record.vector.copy()
            vector[3] = np.nan if record.tokens % 2 else np.inf
            planted = encode(key, Record(vector, record.tokens, record.truncated))
            db.execute("UPDATE entries SET value = ? WHERE key = ?", (planted, key))
    clear_encoder_cache()
    encoder = get_encoder(model=str(tiny_bert_dir), cache=str(directory))
    assert encoder.encode(texts).tobytes() == reference.tobytes()
    assert encoder.cache_stats()["corrupt"] == 2


@pytest.mark.parametrize("damage", ["not-a-database", "truncated", "zeroed-pages"])
def test_a_damaged_database_file_is_set_aside_and_recomputed(
    tiny_bert_dir: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    import localembed.cache as cache_module

    directory = tmp_path / "c"
    texts = ["first text", "second text", *(f"filler {i} " * 20 for i in range(200))]
    reference = get_encoder(model=str(tiny_bert_dir), cache=str(directory)).encode(texts)
    clear_encoder_cache()
    for store in cache_module._stores.values():  # this process let go of the file
        store.close()
    cache_module._stores.clear()
    database = directory / DATABASE_NAME
    data = database.read_bytes()
    if damage == "not-a-database":
        database.write_bytes(b"this is not a database " * 500)
    elif damage == "truncated":
        database.write_bytes(data[: len(data) // 3])
    else:
        database.write_bytes(data[:4096] + bytes(len(data) - 4096))
    with caplog.at_level("WARNING", logger="localembed"):
        encoder = get_encoder(model=str(tiny_bert_dir), cache=str(directory))
        again = encoder.encode(texts)
    np.testing.assert_allclose(again, reference, atol=1e-6)
    assert encoder.cache_stats()["computed"] == len(texts)
    assert "damaged" in caplog.text and str(database) in caplog.text
    assert list(directory.glob(f"{DATABASE_NAME}.damaged-*"))  # kept for a look, not reused
    clear_encoder_cache()
    healed = get_encoder(model=str(tiny_bert_dir), cache=str(directory))
    assert healed.encode(texts).tobytes() == again.tobytes()
    assert healed.cache_stats()["hits"] == len(texts)


def test_repaired_texts_are_warned_about_once_per_call_with_a_cache(
    tiny_bert_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # docs/guarantees.md: lone surrogates are replaced and "one warning per call counts the
    # repaired texts"; a cached encoder checked the texts twice and warned twice.
    encoder = get_encoder(model=str(tiny_bert_dir), cache=str(tmp_path / "c"))
    for _ in range(2):  # misses, then hits
        caplog.clear()
        with caplog.at_level("WARNING", logger="localembed"):
            encoder.encode(["bad \udc80 byte", "fine"])
            encoder.encode_documents(["bad \udc80 byte", "fine"])
        warnings = [r for r in caplog.records if "invalid unicode" in r.getMessage()]
        assert len(warnings) == 2, [r.getMessage() for r in warnings]


def test_a_cache_path_that_is_a_file_is_an_input_error(tiny_bert_dir: Path, tmp_path: Path) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("not a cache directory")
    with pytest.raises(localembed.InputError, match="is a file, not a directory") as error:
        get_encoder(model=str(tiny_bert_dir), cache=str(existing))
    assert str(existing) in str(error.value)
    assert existing.read_text() == "not a cache directory"


def test_a_cache_directory_that_cannot_hold_a_database_is_an_input_error(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    under_a_file = tmp_path / "notes.txt"
    under_a_file.write_text("not a directory")
    occupied = tmp_path / "occupied"
    (occupied / DATABASE_NAME).mkdir(parents=True)  # the database's name taken by a folder
    for directory in (under_a_file / "cache", occupied):
        with pytest.raises(localembed.InputError, match="cannot hold a database") as error:
            get_encoder(model=str(tiny_bert_dir), cache=str(directory)).encode(["a text"])
        assert str(directory) in str(error.value)
    assert under_a_file.read_text() == "not a directory"


def test_a_cache_that_fails_later_is_a_runtime_fault_naming_it(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "c"
    encoder = get_encoder(model=str(tiny_bert_dir), cache=str(directory))
    encoder.encode(["a text"])
    shutil.rmtree(directory)
    directory.write_text("the directory became a file")
    with pytest.raises(localembed.RuntimeFault, match="embedding cache") as error:
        encoder.encode(["another text"])
    assert str(directory) in str(error.value)


def test_a_database_set_aside_by_another_connection_is_reopened(tmp_path: Path) -> None:
    # Process B finds the database damaged and renames it aside; process A (its own
    # connection) must not go on reading and writing the renamed file.
    from localembed.cache.sqlite_store import SQLiteStore

    first = SQLiteStore(tmp_path, max_bytes=None)
    first.put_many([(b"old", b"in the file set aside")])
    second = SQLiteStore(tmp_path, max_bytes=None)
    second.close()
    second._set_aside(sqlite3.DatabaseError("file is not a database"), second._file)
    second.put_many([(b"new", b"in the new file")])
    assert first.get_many([b"old", b"new"]) == [None, b"in the new file"]
    first.put_many([(b"from first", b"after the reopen")])
    assert second.get_many([b"from first"]) == [b"after the reopen"]
    assert list(tmp_path.glob(f"{DATABASE_NAME}.damaged-*"))


def test_a_child_forked_while_the_encoder_is_in_use_does_not_hang(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    # A multiprocessing "fork" child created while another thread of the parent holds the
    # forward pass's and the cache's locks (a busy server, a LangChain app) gets them unlocked,
    # its own SQLite state, and torch on one thread; what it writes lands in the real database.
    encoder = get_encoder(model=str(tiny_bert_dir), cache=str(tmp_path / "c"))
    texts = ["computed in the parent", "computed in the child"]
    expected = get_encoder(model=str(tiny_bert_dir)).encode(texts)
    encoder.encode(texts[:1])
    cache = encoder.cache
    assert cache is not None
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with encoder.backend._forward_lock, cache._lock:  # type: ignore[attr-defined]
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    try:
        pid = os.fork()
        if pid == 0:  # the child: exit code 0 only if both rows come back right
            try:
                import torch

                from localembed.hardware import apply_threads

                one = apply_threads(2) == 1 and torch.get_num_threads() == 1  # 2 would hang
                vectors = encoder.encode(texts)
                ok = np.allclose(vectors, expected, atol=1e-5) and cache.stats()["hits"] >= 1
                os._exit(0 if ok and one else 1)
            except BaseException:
                os._exit(2)
    finally:
        release.set()
        holder.join()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.store.get_many(cache.keys(texts[1:], None)) != [None]  # the child's write
    before = cache.stats()["hits"]
    np.testing.assert_allclose(encoder.encode(texts), expected, atol=1e-5)  # the parent goes on
    assert cache.stats()["hits"] == before + 2
