"""localembed.ray.embed_dataset on a real local Ray instance, against the single-process encoder.

Ray's driver, GCS, raylet and workers talk over localhost TCP, so this module alone opts in to
sockets on 127.0.0.1 (pyproject's addopts disable them everywhere else). One Ray instance is
shared by the module (starting one takes ~10 s); each embed_dataset run starts actors that
import torch and load a model, so the runs are few and each checks several things.
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from localembed import EncoderConfig, get_encoder
from localembed.ray import EmbedBatch, embed_dataset
from tests import docs_harness

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"]), pytest.mark.slow]

TEXTS = [
    "The Eiffel Tower was completed in 1889.",
    "Photosynthesis turns sunlight into glucose.",
    "",
    "Python was created by Guido van Rossum and first released in 1991, long before Rust.",
    "caf\u00e9 na\u00efve \u4e2d\u6587 \U0001f600",
    "short",
    "The Great Barrier Reef is the largest coral reef system on Earth " * 3,
    "A sourdough starter is a culture of wild yeast.",
    "x",
    "Mount Everest is the highest mountain above sea level.",
]
MARKER = "LOCALEMBED_TEST_RAY"  # env var that every Ray process of one run inherits


def ray_processes(marker: str) -> list:
    """Live processes (other than this one) whose environment carries ``MARKER=marker``."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get(MARKER) == marker:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def assert_no_ray_processes_left(marker: str, grace_s: float = 60.0) -> None:
    # Ray stops its actors asynchronously after shutdown: allow them a moment to exit.
    deadline = time.monotonic() + grace_s
    while (left := ray_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, [process.cmdline() for process in left]


def ray_env(marker: str) -> dict[str, str]:
    return {MARKER: marker, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}


# -- without a Ray instance (runs first: the example starts and stops its own) --------------


def test_example_runs_and_finds_the_python_document(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    os.environ[MARKER] = marker  # inherited by the example and every Ray process it starts
    try:
        # The command docs/ray.md shows (its block is marked run-by this test), compared there.
        name = "test_example_runs_and_finds_the_python_document"
        out = docs_harness.run_marked_block(docs_harness.run_by_id(Path(__file__), name), tmp_path)
    finally:
        del os.environ[MARKER]
    assert "embedded 20 documents on 2 actors: (20, 384) float32" in out
    top = re.search(r"^  1\. (\d\.\d{3})  \[2\] Python was created by Guido van Rossum", out, re.M)
    assert top is not None, out
    assert float(top.group(1)) > 0.5
    assert_no_ray_processes_left(marker)


def test_config_typo_fails_before_any_ray_work() -> None:
    not_a_dataset = object()  # never touched: the settings are checked first
    with pytest.raises(ValidationError, match="did you mean 'pooling'"):
        embed_dataset(not_a_dataset, poolng="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be one of document, query"):
        embed_dataset(not_a_dataset, kind="passage")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Ray gives each actor its own GPU"):
        embed_dataset(not_a_dataset, device="cuda:1")  # type: ignore[arg-type]
    assert not ray.is_initialized()


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=re.escape('pip install "localembed[ray]"')):
        embed_dataset(object())  # type: ignore[arg-type]


def test_actor_callable_checks_columns_and_names_the_bad_row(tiny_bert_dir: Path) -> None:
    # The class each actor runs, called here on a real Arrow batch (no Ray needed).
    embed = EmbedBatch(EncoderConfig(model=str(tiny_bert_dir)), "text", "embedding", "document")
    batch = pa.table({"id": [7, 8], "text": ["fine", None]})
    with pytest.raises(TypeError, match=r"got NoneType in row \{'id': 8, 'text': None\}"):
        embed(batch)
    with pytest.raises(ValueError, match="column 'body' not in the dataset; its columns: id, text"):
        EmbedBatch(EncoderConfig(model=str(tiny_bert_dir)), "body", "embedding", "document")(batch)
    out = embed(batch.slice(0, 1))
    assert out.column_names == ["id", "text", "embedding"]


# -- on a shared local Ray instance ---------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    marker = uuid.uuid4().hex
    saved = {name: os.environ.get(name) for name in ray_env(marker)}
    os.environ.update(ray_env(marker))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",  # loopback only (see the module docstring)
    )
    try:
        yield
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        assert_no_ray_processes_left(marker)


def rows_by_id(ds) -> list[dict]:
    return sorted(ds.take_all(), key=lambda row: row["id"])


