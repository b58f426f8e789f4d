"""Several models in one `localembed serve` against one server per model, on loopback.

Models: two copies of the embedded all-MiniLM-L6-v2 in their own directories (two
embedding models of real size, loaded separately) and a MiniLM-sized cross-encoder built
from the same weights (a random score head: its speed and memory are a real reranker's,
its scores are not). Clients: ``--processes`` client processes, ``--concurrency`` clients
in all, each sending one request at a time, cycling over the three models (one text to an
embedding model, or a query and 4 documents to the reranker).

    python benchmarks/server_models.py throughput --duration 20 --rounds 2
    python benchmarks/server_models.py cold           # time to first row of a lazy model
    python benchmarks/server_models.py unload         # RSS returned by an idle unload
    python benchmarks/server_models.py soak --texts 20000   # RSS over new batch shapes
    python benchmarks/server_models.py soak --soak-seconds 600 --sample-seconds 60
    python benchmarks/server_models.py soak --soak-seconds 3600 --rate 1 --sample-seconds 180

Each prints one table; ratios are within one run (the machine may be busy: run it twice).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_load import free_port, make_texts

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["Cats sleep in warm places.", "Paris is in France.", "A cat naps.", "Markets open."]


def build_models(directory: Path) -> dict[str, Path]:
    """Two embedding model directories and a cross-encoder, all MiniLM-sized."""
    from localembed.loading import locate_model

    source = locate_model(None).path
    models = {}
    for name in ("emb_a", "emb_b"):
        target = directory / name
        if not target.exists():
            shutil.copytree(source, target)
        models[name] = target
    reranker = directory / "rr"
    if not reranker.exists():
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=1)
        model.save_pretrained(str(reranker), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(reranker))
    models["rr"] = reranker
    return models


def config_file(directory: Path, models: dict[str, Path], names: list[str], extra: str) -> Path:
    lines = [f"[server]\n{extra}\n"]
    for name in names:
        kind = "reranker" if name == "rr" else "embedding"
        lines.append(
            f'[models.{name}]\nkind = "{kind}"\nmodel = "{models[name]}"\ndevice = "cpu"\n'
        )
    path = directory / f"{'-'.join(names)}-{abs(hash(extra))}.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


LOCALEMBED_SERVE = (sys.executable, "-m", "localembed.cli", "serve", "--log-level", "warning")
"""The command that starts ``localembed serve`` (``--port`` and the arguments follow)."""


class Server:
    """A server in a subprocess on a free loopback port, healthy (``GET /health``) when constructed.

    ``program`` is the command before ``--port`` (default: ``localembed serve``); ``args``
    follow the port; ``cwd`` is its working directory.
    """

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        program: tuple[str, ...] = LOCALEMBED_SERVE,
        cwd: str | None = None,
    ) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [*program, "--port", str(self.port), *args]
        environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.process = subprocess.Popen(command, env=environment, cwd=cwd)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"the server exited with status {self.process.returncode}"
                raise SystemExit(msg)
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        msg = "the server did not become healthy in 900 s"
        raise SystemExit(msg)

    def rss(self) -> int:
        """The server process's resident memory in bytes."""
        with open(f"/proc/{self.process.pid}/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def request_for(model: str, texts: list[str]) -> tuple[str, dict[str, Any]]:
    """The route and body of one request: rerank ``texts[0]`` for "rr", else embed ``texts``.

    ``/embeddings``: the OpenAI route without ``/v1``, which both ``localembed serve`` and
    infinity answer.
    """
    if model == "rr":
        return "/v1/rerank", {"query": texts[0], "documents": DOCUMENTS, "model": model}
    return "/embeddings", {"input": texts, "model": model}


async def _client_process(
    urls: dict[str, str],
    clients: int,
    offset: int,
    start: float,
    warmup: float,
    duration: float,
    batch: int,
    pause: tuple[float, float] | None,
) -> tuple[list[float], int]:
    import random

    import httpx

    rng = random.Random(offset)

    texts = make_texts(2048)
    measure_from, stop = start + warmup, start + warmup + duration
    latencies: list[float] = []
    errors = 0
    models = list(urls)
    pools = {
        url: httpx.AsyncClient(
            base_url=url,
            timeout=120,
            limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients),
        )
        for url in set(urls.values())
    }

    async def worker(index: int) -> None:
        nonlocal errors
        position = offset + index
        while (sent := time.time()) < stop:
            model = models[position % len(models)]
            chosen = [texts[(position + j) % len(texts)] for j in range(batch)]
            path, body = request_for(model, chosen)
            position += 7 * batch
            try:
                response = await pools[urls[model]].post(path, json=body)
                ok = response.status_code == 200
            except Exception:  # counted: a ReadError is what the issue asks about
                ok = False
            done = time.time()
            if not ok:
                errors += 1
            elif sent >= measure_from and done <= stop:
                latencies.append(done - sent)
            if pause:
                await asyncio.sleep(rng.uniform(*pause))

    await asyncio.gather(*(worker(i) for i in range(clients)))
    for pool in pools.values():
        await pool.aclose()
    return latencies, errors


