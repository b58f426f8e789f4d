"""Reliability: bad input, batch invariance, concurrency, out-of-memory, interrupts, leaks.

Each test names the regression it catches. The default model is used where the behaviour
depends on a real model; the tiny BERT fixture (the same WordPiece tokenizer) where only
volume matters.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding
from localembed import get_encoder
from localembed.cli import main
from localembed.encoder import LocalEncoder
from localembed.faults import EncoderOutOfMemoryError
from tests.event_loop import lag_against_cpu_thread

DIMENSION = 384


@pytest.fixture(scope="module")
def encoder() -> LocalEncoder:
    return get_encoder()


@pytest.fixture(scope="module")
def langchain() -> LocalEmbeddings:
    return LocalEmbeddings()


@pytest.fixture(scope="module")
def llamaindex() -> LocalEmbedding:
    return LocalEmbedding()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread: these tests are about results, order, threads and memory,
    not speed, and on an oversubscribed CI machine every multi-threaded torch op waits for a
    core (measured: ~6 ms per op at load 4 on 2 cores, a 30x slowdown of this file). The
    default thread count is exercised by test_pooling and test_default_model."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def unit_rows(vectors: Any, count: int, dimension: int = DIMENSION) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    assert array.shape == (count, dimension)
    assert np.isfinite(array).all()
    np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-5)
    return array


# -- 1. bad input: one defined answer each -------------------------------------------------

# Inputs that are not a list of str: a TypeError (never a vector per character, never a
# crash inside the tokenizer). The message names the offending item's index.
NOT_A_LIST = {
    "None": (None, "got NoneType"),
    "int": (7, "got int"),
    "float": (2.5, "got float"),
    "bare str": ("a sentence", "single str; wrap it"),
    "bytes": (b"a sentence", "single bytes; wrap it"),
    "bytearray": (bytearray(b"abc"), "single bytearray"),
    "dict": ({"a": "b"}, "got dict"),
    "set": ({"a", "b"}, "got set"),
}
BAD_ITEMS = {
    "None item": (["ok", None], "item 1 is NoneType"),
    "int item": (["ok", "fine", 3], "item 2 is int"),
    "float item": ([1.5], "item 0 is float"),
    "bytes item": (["ok", b"bytes"], "item 1 is bytes"),
    "nested list": ([["nested"]], "item 0 is list"),
    "tuple item": (["ok", ("a", "b")], "item 1 is tuple"),
    "dict item": ([{"text": "x"}], "item 0 is dict"),
}


def batch_callers(
    encoder: LocalEncoder, langchain: LocalEmbeddings, llamaindex: LocalEmbedding
) -> dict[str, Callable[[Any], Any]]:
    return {
        "encoder": encoder.encode,
        "encoder.documents": encoder.encode_documents,
        "langchain": langchain.embed_documents,
        "langchain.async": lambda texts: asyncio.run(langchain.aembed_documents(texts)),
        "llamaindex": llamaindex.get_text_embedding_batch,
        "llamaindex.async": lambda texts: asyncio.run(llamaindex.aget_text_embedding_batch(texts)),
    }


def _not_a_list_cases() -> Iterator[Any]:
    for name, (value, message) in NOT_A_LIST.items():
        for caller in ("encoder", "langchain", "langchain.async", "llamaindex"):
            yield pytest.param(caller, value, message, id=f"{caller}-{name}")


@pytest.mark.parametrize(("caller", "value", "message"), list(_not_a_list_cases()))
def test_not_a_list_of_str_is_a_type_error(
    caller: str, value: Any, message: str, encoder, langchain, llamaindex
) -> None:
    call = batch_callers(encoder, langchain, llamaindex)[caller]
    with pytest.raises(TypeError, match=message):
        call(value)


@pytest.mark.parametrize("case", list(BAD_ITEMS))
@pytest.mark.parametrize(
    "caller", ["encoder", "encoder.documents", "langchain", "langchain.async", "llamaindex"]
)
def test_a_bad_item_is_a_type_error_naming_its_index(
    case: str, caller: str, encoder, langchain, llamaindex
) -> None:
    texts, message = BAD_ITEMS[case]
    call = batch_callers(encoder, langchain, llamaindex)[caller]
    with pytest.raises(TypeError, match=message):
        call(texts)


@pytest.mark.parametrize("value", [None, 5, b"bytes", ["a list"], {"a": 1}])
def test_single_text_methods_need_a_str(value: Any, langchain, llamaindex) -> None:
    for call, what in [
        (langchain.embed_query, "query"),
        (lambda v: asyncio.run(langchain.aembed_query(v)), "query"),
        (llamaindex.get_query_embedding, "query"),
        (llamaindex.get_text_embedding, "text"),
        (lambda v: asyncio.run(llamaindex.aget_query_embedding(v)), "query"),
    ]:
        with pytest.raises(TypeError, match=f"{what} must be a str, got {type(value).__name__}"):
            call(value)


# Odd but valid text: every one gets a finite unit vector, row i for text i.
ODD_TEXTS = {
    "empty": "",
    "space": " ",
    "whitespace": " \t\n\r\u00a0\u3000 ",
    "NUL": "\x00",
    "NUL inside": "before\x00after",
    "control characters": "\x01\x02\x07\x08\x1b[31m\x7f\x9f",
    "zero width": "\u200b\u200c\u200d\ufeff",
    "emoji": "🙂🎉👩‍👩‍👧‍👦🏳️‍🌈",
    "CJK": "你好，世界。今日は世界。안녕하세요 세계",
    "Arabic (RTL)": "مرحبا بالعالم",
    "Hebrew (RTL)": "שלום עולם",
    "bidi override": "\u202eevil\u202c text",
    "combining marks": "e\u0301 a\u0308\u0308\u0308\u0308 Z\u0351\u0352\u0353",
    "private use": "\ue000\U000f0000",
    "noncharacters": "\ufffe\uffff\U0010ffff",
    "lone high surrogate": "broken \ud83d emoji",
    "lone low surrogate": "\udc80\udcff",
    "only a surrogate": "\ud800",
    "long word": "a" * 5000,
    "many newlines": "\n" * 1000,
}


def test_odd_texts_give_valid_vectors_in_order(encoder, langchain, llamaindex, caplog) -> None:
    texts = list(ODD_TEXTS.values())
    with caplog.at_level(logging.WARNING, logger="localembed"):
        together = unit_rows(encoder.encode(texts), len(texts))
    assert "3 of 20 texts contained invalid unicode (lone surrogates)" in caplog.text
    alone = np.vstack([encoder.encode([text]) for text in texts])
    assert np.abs(together - alone).max() <= 1e-5  # row i is text i
    np.testing.assert_allclose(
        unit_rows(langchain.embed_documents(texts), len(texts)), together, atol=1e-5
    )
    np.testing.assert_allclose(
        unit_rows(llamaindex.get_text_embedding_batch(texts), len(texts)), together, atol=1e-5
    )
    for text in [ODD_TEXTS[k] for k in ("empty", "NUL", "emoji", "lone low surrogate")]:
        unit_rows([langchain.embed_query(text)], 1)
        unit_rows([llamaindex.get_query_embedding(text)], 1)
        unit_rows([llamaindex.get_text_embedding(text)], 1)


def test_lone_surrogates_are_replaced_not_refused(encoder, caplog) -> None:
    # Decided: a lone surrogate (invalid unicode, which Rust tokenizers refuse with an opaque
    # TypeError) becomes U+FFFD and the text is embedded; a surrogate pair becomes its
    # character. One warning per call counts the repaired texts.
    with caplog.at_level(logging.WARNING, logger="localembed"):
        repaired = encoder.encode(["bad \udc80 byte", "\ud83d\ude00 pair", "clean"])
    assert "2 of 3 texts contained invalid unicode" in caplog.text
    expected = encoder.encode(["bad \ufffd byte", "😀 pair", "clean"])
    np.testing.assert_array_equal(repaired, expected)


def test_a_five_megabyte_text_is_truncated_and_warned(langchain, caplog) -> None:
    words = [f"token{i % 97}" for i in range(800_000)]
    huge = " ".join(words)
    assert len(huge.encode()) > 5_000_000
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="localembed"):
        (vector,) = langchain.embed_documents([huge])
    elapsed = time.perf_counter() - started
    assert "1 of 1 texts were longer than 256 tokens and were truncated" in caplog.text
    # Truncation keeps the first 256 tokens: the vector is the one of a long enough prefix.
    prefix = langchain.embed_documents([" ".join(words[:400])])[0]
    np.testing.assert_allclose(vector, prefix, atol=1e-6)
    assert elapsed < 60, f"a 5 MB text took {elapsed:.0f} s"


def test_a_hundred_thousand_texts_keep_length_and_order(tiny_bert_dir: Path) -> None:
    texts = [f"w{i % 5003}" for i in range(100_000)]
    embeddings = LocalEmbeddings(model=str(tiny_bert_dir), pooling="mean", batch_size=512)
    vectors = unit_rows(embeddings.embed_documents(texts), len(texts), 32)
    probes = [0, 1, 5002, 5003, 54_321, 99_999]
    alone = embeddings.encoder.encode([texts[i] for i in probes])
    np.testing.assert_allclose(vectors[probes], alone, atol=1e-5)
    np.testing.assert_allclose(vectors[5003], vectors[0], atol=1e-5)  # same text, same vector
    llamaindex = LocalEmbedding(
        model=str(tiny_bert_dir), pooling="mean", batch_size=512, embed_batch_size=2048
    )
    some = texts[:12_345]
    np.testing.assert_allclose(
        np.asarray(llamaindex.get_text_embedding_batch(some)), vectors[:12_345], atol=1e-5
    )


# -- 2. batch invariance and determinism (default model, fp32) ------------------------------

MIXED = [
    "A short one.",
    "",
    "The quick brown fox jumps over the lazy dog, again and again, until it is tired. " * 3,
    "你好，世界",
    "emoji 🙂 and more 🎉",
    "Numbers 3.14159 and 2.71828 are constants.",
    "x",
    "A long text that will certainly be truncated at the model's limit. " * 40,
    "مرحبا بالعالم",
    "Paris is the capital of France.",
]


def test_vectors_do_not_depend_on_batch_size_order_or_neighbours(encoder) -> None:
    alone = np.vstack([encoder.encode([text]) for text in MIXED])
    for batch_size in (1, 3, 4, 32):
        assert np.abs(encoder.encode(MIXED, batch_size=batch_size) - alone).max() <= 1e-5
    rng = np.random.default_rng(0)
    for _ in range(3):
        order = rng.permutation(len(MIXED))
        shuffled = encoder.encode([MIXED[i] for i in order], batch_size=4)
        assert np.abs(shuffled[np.argsort(order)] - alone).max() <= 1e-5
    for neighbours in (["tiny", ""], [MIXED[2], MIXED[7]]):
        for index in (0, 1, 3, 7):
            vector = encoder.encode([*neighbours, MIXED[index], *neighbours])[len(neighbours)]
            assert np.abs(vector - alone[index]).max() <= 1e-5, (index, neighbours[0])
    budgeted = get_encoder(max_batch_tokens=300)  # other batch shapes
    assert np.abs(budgeted.encode(MIXED) - alone).max() <= 1e-5


def test_repeated_calls_are_identical(encoder, langchain, llamaindex) -> None:
    first = encoder.encode(MIXED)
    for _ in range(2):
        np.testing.assert_array_equal(encoder.encode(MIXED), first)
    assert langchain.embed_documents(MIXED) == langchain.embed_documents(MIXED)
    assert llamaindex.get_query_embedding("same") == llamaindex.get_query_embedding("same")
    same = encoder.encode([MIXED[2], "other", MIXED[2], MIXED[2]])
    assert np.abs(same[[2, 3]] - same[0]).max() <= 1e-6  # same text, same vector


# -- 3. concurrency ---------------------------------------------------------------------------

CALLS = [[f"text {i}", f"the {i % 7}th topic of many", "shared"][: 1 + i % 3] for i in range(40)]


def _close(got: list[Any], want: list[Any]) -> bool:
    # Concurrent calls share micro-batches: their padding differs, within the fp32 contract.
    return bool(np.abs(np.asarray(got) - np.asarray(want)).max() <= 1e-5)


def test_threads_get_the_serial_results(tiny_bert_dir: Path) -> None:
    embeddings = LocalEmbeddings(model=str(tiny_bert_dir), pooling="mean")
    serial_docs = [embeddings.embed_documents(texts) for texts in CALLS]
    serial_queries = [embeddings.embed_query(texts[0]) for texts in CALLS]
    # A second adapter with equal output but its own (cold) encoder: first use races too.
    cold = LocalEmbeddings(model=str(tiny_bert_dir), pooling="mean", document_instruction="")
    assert cold.encoder is not embeddings.encoder
    barrier = threading.Barrier(16)
    mismatches: list[tuple[int, int]] = []

    def work(thread: int) -> int:
        barrier.wait()
        for call in range(50):
            i = (thread * 7 + call) % len(CALLS)
            if call % 5 == 4:
                if not _close(cold.embed_query(CALLS[i][0]), serial_queries[i]):
                    mismatches.append((thread, call))
            elif not _close(cold.embed_documents(CALLS[i]), serial_docs[i]):
                mismatches.append((thread, call))
        return thread

    with ThreadPoolExecutor(16) as pool:
        assert sorted(pool.map(work, range(16))) == list(range(16))
    assert mismatches == []


async def test_concurrent_async_calls_are_correct_and_the_loop_stays_responsive(
    tiny_bert_dir: Path,
) -> None:
    langchain = LocalEmbeddings(model=str(tiny_bert_dir), pooling="mean")
    llamaindex = LocalEmbedding(model=str(tiny_bert_dir), pooling="mean")
    documents = [[f"document {i}", f"about topic {i % 13}", "x" * (i % 50)] for i in range(200)]
    expected = [langchain.embed_documents(texts) for texts in documents]

    async def everything() -> list[Any]:
        return await asyncio.gather(
            *(langchain.aembed_documents(texts) for texts in documents),
            *(llamaindex.aget_text_embedding_batch(texts) for texts in documents[:50]),
        )

    results = await everything()
    assert [len(result) for result in results] == [
        len(texts) for texts in documents + documents[:50]
    ]
    assert all(map(_close, results, expected + expected[:50]))
    lag = await lag_against_cpu_thread(everything)
    assert lag.holds, str(lag)
    assert len(lag.ours.gaps) >= 5


def test_get_encoder_loads_once_under_concurrent_first_use(tiny_bert_dir: Path) -> None:
    loads: list[int] = []
    original = LocalEncoder.__init__

    def counting_init(self, config, backend=None) -> None:
        loads.append(1)
        original(self, config, backend)

    barrier = threading.Barrier(12)

    def first_use(_: int) -> LocalEncoder:
        barrier.wait()
        return get_encoder(model=str(tiny_bert_dir), pooling="max", batch_size=5)

    LocalEncoder.__init__ = counting_init  # type: ignore[method-assign]
    try:
        with ThreadPoolExecutor(12) as pool:
            encoders = list(pool.map(first_use, range(12)))
    finally:
        LocalEncoder.__init__ = original  # type: ignore[method-assign]
    assert len({id(e) for e in encoders}) == 1
    assert loads == [1]


# -- 4. faults: out of memory ---------------------------------------------------------------


def cuda_out_of_memory() -> BaseException:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def cpu_allocator_failure() -> BaseException:
    return RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 1073741824 bytes. Error code 12 (Cannot allocate memory)"
    )


def real_cpu_allocation() -> BaseException:
    """A real allocation failure from torch's CPU allocator (1 PiB exceeds any address space)."""
    try:
        torch.empty(2**50, dtype=torch.uint8)
    except RuntimeError as error:
        return error
    pytest.skip("this machine allocated 1 PiB")


