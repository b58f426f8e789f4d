"""Prometheus metrics of one server app, in the app's own registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localembed.microbatch import RoundStats

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536)


class Metrics:
    """Counters and histograms for ``GET /metrics`` (``prometheus-client``).

    Each app gets its own ``CollectorRegistry``, so that several apps in one process (tests,
    Ray Serve replicas) do not collide.
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
        self.queue_time = Histogram(
            "localembed_queue_seconds",
            "Time an embedding request waited for the micro-batcher to start it",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "localembed_batch_size",
            "Texts (token windows) per micro-batcher round",
            buckets=_SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_tokens = Histogram(
            "localembed_batch_tokens",
            "Real (unpadded) tokens per micro-batcher round",
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        self.texts = Counter("localembed_texts", "Texts embedded for requests", registry=registry)
        self.tokens = Counter(
            "localembed_tokens", "Tokens embedded for requests", registry=registry
        )
        self.truncated = Counter(
            "localembed_truncated_texts", "Inputs cut to the model's max_length", registry=registry
        )
        self.queue_depth = Gauge(
            "localembed_queue_depth",
            "Embedding requests admitted and not yet answered (running or waiting)",
            registry=registry,
        )

    def observe_round(self, stats: RoundStats) -> None:
        """Record one micro-batcher round."""
        self.batch_size.observe(stats.windows)
        self.batch_tokens.observe(stats.tokens)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