def test_embeds_like_the_single_process_encoder(local_ray: None) -> None:
    items = [
        {"id": 100 - i, "text": text, "count": None if i % 3 else i, "tags": [f"t{i}"] * (i % 2)}
        for i, text in enumerate(TEXTS)
    ]
    ds = ray.data.from_items(items)
    # Small batches over two actors: several batches, done in whichever order Ray likes.
    rows = rows_by_id(embed_dataset(ds, concurrency=2, rows_per_batch=3))

    by_id = {item["id"]: item for item in items}
    assert [row["id"] for row in rows] == sorted(by_id)
    for row in rows:  # every other column comes back as it went in
        assert {key: row[key] for key in ("text", "count", "tags")} == {
            key: by_id[row["id"]][key] for key in ("text", "count", "tags")
        }
    got = np.stack([row["embedding"] for row in rows])
    assert got.dtype == np.float32
    assert got.shape == (len(TEXTS), 384)
    expected = get_encoder().encode_documents([row["text"] for row in rows])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_parquet_documents_and_queries_with_instructions(
    local_ray: None, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"id": list(range(len(TEXTS))), "body": TEXTS}), path)
    config = {
        "model": str(tiny_bert_dir),
        "pooling": "cls",
        "query_instruction": "query: ",
        "document_instruction": "passage: ",
        "max_length": 16,
    }
    ds = ray.data.read_parquet(str(path))
    # Two actor pools plus the Parquet read must fit in 2 CPUs, or Ray waits forever.
    pool = {"concurrency": 1, "num_cpus_per_actor": 0.5}
    ds = embed_dataset(ds, "body", "doc", rows_per_batch=4, **pool, **config)
    ds = embed_dataset(ds, "body", "query", kind="query", **pool, **config)
    rows = rows_by_id(ds)

    assert [row["id"] for row in rows] == list(range(len(TEXTS)))
    assert [row["body"] for row in rows] == TEXTS
    encoder = get_encoder(**config)
    docs = np.stack([row["doc"] for row in rows])
    queries = np.stack([row["query"] for row in rows])
    np.testing.assert_allclose(docs, encoder.encode_documents(TEXTS), rtol=0, atol=1e-6)
    np.testing.assert_allclose(queries, encoder.encode_queries(TEXTS), rtol=0, atol=1e-6)
    np.testing.assert_allclose(queries, encoder.encode(TEXTS, "query: "), rtol=0, atol=1e-6)
    assert np.abs(docs - queries).max() > 1e-3  # the instructions really differ


def test_a_none_text_is_named_by_its_row_from_inside_ray(
    local_ray: None, tiny_bert_dir: Path
) -> None:
    ds = ray.data.from_items([{"id": 1, "text": "fine"}, {"id": 2, "text": None}])
    with pytest.raises(Exception, match=r"got NoneType in row \{'id': 2, 'text': None\}"):
        embed_dataset(ds, model=str(tiny_bert_dir), concurrency=1).take_all()


def test_errors_found_in_the_driver(local_ray: None) -> None:
    ds = ray.data.from_items([{"id": 1, "body": "a"}])
    with pytest.raises(ValueError, match="column 'text' not in the dataset; its columns: id, body"):
        embed_dataset(ds)
    with pytest.raises(ValueError, match="already has a column 'id'"):
        embed_dataset(ds, "body", "id")
    with pytest.raises(ValueError, match="concurrency must be"):
        embed_dataset(ds, "body", concurrency=0)
    with pytest.raises(ValueError, match="device='cuda' but the Ray cluster has no GPU"):
        embed_dataset(ds, "body", device="cuda")


@pytest.mark.filterwarnings("ignore:The minimum number of concurrent actors:UserWarning")
def test_empty_dataset_gives_an_empty_dataset(local_ray: None) -> None:
    assert embed_dataset(ray.data.from_items([]), concurrency=1).take_all() == []


def test_a_cde_context_is_read_once_in_the_driver_and_shipped(
    local_ray: None, tmp_path: Path
) -> None:
    from localembed.contextual import ContextError
    from tests.cde_factory import build_tiny_cde

    model = str(build_tiny_cde(tmp_path / "cde"))
    corpus = [f"document {i}: " + text for i, text in enumerate(TEXTS * 3)]
    encoder = get_encoder(model=model, trust_remote_code=True)
    context = encoder.build_context(corpus)
    path = context.save(tmp_path / "corpus.context.safetensors")
    ds = ray.data.from_items([{"id": i, "text": text} for i, text in enumerate(corpus)])
    lazy = embed_dataset(
        ds, concurrency=2, rows_per_batch=4, model=model, trust_remote_code=True, context=path
    )
    # The driver has read the file: the actors get the context itself, not the path (they
    # may not see the file), and never rebuild it (they have no corpus to build it from).
    path.unlink()
    rows = rows_by_id(lazy)
    got = np.stack([row["embedding"] for row in rows])
    expected = encoder.with_context(context).encode_documents(corpus)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # A CDE model without a context fails on the actors with the fix in the message.
    with pytest.raises(Exception, match="has no context yet"):
        embed_dataset(ds, concurrency=1, model=model, trust_remote_code=True).take_all()
    with pytest.raises(ContextError, match="cannot read the context file"):
        embed_dataset(ds, model=model, trust_remote_code=True, context=path)
