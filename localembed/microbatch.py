"""Micro-batching: one worker per loaded encoder merges concurrent calls into shared batches.

Many small concurrent calls (64 coroutines each embedding one query, an HTTP server's
requests) would otherwise each run their own forward pass, one after the other under the
encoder's lock. :class:`MicroBatcher` gives every call a future and runs one worker thread
that, round after round, takes the next windows of every pending call, sorts them by length
into token-budget batches (the encoder's own :meth:`~localembed.LocalEncoder.run_batches`,
with its out-of-memory split) and writes each row back to the call it belongs to.

Rules it keeps:

- Each caller gets exactly its rows, in its order; results do not depend on the batch
  neighbours (rows are padded on the right and pooled under the attention mask).
- Inputs are checked (:func:`~localembed.encoder.check_texts`) and instructions applied per
  caller before anything is merged, so one caller's bad input and its error reach that
  caller alone; a merged round that fails is re-run caller by caller, so that a failure
  (out of memory on one huge text) reaches only the caller that caused it.
- A call whose future is cancelled (a cancelled coroutine) is dropped before its next
  window runs.
- A lone caller does not wait: a thread caller whose texts fit one batch, finding the
  model idle, runs that batch in its own thread (no hand-off to the worker and back); a
  coroutine's call starts at once on an idle worker; calls that arrive while a batch runs
  are merged into the next round. ``max_wait`` (seconds,
  default 0) optionally holds the first call of an idle worker a little longer to gather
  more; it is a trade of lone-call latency for batch size.
- Each round takes at most one batch's worth of windows from each call, so a large call
  (10 000 documents) shares the model with the small calls that arrive during it instead
  of holding them until it is done.

The worker holds the encoder by a weak reference: dropping the encoder (for instance
:func:`~localembed.encoder.clear_encoder_cache`) stops it.
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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from localembed.batching import ForwardBatch
    from localembed.encoder import LocalEncoder
    from localembed.windows import Tokenized


@dataclass(frozen=True)
class Encoded:
    """One caller's result, with what the server reports about it."""

    vectors: np.ndarray
    """(texts, dimension) float32, row i for text i."""
    tokens: int
    """Tokens of this caller's texts run through the model (instruction, special tokens too)."""
    truncated: int
    """This caller's texts that were cut to the model's max_length."""
    queue_seconds: float
    """From submission to the start of the first round that ran one of its windows."""
    text_tokens: tuple[int, ...] = ()
    """Tokens of each text (the embedding cache stores them with its vector)."""
    truncated_rows: tuple[int, ...] = ()
    """Indices of the texts cut to max_length."""


@dataclass(frozen=True)
class RoundStats:
    """One worker round: what ran in it (for metrics)."""

    callers: int
    """Calls that had windows in this round."""
    windows: int
    """Token windows (rows) run in this round."""
    tokens: int
    """Real (unpadded) tokens run in this round."""
    seconds: float
    """Wall time of the round."""


@dataclass(eq=False)
class _Call:
    texts: list[str] | None
    instruction: str | None
    tokenized: Tokenized | None
    future: concurrent.futures.Future[Encoded]
    submitted: float
    rows: np.ndarray | None = None
    groups: deque[list[int]] = field(default_factory=deque)
    started: float | None = None


