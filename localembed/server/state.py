"""What the server knows at run time: its models, their loads, and who is using them.

One :class:`ServerState` per app, on the app's event loop. Each served model
(:class:`ServedModel`) has its own admission limit and, once loaded, its own
micro-batcher. A request goes through three steps:

1. :meth:`ServerState.lookup` finds the model the request names (404 if none).
2. :meth:`ServerState.admit` counts it in (429 when the model's queue is full).
3. :meth:`ServerState.ready` returns the loaded model, loading it first if needed (the
   request waits up to ``load_timeout_s``, then 503 with Retry-After);
   :meth:`ServerState.release` counts it out.

:meth:`ServerState.use` does all three. Loads run one at a time; a load that would pass
``max_loaded_models`` or ``max_loaded_mb`` first unloads the least recently used model,
after the requests using it have finished (requests that arrive for it meanwhile wait and
load it again). A model no request used for ``idle_unload_s`` is unloaded the same way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from localembed.server.errors import ApiError, hide_paths, paths_of
from localembed.server.loads import (
    LOAD_THREADS,
    build_model,
    check_files,
    import_libraries,
    in_daemon_thread,
    release_models,
)
from localembed.server.memory import resident_bytes, weights_size
from localembed.server.metrics import Metrics

if TYPE_CHECKING:
    from localembed.server.models import Kind, ModelSpec
    from localembed.server.remote import Remote
    from localembed.server.settings import ServerSettings

logger = logging.getLogger("localembed.server")

MAX_WAIT_DEPRECATED = (
    "--max-wait-ms (max_wait_ms) is deprecated and ignored: holding a lone request only "
    "delayed it, and requests that arrive during a forward pass already share the next one "
    "(measured in docs/server.md); drop the setting"
)

LOAD_RETRY_S = 30.0
"""Seconds after a failed load before a request for that model tries to load it again."""

Status = Literal["unloaded", "loading", "loaded", "unloading", "failed"]
_STATUSES = frozenset(("unloaded", "loading", "loaded", "unloading", "failed"))


@dataclass(eq=False)
class ServedModel:
    """One served model and its run-time state."""

    spec: ModelSpec
    max_queue: int
    preload: bool
    model: Any = None
    """The LocalEncoder or LocalReranker while loaded."""
    status: Status = "unloaded"
    error: str | None = None
    pinned: bool = False
    """Loaded by the caller (``create_app(encoder=...)``): never unloaded by the server."""
    active: int = 0
    """Requests holding the loaded model."""
    waiting: int = 0
    """Requests admitted and waiting for the model to load."""
    waiters: set[object] = field(default_factory=set)
    """The requests waiting for the model (one token each)."""
    owed: set[object] = field(default_factory=set)
    """The requests that were waiting when it loaded: they take it even if an eviction has
    begun meanwhile (the eviction waits for them)."""
    failed_at: float = 0.0
    """When the last load failed (``time.monotonic()``)."""
    last_used: float = 0.0
    resident: int = 0
    """Bytes the process's RSS grew by when the model loaded (its estimate before)."""
    loads: int = 0
    unloads: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    """Made from the loaded model (its bge-m3 reranker, sparse support); dropped on unload."""
    _changed: asyncio.Event | None = None
    _observer: Any = None

    @property
    def id(self) -> str:
        """The id clients send."""
        return self.spec.id

    @property
    def kind(self) -> Kind:
        """The kind: "embedding" or "reranker"."""
        return self.spec.kind

    @property
    def in_flight(self) -> int:
        """Admitted and not yet answered (the queue depth)."""
        return self.active + self.waiting

    def changed(self) -> asyncio.Event:
        """An event set at the next status change."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def set_status(self, status: Status) -> None:
        """Change the status and wake whoever waits for a change."""
        self.status = status
        event, self._changed = self._changed, None
        if event is not None:
            event.set()


class ServerState:
    """The served models of one app, their loads, limits and the draining flag."""

    def __init__(
        self,
        specs: list[ModelSpec],
        settings: ServerSettings,
        *,
        metrics: Metrics | None = None,
        loaded: dict[str, Any] | None = None,
        remote: Remote | None = None,
    ) -> None:
        from localembed.server.models import check_specs

        self.settings = settings
        if settings.max_wait_ms:
            logger.warning(MAX_WAIT_DEPRECATED)
        self.remote = remote
        """Where the models are when they are served by other processes (then none loads here)."""
        self.metrics = metrics or Metrics()
        self.draining = False
        self.models: dict[str, ServedModel] = {}
        self.names: dict[str, str] = {}
        self.defaults: dict[str, str] = {}
        for spec in check_specs(specs):
            served = ServedModel(
                spec=spec,
                max_queue=spec.max_queue or settings.max_queue,
                preload=settings.preload if spec.preload is None else spec.preload,
            )
            self.models[spec.id] = served
            for name in (spec.id, *spec.aliases):
                self.names[name] = spec.id
            if spec.default:
                self.defaults[spec.kind] = spec.id
            self.metrics.add_model(spec.id)
        for model_id, model in (loaded or {}).items():
            served = self.models[model_id]
            served.pinned = True
            self._loaded(served, model, 0)
        self._load_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._imports: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._startup: asyncio.Task[None] | None = None
        self.metrics.watch_caches(self.cache_stats)

    # -- finding and admitting ----------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet answered, over all models."""
        return sum(served.in_flight for served in self.models.values())

    def default(self, kind: Kind) -> ServedModel | None:
        """The default model of ``kind`` (what requests naming no model use), if served."""
        model_id = self.defaults.get(kind)
        return None if model_id is None else self.models[model_id]

    def lookup(self, name: str | None, kind: Kind, *, param: str = "model") -> ServedModel:
        """The served model ``name`` (None: the default of ``kind``), or a 404 naming them."""
        if name is None:
            served = self.default(kind)
        else:
            model_id = self.names.get(name)
            served = None if model_id is None else self.models[model_id]
        if served is not None and served.kind == kind:
            return served
        served_ids = [model.id for model in self.models.values() if model.kind == kind]
        listed = ", ".join(repr(model_id) for model_id in served_ids) or "none"
        if name is None:
            message = f"no {kind} model is served here"
        elif served is not None:
            message = (
                f"{name!r} is a{'n' if served.kind == 'embedding' else ''} {served.kind} model"
            )
        else:
            message = f"model {name!r} is not served here"
        message += f"; this server's {kind} models: {listed} (GET /v1/models lists them all)"
        code = "model_not_found"
        raise ApiError(404, message, code=code, param=param)

    def authorize(self, served: ServedModel, token: str | None) -> None:
        """401 unless ``token`` may use ``served`` (its own keys, or the server's key)."""
        server_key = self.settings.api_key
        keys = served.spec.api_keys
        if keys is None and server_key is None:
            return
        allowed = set(keys or ()) | ({server_key} if server_key else set())
        if token is not None and token in allowed:
            return
        message = f"this API key may not use model {served.id!r}"
        if token is None:
            message = "missing API key: send the header 'Authorization: Bearer KEY'"
        raise ApiError(401, message, code="invalid_api_key")

    def admit(self, served: ServedModel) -> None:
        """Count a request in for ``served``, or 429 when its queue is full."""
        if self.draining:
            message = "the server is shutting down; retry on another instance"
            raise ApiError(503, message, code="shutting_down")
        if served.in_flight >= served.max_queue:
            message = (
                f"the queue of model {served.id!r} is full ({served.max_queue} requests in "
                "progress); retry shortly"
            )
            raise ApiError(429, message, code="queue_full")
        served.waiting += 1
        served.last_used = time.monotonic()
        self.metrics.model_requests.labels(served.id).inc()
        self._depth(served)

    def release(self, served: ServedModel, *, holding: bool = True) -> None:
        """Count a request out (``holding``: it had the loaded model, else it was waiting)."""
        if holding:
            served.active -= 1
        else:
            served.waiting -= 1
        served.last_used = time.monotonic()
        self._depth(served)

    async def ready(self, served: ServedModel) -> Any:
        """The loaded model of an admitted request (then held: :meth:`release` it).

        Starts a load if the model is not loaded, and waits for it up to
        ``load_timeout_s`` (then 503 ``model_loading`` with Retry-After). A model being
        unloaded is waited for and loaded again. The requests waiting when a load ends get
        the model before anything can evict it. After a failed load, requests get a 503
        ``model_load_failed`` for :data:`LOAD_RETRY_S` seconds, then one loads it again.
        """
        deadline = time.monotonic() + self.settings.load_timeout_s
        token = object()
        served.waiters.add(token)
        try:
            return await self._wait_for_model(served, token, deadline)
        finally:
            served.waiters.discard(token)
            served.owed.discard(token)

    async def _wait_for_model(self, served: ServedModel, token: object, deadline: float) -> Any:
        while True:
            if served.model is not None and (served.status == "loaded" or token in served.owed):
                served.owed.discard(token)
                served.waiting -= 1
                served.active += 1
                served.last_used = time.monotonic()
                return served.model
            if served.status == "failed":
                retry = served.failed_at + LOAD_RETRY_S - time.monotonic()
                if retry > 0:
                    message = (
                        f"model {served.id!r} failed to load: {served.error}; a request from "
                        f"{math.ceil(retry)} s on tries again"
                    )
                    raise ApiError(
                        503, message, code="model_load_failed", retry_after=math.ceil(retry)
                    )
                served.set_status("unloaded")
            if self.draining:  # shutting down: a load is not waited for
                message = (
                    f"the server is shutting down (model {served.id!r} is not loaded); retry "
                    "on another instance"
                )
                raise ApiError(503, message, code="shutting_down")
            event = served.changed()
            if served.status == "unloaded":
                self._start_load(served)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                message = (
                    f"model {served.id!r} is {served.status} (it loads on demand); retry shortly"
                )
                raise ApiError(503, message, code="model_loading", retry_after=2)
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
                continue

    @asynccontextmanager
    async def use(self, served: ServedModel) -> AsyncIterator[Any]:
        """Admit a request for ``served``, wait for the model, release it after.

        In a forwarding app (``remote``), the request goes to the model's own process
        instead (the app's :class:`~localembed.server.remote.Forwarding` sends it).
        """
        if self.remote is not None:
            from localembed.server.remote import ForwardRequest

            raise ForwardRequest(served.id)
        self.admit(served)
        try:
            model = await self.ready(served)
        except BaseException:
            self.release(served, holding=False)
            raise
        try:
            yield model
        finally:
            self.release(served)

    # -- loading and unloading ----------------------------------------------------------

    def _lock(self) -> asyncio.Lock:
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        return self._load_lock

    def _start_load(self, served: ServedModel) -> None:
        served.set_status("loading")
        task = asyncio.get_running_loop().create_task(self._load(served))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _load(self, served: ServedModel) -> None:
        """Load ``served`` (already marked "loading"), unloading others first if needed."""
        async with self._lock():
            try:
                if self._imports is not None:  # importing transformers twice at once fails
                    await asyncio.shield(self._imports)
                # A model whose files cannot load evicts nothing.
                await in_daemon_thread(check_files, served.spec, f"check {served.id}")
                await self._make_room(served)
                before = resident_bytes()
                started = time.perf_counter()
                model = await in_daemon_thread(build_model, served.spec, f"load {served.id}")
                seconds = time.perf_counter() - started
                grown = max(resident_bytes() - before, 0)
            except Exception as error:  # reported to every request for it (503) and /health
                logger.exception("model %r failed to load", served.id)
                served.error = _public_error(served, error)
                served.failed_at = time.monotonic()
                served.set_status("failed")
                return
            self.metrics.load_seconds.labels(served.id).observe(seconds)
            self._loaded(served, model, grown or served.resident or _estimate(served))
            try:  # measured bigger than estimated: evict more
                await self._make_room(served)
            except Exception:  # the model is loaded and serves; the cap is over until next load
                logger.exception("unloading models after loading %r failed", served.id)
            logger.info(
                "loaded model %r in %.1f s (+%.0f MiB resident)",
                served.id,
                seconds,
                grown / 2**20,
            )

    def _loaded(self, served: ServedModel, model: Any, resident: int) -> None:
        served.model = model
        served.error = None
        served.last_used = time.monotonic()  # idle from now, not from before the load
        served.resident = resident
        served.loads += 1
        served.owed = set(served.waiters)  # they take it before anything can evict it
        served.extras.clear()
        batcher = _batcher_of(model)
        if batcher is not None:
            served._observer = self.metrics.observer(served.id)
            batcher.observe(served._observer)
        self.metrics.loads.labels(served.id).inc()
        self.metrics.loaded.labels(served.id).set(1)
        self.metrics.resident.labels(served.id).set(resident)
        served.set_status("loaded")

    async def _make_room(self, incoming: ServedModel) -> None:
        """Unload least recently used models until ``incoming`` fits the caps."""
        settings = self.settings
        while True:
            loaded = [m for m in self.models.values() if m.status == "loaded" and m is not incoming]
            count_over = (
                settings.max_loaded_models is not None
                and len(loaded) + 1 > settings.max_loaded_models
            )
            need = incoming.resident or _estimate(incoming)
            memory_over = (
                settings.max_loaded_mb is not None
                and sum(m.resident for m in loaded) + need > settings.max_loaded_mb * 2**20
            )
            candidates = [m for m in loaded if not m.pinned]
            if not (count_over or memory_over) or not candidates:
                if count_over or memory_over:
                    logger.warning(
                        "loading model %r passes the server's model cap; nothing left to unload",
                        incoming.id,
                    )
                return
            victim = min(candidates, key=lambda m: m.last_used)
            await self._unload(victim, "evicted")

    async def _unload(self, served: ServedModel, reason: str) -> None:
        """Unload ``served`` after the requests holding it finish (call under the lock)."""
        served.set_status("unloading")
        # Requests in progress (and those the load was for) finish first; nothing is lost.
        # A pass already running for a client that went away ends too.
        batcher = _batcher_of(served.model)
        passes_end = time.monotonic() + 60
        while (
            served.active
            or served.owed
            or (batcher is not None and batcher.busy and time.monotonic() < passes_end)
        ):
            await asyncio.sleep(0.005)
        if batcher is not None and served._observer is not None:
            batcher.unobserve(served._observer)
        del batcher
        # Only the box holds them now: release_models empties it, so the memory can go.
        box = [*served.extras.values(), served.model]
        served.model = None
        served.extras.clear()
        before = resident_bytes()
        await asyncio.to_thread(release_models, box)
        returned = max(before - resident_bytes(), 0)
        served.unloads += 1
        self.metrics.unloads.labels(served.id, reason).inc()
        self.metrics.loaded.labels(served.id).set(0)
        self.metrics.resident.labels(served.id).set(0)
        logger.info(
            "unloaded model %r (%s; %.0f MiB returned)", served.id, reason, returned / 2**20
        )
        served.set_status("unloaded")

    async def unload(self, model_id: str, reason: str = "requested") -> None:
        """Unload a model now (after its requests in progress); no-op if not loaded."""
        served = self.models[model_id]
        async with self._lock():
            if served.status == "loaded" and not served.pinned:
                await self._unload(served, reason)

    # -- lifetime -------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve again (a restarted app), preload models, start the idle unloader."""
        self.draining = False
        self._loop = asyncio.get_running_loop()
        self._load_lock = None
        for served in self.models.values():
            served._changed = None
            if served.status in {"loading", "unloading"}:  # a task of a stopped loop
                served.set_status("loaded" if served.model is not None else "unloaded")
        if self.remote is not None:  # the models' own processes load and unload them
            return
        loop = asyncio.get_running_loop()
        self._imports = loop.create_task(asyncio.to_thread(import_libraries))
        self._startup = loop.create_task(self._preload())
        if self.settings.idle_unload_s is not None:
            self._tasks.append(loop.create_task(self._unload_idle()))

    def drain(self) -> None:
        """Stop admitting requests; those waiting for a model to load get a 503 now.

        Requests holding a loaded model finish. Thread-safe (a signal handler calls it):
        the waiting requests are woken on the app's event loop.
        """
        self.draining = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_waiters)

    def _wake_waiters(self) -> None:
        for served in self.models.values():
            served.set_status(served.status)  # same status: wakes whoever waits on it

    @property
    def loading_threads(self) -> list[str]:
        """Names of model loads still running in their threads (a shutdown leaves them)."""
        return [thread.name for thread in threading.enumerate() if thread.name in LOAD_THREADS]

    async def stop(self) -> None:
        """Stop the background tasks (models stay loaded: a restarted app serves them)."""
        self.draining = True
        for task in [*self._tasks, *([self._startup] if self._startup else [])]:
            task.cancel()
        self._startup = None

    async def preloaded(self) -> None:
        """Wait until the models to preload have loaded (or failed to)."""
        if self._startup is not None:
            await asyncio.shield(self._startup)

    @property
    def preloading(self) -> bool:
        """Whether the models to preload are still loading."""
        return self._startup is not None and not self._startup.done()

    async def _preload(self) -> None:
        cap = self.settings.max_loaded_models
        order = sorted(self.models.values(), key=lambda m: not m.spec.default)
        for served in order:
            if not served.preload or served.status != "unloaded":
                continue
            loaded = sum(m.status == "loaded" for m in self.models.values())
            if cap is not None and loaded >= cap:
                break
            if self.settings.max_loaded_mb is not None:
                used = sum(m.resident for m in self.models.values() if m.status == "loaded")
                if used + _estimate(served) > self.settings.max_loaded_mb * 2**20:
                    continue
            served.set_status("loading")
            await self._load(served)

    async def _unload_idle(self) -> None:
        idle = self.settings.idle_unload_s
        assert idle is not None
        period = min(max(idle / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for served in list(self.models.values()):
                if (
                    served.status == "loaded"
                    and not served.pinned
                    and served.in_flight == 0
                    and now - served.last_used >= idle
                ):
                    async with self._lock():  # used while it waited for the lock: not idle
                        if (
                            served.status == "loaded"
                            and served.in_flight == 0
                            and time.monotonic() - served.last_used >= idle
                        ):
                            await self._unload(served, "idle")

    # -- reporting ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """In a forwarding app: each model's status as the process holding it reports it."""
        if self.remote is None:
            return
        reported = await self.remote.statuses()
        for model_id, (status, error) in reported.items():
            served = self.models.get(model_id)
            if served is not None and status in _STATUSES:
                served.error = error
                served.set_status(status)  # type: ignore[arg-type]

    def _depth(self, served: ServedModel) -> None:
        self.metrics.queue_depth.labels(served.id).set(served.in_flight)

    def cache_stats(self) -> dict[str, dict[str, int]]:
        """Each loaded encoder's ``cache_stats()`` (encoders with an embedding cache)."""
        stats: dict[str, dict[str, int]] = {}
        for served in self.models.values():
            read = getattr(served.model, "cache_stats", None)
            if served.status == "loaded" and callable(read):
                try:
                    stats[served.id] = {str(k): int(v) for k, v in dict(read()).items()}
                except Exception:  # a scrape never fails for a cache's counters
                    logger.exception("reading the cache counters of %r failed", served.id)
        return stats


def _public_error(served: ServedModel, error: BaseException) -> str:
    """A load error as requests and ``/health`` show it: no file-system path."""
    from localembed.model_origins import scrub

    text = f"{type(error).__name__}: {scrub(str(error))}"
    shown: str = hide_paths(text, paths_of(None, served.spec.config.model), served.id)
    return shown


def _estimate(served: ServedModel) -> int:
    return served.resident or weights_size(served.spec.config.model)


def _batcher_of(model: Any) -> Any:
    """The micro-batcher of a loaded encoder (None: a reranker, or no forward pass)."""
    if model is None or "windows" not in getattr(model, "capabilities", ()):
        return None
    return model.batcher
