"""Prometheus metrics of one server app, in the app's own registry, per served model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localembed.microbatch import RoundStats

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536)

CacheStats = Callable[[], dict[str, dict[str, int]]]
"""Model id -> its encoder's ``cache_stats()`` (only the loaded models that have a cache)."""


class Metrics:
    """Counters, gauges and histograms for ``GET /metrics`` (``prometheus-client``).

    Each app gets its own ``CollectorRegistry``, so that several apps in one process (tests,
    Ray Serve replicas) do not collide. Every model series has a ``model`` label (the id
    clients send).
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "localembed_requests",
            "HTTP requests answered, by endpoint and status code",
            ["endpoint", "status"],
            registry=registry,
        )
        self.failures = Counter(
            "localembed_request_failures",
            "Requests answered with an error, by reason (the error code)",
            ["reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "localembed_request_seconds",
            "Time from request to response, by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_requests = Counter(
            "localembed_model_requests",
            "Requests admitted for a model (embedding, sparse, rerank, tokenize)",
            ["model"],
            registry=registry,
        )
        self.queue_time = Histogram(
            "localembed_queue_seconds",
            "Time an embedding request waited for the micro-batcher to start it",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "localembed_batch_size",
            "Texts (token windows) per micro-batcher round",
            ["model"],
            buckets=_SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_tokens = Histogram(
            "localembed_batch_tokens",
            "Real (unpadded) tokens per micro-batcher round",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        self.texts = Counter(
            "localembed_texts",
            "Rows embedded or reranked for requests (texts, documents)",
            ["model"],
            registry=registry,
        )
        self.tokens = Counter(
            "localembed_tokens", "Tokens embedded for requests", ["model"], registry=registry
        )
        self.truncated = Counter(
            "localembed_truncated_texts",
            "Inputs cut to the model's max_length",
            ["model"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "localembed_queue_depth",
            "Requests admitted and not yet answered (running, queued or waiting for a load)",
            ["model"],
            registry=registry,
        )
        self.loaded = Gauge(
            "localembed_model_loaded", "1 while the model is loaded", ["model"], registry=registry
        )
        self.loads = Counter(
            "localembed_model_loads", "Times the model was loaded", ["model"], registry=registry
        )
        self.load_seconds = Histogram(
            "localembed_model_load_seconds",
            "Time a model took to load",
            ["model"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self.unloads = Counter(
            "localembed_model_unloads",
            "Times the model was unloaded, by reason (evicted, idle)",
            ["model", "reason"],
            registry=registry,
        )
        self.resident = Gauge(
            "localembed_model_resident_bytes",
            "Resident memory the model added when it loaded (0 while unloaded)",
            ["model"],
            registry=registry,
        )
        self.process_resident = Gauge(
            "localembed_process_resident_bytes",
            "The server process's resident memory (RSS)",
            registry=registry,
        )
        self._cache_stats: CacheStats | None = None
        registry.register(_CacheCollector(self))

    def observer(self, model: str) -> Callable[[RoundStats], None]:
        """The micro-batcher observer that records ``model``'s rounds."""
        size = self.batch_size.labels(model)
        tokens = self.batch_tokens.labels(model)

        def observe_round(stats: RoundStats) -> None:
            size.observe(stats.windows)
            tokens.observe(stats.tokens)

        return observe_round

    def add_model(self, model: str) -> None:
        """Create ``model``'s series (zero), so that /metrics lists every served model."""
        for metric in (
            self.model_requests,
            self.texts,
            self.tokens,
            self.truncated,
            self.queue_depth,
            self.loaded,
            self.loads,
            self.resident,
        ):
            metric.labels(model)

    def watch_caches(self, stats: CacheStats) -> None:
        """Export ``stats()`` as ``localembed_cache{model, stat}`` on every scrape."""
        self._cache_stats = stats

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from localembed.server.memory import resident_bytes

        self.process_resident.set(resident_bytes())
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _CacheCollector:
    """``localembed_cache{model, stat}``: each loaded encoder's ``cache_stats()``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        read = self.metrics._cache_stats
        if read is None:
            return
        family = GaugeMetricFamily(
            "localembed_cache",
            "The embedding cache's counters per model (hits, misses, bytes, ...)",
            labels=["model", "stat"],
        )
        for model, stats in sorted(read().items()):
            for stat, value in sorted(stats.items()):
                family.add_metric([model, stat], float(value))
        yield family