def _run_client(args: tuple[Any, ...]) -> tuple[list[float], int]:
    return asyncio.run(_client_process(*args))


def load(
    urls: dict[str, str],
    concurrency: int,
    processes: int,
    warmup: float,
    duration: float,
    batch: int = 1,
    pause: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Requests/s, p50/p99 ms and errors of ``concurrency`` clients in ``processes`` processes.

    Each client sends one request of ``batch`` texts at a time; ``urls`` maps each model id
    the clients cycle over to its server. With ``pause`` (low, high seconds), each client
    waits a uniformly drawn time after every answer, leaving its connection idle.
    """
    start = time.time() + 1.0  # every process starts the clock together
    share = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    jobs = [
        (urls, n, i * 101, start, warmup, duration, batch, pause) for i, n in enumerate(share) if n
    ]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        results = pool.map(_run_client, jobs)
    latencies = sorted(x for got, _ in results for x in got)
    errors = sum(e for _, e in results)
    count = len(latencies)
    return {
        "rps": count / duration,
        "p50": statistics.median(latencies) * 1000 if count else float("nan"),
        "p99": latencies[min(count - 1, int(0.99 * count))] * 1000 if count else float("nan"),
        "errors": errors,
    }


def throughput(args: argparse.Namespace, models: dict[str, Path], work: Path) -> None:
    names = ["emb_a", "emb_b", "rr"]
    rows: list[tuple[str, dict[str, float], int]] = []
    for round_index in range(args.rounds):
        for layout in ("one server", "three servers"):
            servers: list[Server] = []
            try:
                if layout == "one server":
                    servers.append(Server("--config", str(config_file(work, models, names, ""))))
                    urls = dict.fromkeys(names, servers[0].url)
                else:
                    urls = {}
                    for name in names:
                        server = Server("--config", str(config_file(work, models, [name], "")))
                        servers.append(server)
                        urls[name] = server.url
                result = load(urls, args.concurrency, args.processes, args.warmup, args.duration)
                rss = sum(server.rss() for server in servers)
            finally:
                for server in servers:
                    server.stop()
            rows.append((f"{layout} (round {round_index + 1})", result, rss))
    print(
        f"3 models, {args.concurrency} clients in {args.processes} processes, "
        f"{args.duration:g} s measured per round"
    )
    print(f"{'layout':<26} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'RSS MiB':>8}")
    for name, result, rss in rows:
        print(
            f"{name:<26} {result['rps']:>8.1f} {result['p50']:>8.1f} {result['p99']:>8.1f} "
            f"{result['errors']:>6.0f} {rss / 2**20:>8.0f}"
        )
    one = [r for n, r, _ in rows if n.startswith("one")]
    three = [r for n, r, _ in rows if n.startswith("three")]
    one_rss = statistics.mean(s for n, _, s in rows if n.startswith("one"))
    three_rss = statistics.mean(s for n, _, s in rows if n.startswith("three"))
    ratio = statistics.mean(r["rps"] for r in one) / statistics.mean(r["rps"] for r in three)
    print(f"throughput one/three: {ratio:.2f}; RSS one/three: {one_rss / three_rss:.2f}")


def cold(args: argparse.Namespace, models: dict[str, Path], work: Path) -> None:
    import httpx

    names = ["emb_a", "emb_b", "rr"]
    server = Server("--config", str(config_file(work, models, names, "preload = false")))
    try:
        print(f"{'model':<8} {'cold first row ms':>18} {'warm ms':>8}")
        for name in names:
            path, body = request_for(name, ["a first text"])
            timings = []
            for _ in range(2):
                started = time.perf_counter()
                httpx.post(f"{server.url}{path}", json=body, timeout=300).raise_for_status()
                timings.append((time.perf_counter() - started) * 1000)
            print(f"{name:<8} {timings[0]:>18.0f} {timings[1]:>8.1f}")
    finally:
        server.stop()


def unload(args: argparse.Namespace, models: dict[str, Path], work: Path) -> None:
    import httpx

    names = ["emb_a", "emb_b", "rr"]
    extra = f"preload = false\nidle_unload_s = {args.idle}"
    server = Server("--config", str(config_file(work, models, names, extra)))
    texts = make_texts(512)
    try:
        base = server.rss()
        for name in names:
            for start in range(0, 256, 32):
                path, body = request_for(name, texts[start : start + 32])
                httpx.post(f"{server.url}{path}", json=body, timeout=300).raise_for_status()
        loaded = server.rss()
        deadline = time.monotonic() + args.idle * 4 + 30
        while time.monotonic() < deadline:
            listed = httpx.get(f"{server.url}/v1/models").json()["data"]
            if not any(model["loaded"] for model in listed):
                break
            time.sleep(0.2)
        time.sleep(0.5)
        after = server.rss()
    finally:
        server.stop()
    print(f"{'state':<34} {'RSS MiB':>8}")
    print(f"{'server up, nothing loaded':<34} {base / 2**20:>8.0f}")
    print(f"{'3 models loaded and used':<34} {loaded / 2**20:>8.0f}")
    print(f"{'after idle unload':<34} {after / 2**20:>8.0f}")
    returned = (loaded - after) / max(loaded - base, 1)
    print(
        f"returned: {(loaded - after) / 2**20:.0f} MiB of {(loaded - base) / 2**20:.0f} MiB "
        f"the models added ({returned:.0%})"
    )


IDLE_SAMPLE_S = 5.0
"""Seconds the soak waits after its last answer before the idle RSS sample."""


def soak(args: argparse.Namespace, models: dict[str, Path], work: Path) -> None:
    """RSS while every request brings a batch of a new shape (count and lengths).

    Stops after ``--texts`` texts, or after ``--soak-seconds`` when given; samples the
    server's RSS every ``--sample-seconds`` (each sample printed as it is taken, so that a
    long soak shows its curve as it goes). ``--rate`` paces the requests (per second; 0: back
    to back), so that an hour-long soak leaves a shared machine's cores to others.
    """
    import random

    import httpx

    env = {}
    if args.arena_max:
        env["MALLOC_ARENA_MAX"] = str(args.arena_max)
    server = Server("--model", str(models["emb_a"]), *args.server_args, env=env)
    words = make_texts(4096)
    rng = random.Random(0)
    sent = errors = 0
    shapes: set[tuple[int, int]] = set()
    started = time.monotonic()
    samples = [(0.0, 0, server.rss())]
    next_sample = started + args.sample_seconds
    next_request = started
    print(f"MALLOC_ARENA_MAX={args.arena_max or 'unset'} server args: {args.server_args}")
    print(f"rate: {args.rate or 'back to back'} requests/s, 1-64 texts of 1-6 sentences each")
    print(f"{'seconds':>8} {'texts sent':>10} {'shapes':>7} {'errors':>6} {'RSS MiB':>8}")
    print(f"{0:>8} {0:>10} {0:>7} {0:>6} {samples[0][2] / 2**20:>8.0f}", flush=True)

    def more() -> bool:
        if args.soak_seconds:
            return time.monotonic() - started < args.soak_seconds
        return sent < args.texts

    def sample() -> None:
        samples.append((time.monotonic() - started, sent, server.rss()))
        seconds, count, rss = samples[-1]
        line = f"{seconds:>8.0f} {count:>10} {len(shapes):>7} {errors:>6} {rss / 2**20:>8.0f}"
        print(line, flush=True)

    try:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            while more():
                if args.rate:
                    next_request += 1 / args.rate
                    time.sleep(max(0.0, next_request - time.monotonic()))
                count = rng.randint(1, 64)
                batch = [
                    " ".join(words[rng.randrange(4096)] for _ in range(rng.randint(1, 6)))
                    for _ in range(count)
                ]
                try:
                    client.post("/v1/embeddings", json={"input": batch}).raise_for_status()
                except httpx.HTTPError as error:  # counted and shown, the soak goes on
                    errors += 1
                    print(f"request error: {error!r}", flush=True)
                sent += count
                shapes.add((count, max(len(text.split()) for text in batch)))
                if time.monotonic() >= next_sample:
                    sample()
                    next_sample += args.sample_seconds
        if time.monotonic() - started - samples[-1][0] >= 1:  # unless one was just taken
            sample()
        time.sleep(IDLE_SAMPLE_S)
        idle_rss = server.rss()
    finally:
        server.stop()
    start_rss, peak_rss, end_rss = samples[0][2], max(s[2] for s in samples), samples[-1][2]
    after = [rss for seconds, _, rss in samples if seconds >= samples[-1][0] / 2]
    print(
        f"RSS MiB: start {start_rss / 2**20:.0f}, peak {peak_rss / 2**20:.0f}, "
        f"end {end_rss / 2**20:.0f}; second half {min(after) / 2**20:.0f}-"
        f"{max(after) / 2**20:.0f}; {sent} texts, {len(shapes)} shapes "
        f"(rows x most words), {errors} errors; {idle_rss / 2**20:.0f} after "
        f"{IDLE_SAMPLE_S:g} s idle"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["throughput", "cold", "unload", "soak"])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--idle", type=float, default=3.0, help="unload: idle seconds")
    parser.add_argument("--texts", type=int, default=20000, help="soak: texts to send")
    parser.add_argument("--arena-max", type=int, default=0, help="soak: MALLOC_ARENA_MAX")
    parser.add_argument("--soak-seconds", type=float, default=0.0, help="soak: run this long")
    parser.add_argument("--sample-seconds", type=float, default=30.0, help="soak: RSS period")
    parser.add_argument("--rate", type=float, default=0.0, help="soak: requests/s (0: no pause)")
    parser.add_argument(
        "--server-args", nargs=argparse.REMAINDER, default=[], help="soak: more serve flags"
    )
    parser.add_argument("--work", default=None, help="where the model copies go (default: tmp)")
    args = parser.parse_args()
    work = Path(args.work or Path(tempfile.gettempdir()) / "localembed-server-models")
    work.mkdir(parents=True, exist_ok=True)
    models = build_models(work)
    {"throughput": throughput, "cold": cold, "unload": unload, "soak": soak}[args.what](
        args, models, work
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
