"""Micro-batching: concurrent calls merged by one worker per encoder (localembed.microbatch)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from localembed import get_encoder
from localembed.encoder import LocalEncoder
from localembed.microbatch import MicroBatcher, RoundStats

QUERIES = [f"question {i} about " + "cats and dogs " * (i % 9) for i in range(48)]


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir: Path) -> LocalEncoder:
    return get_encoder(
        model=str(tiny_bert_dir),
        backend="torch",  # the tests hook the torch model's forward
        pooling="mean",
        query_instruction="query: ",
        document_instruction="passage: ",
    )


@pytest.fixture
def rounds(encoder: LocalEncoder):
    seen: list[RoundStats] = []
    encoder.batcher.observe(seen.append)
    yield seen
    encoder.batcher.unobserve(seen.append)


async def test_concurrent_coroutines_get_their_rows_and_share_batches(
    encoder: LocalEncoder, rounds: list[RoundStats]
) -> None:
    queries = encoder.encode(QUERIES, "query: ")
    documents = encoder.encode(QUERIES, "passage: ")
    custom = encoder.encode(QUERIES, "X {text} Y")
    results = await asyncio.gather(
        *(encoder.aencode_queries([text]) for text in QUERIES),
        *(encoder.aencode_documents([text]) for text in QUERIES),
        *(encoder.batcher.aencode([text], "X {text} Y") for text in QUERIES),
        encoder.aencode_documents(QUERIES[:7]),
    )
    n = len(QUERIES)
    got = np.concatenate(results[: 3 * n])
    want = np.concatenate([queries, documents, custom])
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5  # query and document instructions in one batch
    assert np.abs(results[-1] - documents[:7]).max() <= 1e-5
    assert max(stats.callers for stats in rounds) > 1  # calls were merged
    assert sum(stats.windows for stats in rounds) == 3 * n + 7  # each text ran once
    assert len(rounds) < 3 * n + 1


def test_concurrent_threads_get_their_rows(encoder: LocalEncoder) -> None:
    expected = encoder.encode(QUERIES, "query: ")
    barrier = threading.Barrier(16)

    def work(i: int) -> np.ndarray:
        barrier.wait()
        return encoder.encode_queries([QUERIES[j] for j in range(i, len(QUERIES), 16)])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(work, range(16)))
    for i, vectors in enumerate(results):
        assert np.abs(vectors - expected[i::16]).max() <= 1e-5


async def test_a_bad_input_fails_only_its_caller(encoder: LocalEncoder) -> None:
    results = await asyncio.gather(
        encoder.aencode_queries(["fine"]),
        encoder.aencode_queries(["fine", 3]),  # type: ignore[list-item]
        encoder.aencode_documents("a bare string"),
        encoder.aencode_documents(["also fine", "too"]),
        return_exceptions=True,
    )
    assert isinstance(results[1], TypeError) and "item 1 is int" in str(results[1])
    assert isinstance(results[2], TypeError)
    assert isinstance(results[0], np.ndarray) and results[0].shape == (1, encoder.dimension)
    assert isinstance(results[3], np.ndarray) and results[3].shape == (2, encoder.dimension)
    with pytest.raises(TypeError, match="item 0 is NoneType"):
        encoder.encode_documents([None])  # type: ignore[list-item]
    assert encoder.encode_documents([]).shape == (0, encoder.dimension)


async def test_a_failing_round_is_rerun_caller_by_caller(encoder: LocalEncoder) -> None:
    # A forward pass that fails for the one caller whose text holds a marker token.
    assert encoder.model is not None
    marker = encoder.tokenizer.convert_tokens_to_ids("zebra")

    def refuse(module: object, args: object, kwargs: dict[str, object]) -> None:
        if bool((kwargs["input_ids"] == marker).any()):  # type: ignore[operator]
            msg = "refused the zebra"
            raise RuntimeError(msg)

    handle = encoder.model.register_forward_pre_hook(refuse, with_kwargs=True)
    try:
        results = await asyncio.gather(
            *(encoder.aencode_documents([f"text {i}"]) for i in range(10)),
            encoder.aencode_documents(["a zebra"]),
            return_exceptions=True,
        )
    finally:
        handle.remove()
    assert isinstance(results[-1], RuntimeError) and "zebra" in str(results[-1])
    expected = encoder.encode([f"text {i}" for i in range(10)], "passage: ")
    assert np.abs(np.concatenate(results[:-1]) - expected).max() <= 1e-5  # type: ignore[arg-type]


async def test_a_cancelled_coroutine_s_pending_texts_are_dropped(
    encoder: LocalEncoder, rounds: list[RoundStats]
) -> None:
    texts = [f"document {i} " * 20 for i in range(3000)]
    task = asyncio.create_task(encoder.aencode_documents(texts))
    while not rounds:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = len(rounds)
    await encoder.aencode_queries(["the worker is free again"])
    ran = sum(stats.windows for stats in rounds[:after])
    assert ran < len(texts) // 2, f"{ran} of {len(texts)} texts ran after cancelling"


async def test_a_small_call_does_not_wait_for_a_large_one(encoder: LocalEncoder) -> None:
    texts = [f"document {i} " * 20 for i in range(1500)]
    large = asyncio.create_task(encoder.aencode_documents(texts))
    await asyncio.sleep(0.01)
    small = await encoder.aencode_queries(["a quick question"])
    assert not large.done()  # the query finished while the large call still runs
    assert np.abs(small - encoder.encode(["a quick question"], "query: ")).max() <= 1e-5
    assert (await large).shape == (len(texts), encoder.dimension)


def test_chunked_long_texts_merge_with_short_ones(tiny_bert_dir: Path) -> None:
    chunking = get_encoder(
        model=str(tiny_bert_dir), pooling="mean", max_length=16, long_text="chunk"
    )
    texts = ["short one", "a much longer text " * 12, "another short", "x " * 40]
    expected = chunking.encode(texts)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda text: chunking.batcher.encode([text]), texts))
    assert np.abs(np.concatenate(results) - expected).max() <= 1e-5
    assert np.allclose(np.linalg.norm(np.concatenate(results), axis=1), 1.0, atol=1e-5)


def test_lone_call_starts_at_once_and_max_wait_holds_it(encoder: LocalEncoder) -> None:
    encoder.batcher.encode_call(["warm"])
    immediate = min(encoder.batcher.encode_call(["a lone query"]).queue_seconds for _ in range(5))
    assert immediate < 0.02
    batcher = MicroBatcher(encoder, max_wait=0.05)
    try:
        start = time.perf_counter()
        result = batcher.encode_call(["a lone query"])
        assert time.perf_counter() - start >= 0.05
        assert 0.045 <= result.queue_seconds < 1.0
        assert result.tokens == len(encoder.tokenize(["a lone query"]).ids[0])
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(["after close"])


def test_a_lone_thread_caller_runs_its_batch_itself(encoder: LocalEncoder) -> None:
    assert encoder.model is not None
    threads: list[str] = []
    handle = encoder.model.register_forward_pre_hook(
        lambda *args: threads.append(threading.current_thread().name)
    )
    try:
        for _ in range(20):  # the worker may still be finishing an earlier test's round
            threads.clear()
            vectors = encoder.encode_queries(["a lone query"])  # one batch: no hand-off
            if threads == [threading.current_thread().name]:
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"a lone call never ran in its caller's thread: {threads}")
        threads.clear()
        many = encoder.encode_queries(QUERIES * 2)  # several batches: the worker runs them
    finally:
        handle.remove()
    # The worker runs them: in its own thread, or in the row workers it splits a batch over
    # (torch on the CPU with 2+ threads), never in the caller's.
    assert threads and all(
        name == "localembed-microbatch" or name.startswith("localembed-rows") for name in threads
    ), threads
    assert np.abs(vectors - encoder.encode(["a lone query"], "query: ")).max() <= 1e-5
    assert many.shape == (2 * len(QUERIES), encoder.dimension)


async def test_non_finite_rows_are_an_error_on_every_path(nan_bert_dir: Path) -> None:
    """ "cat" embeds to NaN: every entry point raises NonFiniteEmbeddingError naming rows 1, 2."""
    from localembed import NonFiniteEmbeddingError

    nan_encoder = get_encoder(model=str(nan_bert_dir), pooling="mean")
    texts = ["dog", "a cat", "cat", "bird"]
    calls = {
        "encode": lambda: nan_encoder.encode(texts),
        "encode_documents": lambda: nan_encoder.encode_documents(texts),
        "batcher.encode": lambda: nan_encoder.batcher.encode(texts),
        "encode_m3": lambda: nan_encoder.encode_m3(texts),
    }
    for name, call in calls.items():
        with pytest.raises(NonFiniteEmbeddingError, match=r"rows 1, 2\)") as raised:
            call()
        assert raised.value.rows == [1, 2], name
    for coroutine in (nan_encoder.batcher.aencode(texts), nan_encoder.aencode_queries(texts)):
        with pytest.raises(NonFiniteEmbeddingError, match=r"rows 1, 2\)"):
            await coroutine
    # The batcher's worker survives: a later finite call gets its rows.
    assert np.isfinite(nan_encoder.batcher.encode(["dog", "bird"])).all()


def test_a_call_is_released_when_its_last_window_has_run(encoder: LocalEncoder) -> None:
    """Within one merged round, a call whose windows ran in an early batch gets its rows then,
    not when the whole round ends (the rows are finished in the worker, off any event loop);
    each batch's stats are reported before the calls it completes are released."""
    from localembed.microbatch import BatchSpec

    spec = encoder.batch_spec
    options = dataclasses.replace(spec.options, batch_size=4, max_batch_tokens=None)
    batcher = MicroBatcher(BatchSpec(spec.backend, options, spec.finish), max_wait=0.2)
    order: list[str] = []
    batcher.observe(lambda stats: order.append(f"batch of {stats.windows}"))
    try:
        # Long texts run first (batches are longest first): the short call's 4 windows share
        # the round's last batch, the long call's 4 windows fill its first.
        long_call = batcher.submit(["cats and dogs " * 20] * 4, tokenize_here=False)
        short_call = batcher.submit(["a cat"] * 4, tokenize_here=False)
        long_call.add_done_callback(lambda _: order.append("long"))
        short_call.add_done_callback(lambda _: order.append("short"))
        long_rows, short_rows = long_call.result().vectors, short_call.result().vectors
    finally:
        batcher.close()
    assert order == ["batch of 4", "long", "batch of 4", "short"], order
    assert np.abs(long_rows - encoder.encode(["cats and dogs " * 20] * 4)).max() <= 1e-5
    assert np.abs(short_rows - encoder.encode(["a cat"] * 4)).max() <= 1e-5


