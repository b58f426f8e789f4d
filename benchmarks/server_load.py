"""Load test of `localembed serve` on loopback, against sentence-transformers in process.

A bounded asyncio client (httpx): ``--concurrency`` workers, each sending requests of
``--batch-size`` texts back to back for ``--duration`` seconds (after a short warm-up).
Prints requests/s, texts/s and the p50/p99 latency. With ``--compare`` the same workers
run sentence-transformers' ``encode`` in this process (threads; no HTTP) on the same model.

    python benchmarks/server_load.py --concurrency 16 --batch-size 1 --duration 10 --compare
    python benchmarks/server_load.py --url http://127.0.0.1:8000 --concurrency 32

Without ``--url`` it starts ``localembed serve`` (the model from ``--model``, default the
embedded all-MiniLM-L6-v2) on a free loopback port and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "rain",
    "falls",
    "on",
    "the",
    "old",
    "city",
    "and",
    "markets",
    "open",
    "early",
    "as",
    "engineers",
    "ship",
    "new",
    "embedding",
    "models",
    "to",
    "production",
]


def make_texts(count: int) -> list[str]:
    """Deterministic sentences of 4 to 40 words."""
    return [
        " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(4 + (i * 13) % 37))
        for i in range(count)
    ]


class Result:
    """Latencies of the requests finished in the measured window."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0

    def report(self, name: str, seconds: float, batch_size: int) -> str:
        count = len(self.latencies)
        if not count:
            return f"{name:<28} no request finished ({self.errors} errors)"
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(count - 1, int(0.99 * count))] * 1000
        return (
            f"{name:<28} {count / seconds:>9.1f} {count * batch_size / seconds:>9.1f} "
            f"{p50:>9.1f} {p99:>9.1f} {self.errors:>6}"
        )


async def load_server(
    url: str, args: argparse.Namespace, texts: list[str], key: str | None
) -> Result:
    import httpx

    result = Result()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    start = time.perf_counter()
    measure_from = start + args.warmup
    stop = measure_from + args.duration

    async def worker(index: int, client: httpx.AsyncClient) -> None:
        position = index * args.batch_size
        while (sent := time.perf_counter()) < stop:
            batch = [texts[(position + j) % len(texts)] for j in range(args.batch_size)]
            position += args.concurrency * args.batch_size
            response = await client.post(
                "/v1/embeddings", json={"input": batch, "model": args.model_id}, headers=headers
            )
            done = time.perf_counter()
            if response.status_code != 200:
                result.errors += 1
            elif sent >= measure_from and done <= stop:
                result.latencies.append(done - sent)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        await asyncio.gather(*(worker(i, client) for i in range(args.concurrency)))
    return result


def load_in_process(
    encode: Callable[[list[str]], object], args: argparse.Namespace, texts: list[str]
) -> Result:
    """The same workers as threads calling ``encode`` directly (no HTTP)."""
    result = Result()
    lock = threading.Lock()
    start = time.perf_counter()
    measure_from = start + args.warmup
    stop = measure_from + args.duration

    def worker(index: int) -> None:
        position = index * args.batch_size
        while (sent := time.perf_counter()) < stop:
            batch = [texts[(position + j) % len(texts)] for j in range(args.batch_size)]
            position += args.concurrency * args.batch_size
            encode(batch)
            done = time.perf_counter()
            if sent >= measure_from and done <= stop:
                with lock:
                    result.latencies.append(done - sent)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "localembed.cli", "serve", "--port", str(port)]
    command += ["--log-level", "warning", "--device", "cpu"]
    if args.model:
        command += ["--model", args.model]
    process = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"the server exited with status {process.returncode}"
            raise SystemExit(msg)
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    msg = "the server did not become healthy in 180 s"
    raise SystemExit(msg)


def main(argv: list[str] | None = None) -> int:
    """Run the load test and print one line per contender."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="a running server (default: start one)")
    parser.add_argument("--model", default=None, help="model directory or id (default: embedded)")
    parser.add_argument("--model-id", default=None, help="the 'model' field sent (default: none)")
    parser.add_argument("--api-key", default=os.environ.get("LOCALEMBED_API_KEY"))
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--batch-size", type=int, default=1, help="texts per request")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument(
        "--compare", action="store_true", help="also sentence-transformers in process (threads)"
    )
    args = parser.parse_args(argv)

    texts = make_texts(4096)
    header = (
        f"{'contender':<28} {'req/s':>9} {'texts/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'errors':>6}"
    )
    print(
        f"concurrency {args.concurrency}, {args.batch_size} text(s) per request, "
        f"{args.duration:g} s measured after {args.warmup:g} s warm-up"
    )
    lines = []
    process = None
    url = args.url
    if url is None:
        process, url = start_server(args)
    try:
        result = asyncio.run(load_server(url, args, texts, args.api_key))
        lines.append(result.report("localembed serve (HTTP)", args.duration, args.batch_size))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
    if args.compare:
        from sentence_transformers import SentenceTransformer

        from localembed.loading import locate_model

        path = locate_model(args.model).path
        model = SentenceTransformer(str(path), device="cpu")
        result = load_in_process(lambda batch: model.encode(batch), args, texts)
        lines.append(
            result.report("sentence-transformers (in-process)", args.duration, args.batch_size)
        )
    print(header)
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
