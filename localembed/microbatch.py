"""Micro-batching: one worker per loaded model merges concurrent calls into shared batches.

Many small concurrent calls (64 coroutines each embedding one query, an HTTP server's
requests) would otherwise each run their own forward pass, one after the other under the
model's lock. :class:`MicroBatcher` gives every call a future and runs one worker thread
that, pass after pass, takes the next windows of the oldest waiting calls, sorts them by length
into token-budget batches (the backend's plan, with its out-of-memory split) and writes each
row back to the call it belongs to. It runs on a backend with the ``"windows"`` capability
(:class:`~localembed.backends.base.WindowBackend`) and gets everything else as data
(:class:`BatchSpec`: the backend, the call options, how rows are finished).

Rules it keeps:

- Each caller gets exactly its rows, in its order; results do not depend on the batch
  neighbours (rows are padded on the right and pooled under the attention mask): within
  1e-5 of a serial ``encode`` in float32.
- Inputs are checked (:func:`~localembed.texts.check_texts`) once and instructions applied
  per caller before anything is merged, so one caller's bad input and its error reach that
  caller alone; a merged pass that fails is re-run caller by caller, so that a failure
  (out of memory on one huge text) reaches only the caller that caused it.
- A call is finished (windows combined, non-finite check, ``truncate_dim`` cut, precision)
  once, in the worker thread, as soon as its last window has run: results are released
  batch by batch, not all at the end of a pass, and an event loop awaiting them only
  receives finished rows.
- A call whose future is cancelled (a cancelled coroutine) is dropped before its next
  window runs.
- A lone caller does not wait: a thread caller whose texts fit one batch, finding the
  model idle, runs that batch in its own thread (no hand-off to the worker and back); a
  coroutine's call starts at once on an idle worker; calls that arrive while a batch runs
  are merged into the next passes. ``max_wait`` (seconds, default 0) optionally holds the
  first call of an idle worker a little longer to gather more; it is a trade of lone-call
  latency for batch size.
- Calls are served first come, first served, in passes: each pass takes the next batch's
  worth of windows of the oldest :data:`CALLERS_PER_PASS` waiting calls and merges them; a
  call with more windows goes back to the end of the line. So a large call (10 000
  documents) shares the model with the small calls that arrive during it instead of holding
  them until it is done, answers leave pass by pass while the next pass computes, and a new
  call waits only for the calls that came before it.

:meth:`MicroBatcher.close` stops the worker (an encoder closes its batcher when it is
released, for instance by :func:`~localembed.encoder.clear_encoder_cache`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from localembed.errors import InputError, RuntimeFault
from localembed.texts import check_texts, instructed
from localembed.windows import combine_windows

if TYPE_CHECKING:
    from localembed.backends.base import CallOptions, WindowBackend
    from localembed.finish import Finish
    from localembed.precision import Precision
    from localembed.windows import Tokenized

__all__ = ["BatchSpec", "Encoded", "MicroBatcher", "RoundStats", "RoundStatsObserver"]


CALLERS_PER_PASS = 16
"""Most callers one merged pass serves (its rows still batched by the model's plan).

Answers are released pass by pass. 64 callers of one text in one pass were answered all at
once, so their clients' work (reading 64 answers, sending 64 requests) and the model's never
overlapped; in passes of 16 the next pass computes while the last one's clients read.
Measured with ``localembed serve`` and one httpx client process at 64 clients: 102-118
requests/s against 61-92 before, p99 0.9-1.2 s against 3.2-4.4 s (docs/server.md, "Against
infinity").
"""


class BatcherClosedError(RuntimeFault, RuntimeError):
    """The micro-batcher was closed; later calls are refused."""


@dataclass(frozen=True)
class BatchSpec:
    """What a micro-batcher runs: a window backend, the call options, and the finish."""

    backend: WindowBackend
    """The loaded model (capability ``"windows"``)."""
    options: CallOptions
    """Batch size, token budget, long-text mode, pooling, normalization, max_length."""
    finish: Finish
    """How pooled rows become the output (non-finite check, ``truncate_dim``, precision)."""
    cache: CallCache | None = None
    """The embedding cache: hits come from it, misses from the model (None: no cache)."""


class CallCache(Protocol):
    """An embedding cache in front of the batcher (:class:`localembed.cache.EmbeddingCache`)."""

    def submit(
        self,
        texts: list[str],
        instruction: str | None,
        run: Callable[[list[str]], concurrent.futures.Future[Encoded]],
        finish: Callable[[np.ndarray], np.ndarray],
    ) -> concurrent.futures.Future[Encoded]:
        """Hits from the cache, ``run(missing)`` for the rest, then ``finish`` on all rows."""
        ...


class Batchable(Protocol):
    """Anything that describes its micro-batched calls (an encoder)."""

    @property
    def batch_spec(self) -> BatchSpec:
        """The backend, options and finish of its calls."""
        ...


@dataclass(frozen=True)
class Encoded:
    """One caller's result, with what the server reports about it."""

    vectors: np.ndarray
    """(texts, dimension) finished rows, row i for text i."""
    tokens: int
    """Tokens of this caller's texts run through the model (instruction, special tokens too)."""
    truncated: int
    """This caller's texts that were cut to the model's max_length."""
    queue_seconds: float
    """From submission to the start of the first pass that ran one of its windows."""
    text_tokens: tuple[int, ...] = ()
    """Tokens of each text (the embedding cache stores them with its vector)."""
    truncated_rows: tuple[int, ...] = ()
    """Indices of the texts cut to max_length."""


@dataclass(frozen=True)
class RoundStats:
    """One forward batch of a worker pass: what ran in it (for metrics).

    Reported before the calls that this batch completes get their rows.
    """

    callers: int
    """Calls that had windows in this batch."""
    windows: int
    """Token windows (rows) run in this batch."""
    tokens: int
    """Real (unpadded) tokens run in this batch."""
    seconds: float
    """Wall time of the batch (forward pass and heads)."""


@dataclass(frozen=True)
class _Output:
    precision: Precision
    ranges: np.ndarray | None


@dataclass(eq=False)
class _Call:
    items: list[str]
    """Checked, instructed texts."""
    tokenized: Tokenized | None
    future: concurrent.futures.Future[Encoded]
    submitted: float
    output: _Output
    rows: np.ndarray | None = None
    done: np.ndarray | None = None
    remaining: int = 0
    groups: deque[list[int]] = field(default_factory=deque)
    started: float | None = None


class MicroBatcher:
    """Merges concurrent :meth:`encode` / :meth:`aencode` calls on one loaded model.

    Use ``encoder.batcher`` (one per encoder) rather than this constructor.

    Args:
        source: an encoder (anything with a ``batch_spec``) or a :class:`BatchSpec`.
        max_wait: seconds an idle worker holds a first call to gather more (0: none).

    Raises:
        InputError: the backend cannot run token windows (``backend="flagembedding"``).

    Example:
        >>> from localembed import get_encoder
        >>> encoder = get_encoder()
        >>> vectors = encoder.batcher.encode(["a cat", "a dog"])
        >>> vectors.shape
        (2, 384)

    """

    def __init__(self, source: Batchable | BatchSpec, *, max_wait: float = 0.0) -> None:
        spec = source if isinstance(source, BatchSpec) else source.batch_spec
        if "windows" not in spec.backend.capabilities:
            from localembed.backends.base import unavailable_reason

            reason = unavailable_reason(spec.backend, "windows")
            msg = f"micro-batching is not available for this model: {reason}"
            raise InputError(msg)
        self.spec = spec
        """The backend, options and finish this batcher runs with."""
        self.max_wait = max_wait
        """Seconds an idle worker holds a first call to gather more (0: start at once)."""
        self._queue: deque[_Call] = deque()
        self._condition = threading.Condition()
        self._closed = False
        self._working = False  # the worker has calls in hand
        self._inline = False  # a lone caller runs its own call in its thread
        self._thread: threading.Thread | None = None
        self._observers: list[RoundStatsObserver] = []

    # -- callers -----------------------------------------------------------------------

    def submit(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        tokenize_here: bool = True,
        precision: Precision = "float32",
        ranges: np.ndarray | None = None,
    ) -> concurrent.futures.Future[Encoded]:
        """Queue ``texts`` and return the future of their :class:`Encoded` result.

        The texts are checked here (a bad input raises here). With ``tokenize_here``
        (threads) they are also tokenized in the calling thread, in parallel with other
        callers; otherwise (coroutines, which must not block their event loop) the worker
        tokenizes them and a tokenizer error is set on the future. The rows come back
        finished: cut to ``truncate_dim`` and in ``precision``.

        Raises:
            InputTypeError: ``texts`` is not a list of str (the message names the bad index).
            RuntimeFault: the batcher is closed.
        """
        spec = self.spec
        if spec.cache is not None:
            checked = check_texts(texts)
            if checked:  # hits from the cache; the misses' float32 rows from here
                return spec.cache.submit(
                    checked,
                    instruction,
                    lambda missing: self._submit(
                        missing, instruction, tokenize_here, _Output("float32", None)
                    ),
                    lambda vectors: spec.finish(vectors, precision, ranges),
                )
        return self._submit(texts, instruction, tokenize_here, _Output(precision, ranges))

    def _submit(
        self,
        texts: Sequence[str],
        instruction: str | None,
        tokenize_here: bool,
        output: _Output,
    ) -> concurrent.futures.Future[Encoded]:
        spec = self.spec
        precision, ranges = output.precision, output.ranges
        items = instructed(texts, instruction)
        future: concurrent.futures.Future[Encoded] = concurrent.futures.Future()
        if not items:
            empty = np.empty((0, spec.backend.dimension), np.float32)
            future.set_result(Encoded(spec.finish(empty, precision, ranges), 0, 0, 0.0))
            return future
        tokenized = spec.backend.tokenize(items, spec.options) if tokenize_here else None
        call = _Call(items, tokenized, future, time.perf_counter(), output)
        with self._condition:
            if self._closed:
                msg = "the micro-batcher is closed"
                raise BatcherClosedError(msg)
            # A lone thread caller whose texts fit one batch runs them itself: no hand-off
            # to the worker and back (two thread switches, slow on a busy machine). Calls
            # arriving meanwhile queue up for the worker, which starts once it is done.
            inline = (
                tokenized is not None
                and not (self._working or self._inline or self._queue)
                and self.max_wait == 0
                and len(spec.backend.plan([len(w) for w in tokenized.ids], spec.options)) == 1
            )
            if inline:
                self._inline = True
            else:
                self._queue.append(call)
                self._ensure_worker()
                self._condition.notify()
        if inline:
            try:
                self._pass([call])
            finally:
                with self._condition:
                    self._inline = False
                    if self._queue:
                        self._condition.notify()
        return future

    def encode_call(self, texts: Sequence[str], instruction: str | None = None) -> Encoded:
        """Embed ``texts`` merged with concurrent callers; blocks until its rows are ready."""
        return self.submit(texts, instruction).result()

    def encode(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """Like :meth:`LocalEncoder.encode` (row i for text i), merged with concurrent callers."""
        return self.encode_call(texts, instruction).vectors

    async def aencode_call(self, texts: Sequence[str], instruction: str | None = None) -> Encoded:
        """Async :meth:`encode_call`: the event loop only checks the inputs and waits.

        Cancelling the awaiting task drops the texts that have not run yet.
        """
        await take_turn()
        if self.spec.cache is None:
            future = self.submit(texts, instruction, tokenize_here=False)
        else:  # the cache's reads and writes stay off the event loop
            submitting = asyncio.ensure_future(
                asyncio.to_thread(self.submit, texts, instruction, tokenize_here=False)
            )
            try:
                future = await asyncio.shield(submitting)
            except asyncio.CancelledError:  # the call submitted meanwhile is dropped too
                submitting.add_done_callback(_cancel_submitted)
                raise
        return await asyncio.wrap_future(future)

    async def aencode(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """Async :meth:`encode`."""
        return (await self.aencode_call(texts, instruction)).vectors

    @property
    def pending(self) -> int:
        """Calls queued and not yet taken by the worker."""
        return len(self._queue)

    @property
    def busy(self) -> bool:
        """Whether a call is queued, held by the worker or running in a caller's thread."""
        return bool(self._working or self._inline or self._queue)

    def observe(self, observer: RoundStatsObserver) -> None:
        """Call ``observer(stats)`` after every forward batch (for metrics; keep it quick)."""
        self._observers.append(observer)

    def unobserve(self, observer: RoundStatsObserver) -> None:
        """Stop calling ``observer``."""
        if observer in self._observers:
            self._observers.remove(observer)

    def close(self) -> None:
        """Stop the worker after the calls already queued; later submits raise."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    # -- worker ------------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._work, name="localembed-microbatch", daemon=True
            )
            self._thread.start()

    def _take(self, waiting: list[_Call], again: list[_Call]) -> bool:
        """Line up the calls to serve in ``waiting``; False when the worker should stop.

        ``waiting`` holds the calls not yet served in this turn of the line; the queue's new
        calls join behind them and ``again`` (served calls with more windows) behind those.
        """
        with self._condition:
            while self._inline or not (self._queue or waiting or again):
                if not (self._queue or waiting or again):
                    self._working = False
                    if self._closed:
                        return False
                self._condition.wait()
            self._working = True
            if not (waiting or again) and self.max_wait > 0:
                deadline = self._queue[0].submitted + self.max_wait
                while not self._closed and (remaining := deadline - time.perf_counter()) > 0:
                    self._condition.wait(remaining)
            waiting.extend(self._queue)
            self._queue.clear()
        waiting.extend(again)
        return True

    def _work(self) -> None:
        waiting: list[_Call] = []
        again: list[_Call] = []
        while self._take(waiting, again):
            try:
                waiting, again = self._pass(waiting)
            except Exception as error:  # a bug: fail the calls held, keep serving
                for call in waiting:
                    _fail(call, error)
                waiting, again = [], []

    def _start(self, call: _Call) -> bool:
        """Tokenize a new call if needed and give it its row buffer; False if it failed."""
        spec = self.spec
        try:
            if call.tokenized is None:
                call.tokenized = spec.backend.tokenize(call.items, spec.options)
            ids = call.tokenized.ids
            call.rows = np.empty((len(ids), spec.backend.dimension), dtype=np.float32)
            call.done = np.zeros(len(ids), dtype=bool)
            call.remaining = len(ids)
            # The call's own batches, longest first, as a lone encode() runs them.
            call.groups = deque(spec.backend.plan([len(w) for w in ids], spec.options))
        except Exception as error:  # this call's error (a tokenizer's, out of memory), alone
            _fail(call, error)
            return False
        return True

    def _pass(self, waiting: list[_Call]) -> tuple[list[_Call], list[_Call]]:
        """Run the next batch of the oldest :data:`CALLERS_PER_PASS` waiting calls.

        Returns the calls still waiting (not served by this pass, in their order) and the
        served calls that have more windows.
        """
        calls: list[_Call] = []
        index = 0
        while index < len(waiting) and len(calls) < CALLERS_PER_PASS:
            call = waiting[index]
            index += 1
            if call.future.cancelled():
                continue
            if call.rows is None and not self._start(call):
                continue
            calls.append(call)
        if not calls:
            return waiting[index:], []
        now = time.perf_counter()
        # One batch's worth per call: its next batch.
        taken = [call.groups.popleft() for call in calls]
        for call in calls:
            if call.started is None:
                call.started = now
        self._run_group(calls, taken)
        return waiting[index:], [call for call in calls if call.groups and not call.future.done()]

    def _run_group(self, calls: list[_Call], taken: list[list[int]]) -> None:
        try:
            self._run(calls, taken)
        except Exception as error:
            if len(calls) == 1:
                _fail(calls[0], error)
                return
            # Re-run caller by caller, so that the error reaches only the caller it belongs to.
            for call, windows in zip(calls, taken, strict=True):
                if call.future.done():
                    continue
                try:
                    self._run([call], [windows])
                except Exception as alone:
                    _fail(call, alone)

    def _run(self, calls: list[_Call], taken: list[list[int]]) -> None:
        spec = self.spec
        # The merged windows of this pass, and where each row goes back to.
        ids: list[list[int]] = []
        targets: list[tuple[_Call, int]] = []
        for call, windows in zip(calls, taken, strict=True):
            assert call.tokenized is not None
            for window in windows:
                ids.append(call.tokenized.ids[window])
                targets.append((call, window))
        # Windows of a chunked text are normalized once combined, not here.
        plain = [not _chunked(call) for call, _ in targets]
        started = time.perf_counter()
        for indices, rows in spec.backend.dense_batches(ids, plain, spec.options):
            stats = RoundStats(
                callers=len({id(targets[index][0]) for index in indices}),
                windows=len(indices),
                tokens=sum(len(ids[index]) for index in indices),
                seconds=time.perf_counter() - started,
            )
            for observer in list(self._observers):
                observer(stats)
            finished: list[_Call] = []
            for row, index in enumerate(indices):
                call, window = targets[index]
                assert call.rows is not None and call.done is not None
                call.rows[window] = rows[row]
                if not call.done[window]:
                    call.done[window] = True
                    call.remaining -= 1
                    if call.remaining == 0:
                        finished.append(call)
            for call in finished:  # released as soon as its last window ran
                self._finish(call)
            started = time.perf_counter()

    def _finish(self, call: _Call) -> None:
        """Combine, check, cut and quantize a call's rows, and hand them to its caller."""
        tokenized, rows = call.tokenized, call.rows
        assert tokenized is not None and rows is not None
        if call.future.done():  # cancelled meanwhile
            return
        try:
            vectors = rows
            if tokenized.chunked:
                vectors = combine_windows(rows, tokenized, normalize=self.spec.options.normalize)
            # NonFiniteEmbeddingError names this call's rows.
            finished = self.spec.finish(vectors, call.output.precision, call.output.ranges)
        except Exception as error:
            _fail(call, error)
            return
        result = Encoded(
            finished,
            tokens=sum(len(window) for window in tokenized.ids),
            truncated=tokenized.truncated,
            queue_seconds=(call.started or call.submitted) - call.submitted,
            text_tokens=tuple(tokenized.text_tokens()),
            truncated_rows=tokenized.truncated_rows,
        )
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
            call.future.set_result(result)


RoundStatsObserver = Callable[[RoundStats], None]
"""A function called with each forward batch's :class:`RoundStats`."""


class _Turns:
    """Waiting coroutines of one event loop, let through one per loop iteration."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.scheduled = False

    def release(self) -> None:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():  # not cancelled
                waiter.set_result(None)
                break
        self.scheduled = bool(self.waiting)
        if self.scheduled:
            self.loop.call_soon(self.release)


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turns] = weakref.WeakKeyDictionary()


async def take_turn() -> None:
    """Wait until the calls started before this one on this event loop had their turn.

    Many coroutines started together (``asyncio.gather`` of 250 calls, LlamaIndex's split
    of a batch) would otherwise all run their checks and submissions in one loop iteration,
    and the loop would serve nothing else meanwhile; here each gets its own iteration.
    """
    loop = asyncio.get_running_loop()
    turns = _turns.get(loop)
    if turns is None:
        turns = _turns[loop] = _Turns(loop)
    waiter: asyncio.Future[None] = loop.create_future()
    turns.waiting.append(waiter)
    if not turns.scheduled:
        turns.scheduled = True
        loop.call_soon(turns.release)
    await waiter


def _cancel_submitted(submitting: asyncio.Future[concurrent.futures.Future[Encoded]]) -> None:
    if not submitting.cancelled() and submitting.exception() is None:
        submitting.result().cancel()


def _chunked(call: _Call) -> bool:
    return call.tokenized is not None and call.tokenized.chunked


def _fail(call: _Call, error: BaseException) -> None:
    if not call.future.done():
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
            call.future.set_exception(error)