async def test_a_merged_run_serves_at_most_callers_per_pass(
    encoder: LocalEncoder, rounds: list[RoundStats]
) -> None:
    """48 one-text callers at once run in merged runs of at most CALLERS_PER_PASS callers."""
    from localembed.microbatch import CALLERS_PER_PASS

    texts = [f"caller {i} asks about {'cats ' * (i % 9)}" for i in range(48)]
    expected = encoder.encode(texts, "query: ")
    gate = asyncio.Event()

    async def one(text: str) -> np.ndarray:
        await gate.wait()
        return await encoder.aencode_queries([text])

    tasks = [asyncio.ensure_future(one(text)) for text in texts]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert np.abs(np.concatenate(results) - expected).max() <= 1e-5
    assert sum(stats.windows for stats in rounds) == len(texts)
    assert max(stats.callers for stats in rounds) == CALLERS_PER_PASS  # merged, and capped


def test_calls_are_served_first_come_first_served_in_passes(encoder: LocalEncoder) -> None:
    """48 waiting calls run in passes of CALLERS_PER_PASS in the order they came, whatever
    their lengths (the longest came last); a call with more batches goes back to the end of
    the line after each, behind the calls that came meanwhile."""
    from localembed.microbatch import CALLERS_PER_PASS, BatchSpec

    spec = encoder.batch_spec
    options = dataclasses.replace(spec.options, batch_size=4, max_batch_tokens=None)
    batcher = MicroBatcher(BatchSpec(spec.backend, options, spec.finish), max_wait=0.3)
    texts = [f"caller {i} asks about {'cats ' * i}" for i in range(48)]
    finished: list[int] = []
    try:
        large = batcher.submit(["a long document"] * 8, tokenize_here=False)  # 2 batches of 4
        large.add_done_callback(lambda _: finished.append(-1))
        futures = [batcher.submit([text], tokenize_here=False) for text in texts]
        for index, future in enumerate(futures):
            future.add_done_callback(lambda _, index=index: finished.append(index))
        got = np.concatenate([future.result().vectors for future in futures])
        large_rows = large.result().vectors
    finally:
        batcher.close()
    assert np.abs(got - encoder.encode(texts)).max() <= 1e-5
    assert np.abs(large_rows - encoder.encode(["a long document"] * 8)).max() <= 1e-5
    # Pass 1: the large call's first batch and callers 0-14; pass 2: callers 15-30; pass 3:
    # callers 31-46; pass 4: caller 47, then the large call's second batch.
    first = CALLERS_PER_PASS - 1
    assert sorted(finished[:first]) == list(range(first)), finished
    assert sorted(finished[first : first + CALLERS_PER_PASS]) == list(
        range(first, first + CALLERS_PER_PASS)
    ), finished
    assert finished[-2:] == [47, -1], finished


def test_an_error_in_one_call_s_plan_fails_that_call_alone(encoder: LocalEncoder) -> None:
    """Anything a call's start raises (here the backend's plan) fails that call; the worker
    lives on and serves the others (it used to die, leaving every later call waiting)."""
    from localembed.microbatch import BatchSpec

    spec = encoder.batch_spec
    real = spec.backend

    class Backend:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def plan(self, lengths: list[int], options: object) -> object:
            if max(lengths) > 40:
                message = "no plan for this call"
                raise MemoryError(message)
            return real.plan(lengths, options)

    batcher = MicroBatcher(BatchSpec(Backend(), spec.options, spec.finish))  # type: ignore[arg-type]
    try:
        bad = batcher.submit(["word " * 60], tokenize_here=False)
        good = batcher.submit(["a cat"], tokenize_here=False)
        with pytest.raises(MemoryError, match="no plan"):
            bad.result(timeout=60)
        assert np.abs(good.result(timeout=60).vectors - encoder.encode(["a cat"])).max() <= 1e-5
        assert np.abs(batcher.encode(["later"]) - encoder.encode(["later"])).max() <= 1e-5
    finally:
        batcher.close()