class MicroBatcher:
    """Merges concurrent :meth:`encode` / :meth:`aencode` calls on one encoder.

    Use ``encoder.batcher`` (one per loaded encoder) rather than this constructor.

    Example:
        >>> from localembed import get_encoder
        >>> encoder = get_encoder()
        >>> vectors = encoder.batcher.encode(["a cat", "a dog"])
        >>> vectors.shape
        (2, 384)

    """

    def __init__(self, encoder: LocalEncoder, *, max_wait: float = 0.0) -> None:
        if encoder.runtime is None:
            msg = "micro-batching needs a forward pass: backend='torch' or 'onnx'"
            raise ValueError(msg)
        self._encoder = weakref.ref(encoder)
        self.max_wait = max_wait
        """Seconds an idle worker holds a first call to gather more (0: start at once)."""
        self._queue: deque[_Call] = deque()
        self._condition = threading.Condition()
        self._closed = False
        self._working = False  # the worker has calls in hand
        self._inline = False  # a lone caller runs its own call in its thread
        self._thread: threading.Thread | None = None
        self._observers: list[RoundStatsObserver] = []
        weakref.finalize(encoder, self.close)

    # -- callers -----------------------------------------------------------------------

    def submit(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        tokenize_here: bool = True,
    ) -> concurrent.futures.Future[Encoded]:
        """Queue ``texts`` and return the future of their :class:`Encoded` result.

        With ``tokenize_here`` (threads) the texts are checked and tokenized in the calling
        thread, in parallel with other callers, and a bad input raises here; otherwise
        (coroutines, which must not block their event loop) they are checked here and
        tokenized by the worker, and a tokenizer error is set on the future.

        Raises:
            TypeError: ``texts`` is not a list of str (the message names the bad index).
            RuntimeError: the batcher is closed.
        """
        from localembed.texts import check_texts

        encoder = self._require_encoder()
        items = check_texts(texts)
        if encoder.cache is not None and items:  # hits come from the cache, misses from here
            return encoder.cache.submit(
                items,
                instruction,
                lambda missing: self._submit(missing, instruction, tokenize_here),
            )
        return self._submit(items, instruction, tokenize_here)

    def _submit(
        self, items: list[str], instruction: str | None, tokenize_here: bool
    ) -> concurrent.futures.Future[Encoded]:
        encoder = self._require_encoder()
        tokenized = encoder.tokenize(items, instruction) if tokenize_here else None
        future: concurrent.futures.Future[Encoded] = concurrent.futures.Future()
        if not items:
            future.set_result(
                Encoded(
                    np.empty((0, encoder.backend.dimension), np.float32), 0, 0, queue_seconds=0.0
                )
            )
            return future
        call = _Call(items, instruction, tokenized, future, time.perf_counter())
        with self._condition:
            if self._closed:
                msg = "the micro-batcher is closed"
                raise RuntimeError(msg)
            # A lone thread caller whose texts fit one batch runs them itself: no hand-off
            # to the worker and back (two thread switches, slow on a busy machine). Calls
            # arriving meanwhile queue up for the worker, which starts once it is done.
            inline = (
                tokenized is not None
                and not (self._working or self._inline or self._queue)
                and self.max_wait == 0
                and len(encoder.batches(tokenized.ids)) == 1
            )
            if inline:
                self._inline = True
            else:
                self._queue.append(call)
                self._ensure_worker()
                self._condition.notify()
        if inline:
            try:
                self._round(encoder, [call])
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
        if self._require_encoder().cache is None:
            future = self.submit(texts, instruction, tokenize_here=False)
        else:  # the cache's reads and writes stay off the event loop
            future = await asyncio.to_thread(self.submit, texts, instruction, tokenize_here=False)
        return await asyncio.wrap_future(future)

    async def aencode(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """Async :meth:`encode`."""
        return (await self.aencode_call(texts, instruction)).vectors

    @property
    def pending(self) -> int:
        """Calls queued and not yet taken by the worker."""
        return len(self._queue)

    def observe(self, observer: RoundStatsObserver) -> None:
        """Call ``observer(stats)`` after every round (for metrics; keep it quick)."""
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

    def _require_encoder(self) -> LocalEncoder:
        encoder = self._encoder()
        if encoder is None:
            msg = "the encoder behind this micro-batcher was released"
            raise RuntimeError(msg)
        return encoder

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._work, name="localembed-microbatch", daemon=True
            )
            self._thread.start()

    def _take(self, active: list[_Call]) -> bool:
        """Move queued calls into ``active``; False when the worker should stop."""
        with self._condition:
            while self._inline or not (self._queue or active):
                if not (self._queue or active):
                    self._working = False
                    if self._closed:
                        return False
                self._condition.wait()
            self._working = True
            if not active and self.max_wait > 0:
                deadline = self._queue[0].submitted + self.max_wait
                while not self._closed and (remaining := deadline - time.perf_counter()) > 0:
                    self._condition.wait(remaining)
            active.extend(self._queue)
            self._queue.clear()
        return True

    def _work(self) -> None:
        active: list[_Call] = []
        while self._take(active):
            encoder = self._encoder()
            if encoder is None:
                error = RuntimeError("the encoder behind this micro-batcher was released")
                for call in active:
                    _fail(call, error)
                return
            active = self._round(encoder, active)
            del encoder

    def _start(self, encoder: LocalEncoder, call: _Call) -> bool:
        """Tokenize a new call if needed and give it its row buffer; False if it failed."""
        if call.tokenized is None:
            try:
                call.tokenized = encoder.tokenize(call.texts or [], call.instruction)
            except Exception as error:
                _fail(call, error)
                return False
        tokenized = call.tokenized
        call.rows = np.empty((len(tokenized.ids), encoder.backend.dimension), dtype=np.float32)
        # The call's own batches, longest first, as a lone encode() runs them.
        call.groups = deque(encoder.batches(tokenized.ids))
        return True

    def _round(self, encoder: LocalEncoder, active: list[_Call]) -> list[_Call]:
        """Run one batch's worth of windows of every active call; return those still active."""
        calls: list[_Call] = []
        for call in active:
            if call.future.cancelled():
                continue
            if call.rows is None and not self._start(encoder, call):
                continue
            calls.append(call)
        if not calls:
            return []
        now = time.perf_counter()
        # One batch's worth per call: its next batch.
        taken = [call.groups.popleft() for call in calls]
        for call in calls:
            if call.started is None:
                call.started = now
        try:
            self._run(encoder, calls, taken)
        except Exception as error:
            if len(calls) == 1:
                _fail(calls[0], error)
                return []
            # Re-run caller by caller, so that the error reaches only the caller it belongs to.
            for call, windows in zip(calls, taken, strict=True):
                try:
                    self._run(encoder, [call], [windows])
                except Exception as alone:
                    _fail(call, alone)
        still: list[_Call] = []
        for call in calls:
            if call.future.done():
                continue
            if call.groups:
                still.append(call)
            else:
                _finish(encoder, call)
        return still

    def _run(self, encoder: LocalEncoder, calls: list[_Call], taken: list[list[int]]) -> None:
        import torch

        from localembed.pooling import dense_head
        from localembed.windows import Tokenized

        # The merged windows of this round, and where each row goes back to.
        ids: list[list[int]] = []
        targets: list[tuple[_Call, int]] = []
        for call, windows in zip(calls, taken, strict=True):
            assert call.tokenized is not None
            for window in windows:
                ids.append(call.tokenized.ids[window])
                targets.append((call, window))
        merged = Tokenized(ids, list(range(len(ids))), len(ids), truncated=0, chunked=False)
        started = time.perf_counter()
        settings = encoder.settings

        def scatter(indices: list[int], batch: ForwardBatch) -> None:
            # Windows of a chunked text are combined (then normalized) later.
            plain = torch.tensor([not _chunked(targets[i][0]) for i in indices])
            normalize = plain if settings.normalize else False
            vectors = dense_head(settings.pooling, batch.hidden, batch.attention_mask, normalize)
            array = vectors.cpu().numpy()
            for row, index in enumerate(indices):
                call, window = targets[index]
                assert call.rows is not None
                call.rows[window] = array[row]

        encoder.run_batches(merged, scatter)
        stats = RoundStats(
            callers=len(calls),
            windows=len(ids),
            tokens=sum(len(window) for window in ids),
            seconds=time.perf_counter() - started,
        )
        for observer in list(self._observers):
            observer(stats)


RoundStatsObserver = Callable[[RoundStats], None]
"""A function called with each round's :class:`RoundStats`."""


def _chunked(call: _Call) -> bool:
    return call.tokenized is not None and call.tokenized.chunked


def _fail(call: _Call, error: BaseException) -> None:
    if not call.future.done():
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
            call.future.set_exception(error)


def _finish(encoder: LocalEncoder, call: _Call) -> None:
    tokenized, rows = call.tokenized, call.rows
    assert tokenized is not None and rows is not None
    vectors = encoder.combine_windows(rows, tokenized) if tokenized.chunked else rows
    try:
        finished = encoder.finish(vectors)  # NonFiniteEmbeddingError names this call's rows
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