OUT_OF_MEMORY = {
    "cuda OutOfMemoryError": cuda_out_of_memory,
    "DefaultCPUAllocator": cpu_allocator_failure,
    "real CPU allocation": real_cpu_allocation,
    "MemoryError": MemoryError,
}


class MemoryLimit:
    """Fault injection: a forward pre-hook that raises ``error()`` when a batch's padded size
    (rows x width) exceeds ``limit``; the encoder's real code path reacts to it."""

    def __init__(self, encoder: LocalEncoder, limit: int, error: Callable[[], BaseException]):
        self.limit, self.error = limit, error
        self.shapes: list[tuple[int, int, bool]] = []
        assert encoder.model is not None
        self.handle = encoder.model.register_forward_pre_hook(self.hook, with_kwargs=True)
        # Whole batches: a model loaded while torch had 2+ threads splits each batch's rows
        # over threads (row_split), and the hook would count the slices.
        self.runtime = encoder.runtime
        self.split_workers = getattr(self.runtime, "split_workers", 0)
        if self.split_workers:
            self.runtime.split_workers = 0  # type: ignore[attr-defined]
        # Padded batches: a packed one reaches the model as one row of its real tokens.
        self.unpadded = getattr(self.runtime, "unpadded", False)
        self.runtime.unpadded = False  # type: ignore[attr-defined]

    def hook(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        rows, width = kwargs["input_ids"].shape
        fails = rows * width > self.limit
        self.shapes.append((rows, width, fails))
        if fails:
            raise self.error()

    def __enter__(self) -> MemoryLimit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()
        if self.split_workers:
            self.runtime.split_workers = self.split_workers  # type: ignore[attr-defined]
        self.runtime.unpadded = self.unpadded  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def tiny_encoder(tiny_bert_dir: Path) -> LocalEncoder:
    # backend="torch": MemoryLimit hooks the torch model's forward.
    return get_encoder(model=str(tiny_bert_dir), pooling="mean", batch_size=16, backend="torch")


OOM_TEXTS = [f"sentence number {i} " * (1 + i % 4) for i in range(40)]


@pytest.mark.parametrize("kind", list(OUT_OF_MEMORY))
def test_out_of_memory_splits_the_batch_and_retries(
    kind: str, tiny_encoder: LocalEncoder, caplog
) -> None:
    expected = tiny_encoder.encode(OOM_TEXTS)
    limit = 60  # padded tokens per forward pass; full batches are 16 x up to 18
    with (
        caplog.at_level(logging.WARNING, logger="localembed"),
        MemoryLimit(tiny_encoder, limit, OUT_OF_MEMORY[kind]) as memory,
    ):
        vectors = tiny_encoder.encode(OOM_TEXTS)
    assert np.abs(vectors - expected).max() <= 1e-5
    failed = [(rows, width) for rows, width, fails in memory.shapes if fails]
    passed = [(rows, width) for rows, width, fails in memory.shapes if not fails]
    assert failed and failed[0][0] == 16
    assert sum(rows for rows, _ in passed) == len(OOM_TEXTS)  # each text run once, at the end
    assert all(rows * width <= limit for rows, width in passed)
    assert caplog.text.count("out of memory on cpu for a batch of 16 texts") == 1


@pytest.mark.parametrize("kind", list(OUT_OF_MEMORY))
def test_out_of_memory_at_one_text_is_a_clear_error(
    kind: str, tiny_encoder: LocalEncoder, tiny_bert_dir: Path
) -> None:
    adapter = LocalEmbeddings(
        model=str(tiny_bert_dir), pooling="mean", batch_size=16, backend="torch"
    )
    with MemoryLimit(tiny_encoder, 0, OUT_OF_MEMORY[kind]) as memory:
        with pytest.raises(EncoderOutOfMemoryError) as caught:
            tiny_encoder.encode(OOM_TEXTS)
        with pytest.raises(MemoryError):  # nothing partial comes back through the adapter
            adapter.embed_documents(OOM_TEXTS)
    assert [rows for rows, _, _ in memory.shapes[:5]] == [16, 8, 4, 2, 1]
    error = caught.value
    assert isinstance(error, MemoryError)
    assert error.rows == 1 and error.device == "cpu"
    message = str(error)
    width = memory.shapes[4][1]
    assert f"a batch of 1 text(s) x {width} tokens" in message
    assert f"after splitting the batch of 16 texts x {memory.shapes[0][1]} tokens" in message
    assert "lower batch_size (now 16)" in message
    assert "max_batch_tokens (now not set)" in message
    assert isinstance(error.__cause__, type(OUT_OF_MEMORY[kind]()))
    # The encoder is not left broken (lock released, model intact).
    np.testing.assert_array_equal(
        tiny_encoder.encode(OOM_TEXTS[:3]), tiny_encoder.encode(OOM_TEXTS[:3])
    )


def test_other_errors_are_not_retried(tiny_encoder: LocalEncoder) -> None:
    def not_memory() -> BaseException:
        return RuntimeError("index out of range in self")

    with (
        MemoryLimit(tiny_encoder, 0, not_memory) as memory,
        pytest.raises(RuntimeError, match="index out of range in self"),
    ):
        tiny_encoder.encode(OOM_TEXTS)
    assert len(memory.shapes) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_out_of_memory_is_split(tiny_bert_dir: Path, caplog) -> None:
    # A real torch.OutOfMemoryError: this process may hold only 48 MiB more than the model;
    # 256 texts x 512 tokens need more, 32 x 512 fit (checked on an H100 with torch 2.11).
    device = torch.device("cuda", 0)
    options = {"model": str(tiny_bert_dir), "pooling": "mean", "dtype": "float32"}
    encoder = get_encoder(**options, device="cuda:0", batch_size=256)
    texts = [f"{i} " + "word " * 600 for i in range(256)]
    reference = get_encoder(**options, device="cpu").encode(texts[:4])
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    limit = torch.cuda.memory_reserved(device) + 48 * 2**20
    torch.cuda.set_per_process_memory_fraction(limit / total, device)
    try:
        with caplog.at_level(logging.WARNING, logger="localembed"):
            vectors = encoder.encode(texts)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    assert "out of memory on cuda:0 for a batch of 256 texts x 512 tokens" in caplog.text
    assert vectors.shape == (256, 32)
    np.testing.assert_allclose(vectors[:4], reference, atol=1e-5)


# -- 4. faults: interrupting `localembed embed` ---------------------------------------------

CHILD = """
import sys
from localembed.encoder import LocalEncoder
from localembed.cli import main

from localembed.backends.transformer import TransformerBackend

forward = TransformerBackend.forward
def announcing_forward(self, windows):
    if not getattr(LocalEncoder, "announced", False):
        LocalEncoder.announced = True
        print("EMBEDDING", file=sys.stderr, flush=True)
    return forward(self, windows)
TransformerBackend.forward = announcing_forward
sys.exit(main(sys.argv[1:]))
"""


def test_sigint_during_embed_leaves_no_half_written_output(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "big.txt"
    source.write_text("\n".join(f"line {i} of a long input" for i in range(20_000)))
    output = tmp_path / "vectors.npy"
    output.write_bytes(b"the previous run's output")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-c", CHILD, "embed", str(source), "-o", str(output)]
    command += ["--model", str(tiny_bert_dir), "--pooling", "mean", "--batch-size", "8"]
    # torch: ONNX Runtime embeds this tiny model's 20,000 lines before the signal lands.
    command += ["--backend", "torch"]
    # One chunk: the signal lands before any row is complete (resume is tested in test_cli).
    command += ["--overwrite", "--chunk-size", "100000"]
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert child.stderr is not None
    seen = []
    for line in child.stderr:
        seen.append(line)
        if line.startswith("EMBEDDING"):
            break
    else:
        pytest.fail(f"the child never started embedding: {''.join(seen)}")
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    rest = child.stderr.read()
    assert child.wait(timeout=60) == 130, rest
    assert "interrupted after 0 rows; no output was written" in rest
    assert output.read_bytes() == b"the previous run's output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.txt", output.name]


def test_interrupt_while_writing_jsonl_keeps_the_previous_output(
    tmp_path: Path, monkeypatch
) -> None:
    source = tmp_path / "texts.txt"
    source.write_text("one\ntwo\nthree\nfour\n")
    output = tmp_path / "out.jsonl"
    output.write_text("previous\n")
    real_dumps = json.dumps
    rows_written = []

    def interrupted_dumps(value: Any, *args: Any, **kwargs: Any) -> str:
        if isinstance(value, dict) and "embedding" in value:
            rows_written.append(1)
            if len(rows_written) == 3:
                raise KeyboardInterrupt
        return real_dumps(value, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", interrupted_dumps)
    assert main(["embed", str(source), "-o", str(output), "--overwrite"]) == 130
    assert len(rows_written) == 3  # interrupted in the middle of writing rows
    assert output.read_text() == "previous\n"
    # No complete chunk: nothing to resume, nothing left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "texts.txt"]


def test_interrupt_while_writing_npy_keeps_the_previous_output(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "texts.txt"
    source.write_text("one\ntwo\n")
    output = tmp_path / "out.npy"
    output.write_bytes(b"previous")
    calls = []

    def interrupted_header(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array_header_1_0", interrupted_header)
    assert main(["embed", str(source), "-o", str(output), "--overwrite"]) == 130
    assert calls
    assert output.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy", "texts.txt"]


# -- 6. resource hygiene ---------------------------------------------------------------------


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


RSS_GROWTH_LIMIT = 8 * 2**20
"""Most RSS growth allowed over 50 construct/use/collect cycles of both adapters (8 MiB; a
second copy of the default model would be ~90 MB, a leaked adapter per cycle shows below)."""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_building_and_dropping_adapters_does_not_leak() -> None:
    shared = get_encoder()

    def cycle() -> list[weakref.ref[Any]]:
        langchain = LocalEmbeddings()
        llamaindex = LocalEmbedding()
        assert langchain.encoder is shared and llamaindex.encoder is shared
        langchain.embed_documents(["a text"])
        llamaindex.get_text_embedding("a text")
        return [weakref.ref(langchain), weakref.ref(llamaindex)]

    for _ in range(5):  # warm up allocator pools and caches
        cycle()
    gc.collect()
    before = resident_bytes()
    references = [reference for _ in range(50) for reference in cycle()]
    gc.collect()
    growth = resident_bytes() - before
    assert all(reference() is None for reference in references)
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MiB over 50 cycles"


async def test_async_calls_reuse_one_thread_pool(tiny_bert_dir: Path) -> None:
    # backend="torch": a torch model to hook.
    langchain = LocalEmbeddings(model=str(tiny_bert_dir), pooling="mean", backend="torch")
    llamaindex = LocalEmbedding(model=str(tiny_bert_dir), pooling="mean", backend="torch")
    workers: set[str] = set()
    assert langchain.encoder.model is not None
    handle = langchain.encoder.model.register_forward_pre_hook(
        lambda *args: workers.add(threading.current_thread().name)
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: None)  # the loop's default pool exists
    before = threading.active_count()
    try:
        for _ in range(5):
            await asyncio.gather(
                *(langchain.aembed_documents([f"text {i}"]) for i in range(30)),
                *(langchain.aembed_query(f"query {i}") for i in range(10)),
                *(llamaindex.aget_text_embedding_batch([f"text {i}"]) for i in range(10)),
                *(llamaindex.aget_query_embedding(f"query {i}") for i in range(10)),
            )
    finally:
        handle.remove()
    default_pool_size = min(32, (os.cpu_count() or 1) + 4)
    assert threading.main_thread().name not in workers  # async work ran off the loop
    assert len(workers) <= default_pool_size, sorted(workers)
    assert threading.active_count() <= before + default_pool_size


def test_onnx_runtime_allocation_failures_count_as_out_of_memory() -> None:
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, RuntimeException

    from localembed.faults import is_out_of_memory

    message = "Failed to allocate memory for requested buffer of size 6291456000"
    assert is_out_of_memory(RuntimeException(message))
    assert is_out_of_memory(Fail(message))
    assert not is_out_of_memory(RuntimeException("Invalid input name: token_type_ids"))
