"""Throughput beside a competing busy process: the case of shared machines, CI and containers.

Each contender runs in its own worker process, which imports torch first (as any LangChain or
LlamaIndex application does), with its own process settings (what its users get):
sentence-transformers and the localembed library (its defaults, and with adaptive threads
switched the other way: ``LOCALEMBED_ADAPTIVE_THREADS``) with the environment as the user has
it, and localembed as the CLI and the server run it
(:func:`localembed.hardware.configure_process`: a passive OpenMP wait policy, oneDNN Linear
layers on AMD AVX-512). One extra process burns a
CPU the whole time. The workers take turns (one encodes while the others wait on a pipe), round
by round, so all see the same machine; the median round counts.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from localembed import hardware
from localembed.errors import RuntimeFault

WORKER = """
import json, os, sys, time
import torch  # first, as in any LangChain or LlamaIndex application: OpenMP has its settings
spec = json.loads(sys.argv[1])
texts = json.loads(open(spec["corpus"], encoding="utf-8").read())
if spec["kind"] == "sentence-transformers":
    from sentence_transformers import SentenceTransformer
    encode = SentenceTransformer(spec["path"], device="cpu").encode
else:
    import logging
    logging.getLogger("localembed").setLevel(logging.ERROR)
    from localembed import get_encoder
    encode = get_encoder(model=spec["path"], **spec["options"]).encode
encode(texts[:16])
print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    encode(texts)
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
"""

BURNER = "while True:\n    pass\n"


@dataclass
class Worker:
    """One contender's process."""

    name: str
    process: subprocess.Popen[str]
    threads: int = 0

    def ask(self) -> dict[str, Any]:
        """Send one request, return the worker's JSON answer."""
        stdin = _pipe(self.process.stdin)
        stdin.write("run\n")
        stdin.flush()
        return self.read()

    def read(self) -> dict[str, Any]:
        """The worker's next JSON line (an error if it died)."""
        line = _pipe(self.process.stdout).readline()
        if not line:
            self.process.wait()
            stderr = self.process.stderr.read() if self.process.stderr else ""
            msg = f"contention worker {self.name!r} exited: {stderr.strip()[-500:]}"
            raise ContentionWorkerError(msg)
        answer: dict[str, Any] = json.loads(line)
        return answer


class ContentionWorkerError(RuntimeFault, RuntimeError):
    """A contention worker process exited before answering."""


def _pipe(stream: IO[str] | None) -> IO[str]:
    if stream is None:
        msg = "a contention worker was started without pipes"
        raise RuntimeError(msg)
    return stream


def worker_environments() -> dict[str, dict[str, str]]:
    """Each contender's environment: the user's (less what configure_process set), or the CLI's."""
    user = {k: v for k, v in os.environ.items() if k not in hardware.configured()}
    cli = dict(user)
    for name, value in hardware.recommended_settings().items():
        cli.setdefault(name, value)
    switched = dict(user)
    switched[hardware.ADAPTIVE_THREADS] = "0" if hardware.ADAPTIVE_DEFAULT else "1"
    return {
        "sentence-transformers": user,
        "localembed fp32 (library defaults)": user,
        ADAPTIVE_CONTENDER: switched,
        "localembed fp32 (CLI/server settings)": cli,
    }


ADAPTIVE_CONTENDER = (
    f"localembed fp32 ({hardware.ADAPTIVE_THREADS}={0 if hardware.ADAPTIVE_DEFAULT else 1})"
)
"""The library defaults with adaptive threads switched the other way than by default."""

WORKER_OPTIONS: dict[str, dict[str, Any]] = {}
"""Encoder options of a contender (the others: the defaults)."""


def measure(model_path: str, texts: list[str], rounds: int, *, busy: int = 1) -> dict[str, Any]:
    """Seconds per pass over ``texts`` for each contender, quiet and beside ``busy`` burners.

    Returns per contender: ``quiet_s`` (one round without burners), ``busy_s`` (each round
    with them), the worker's torch threads and its process settings.
    """
    environments = worker_environments()
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        environments.pop("sentence-transformers")
    workers: list[Worker] = []
    burners: list[subprocess.Popen[bytes]] = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="localembed-contention-") as folder:
        corpus = Path(folder) / "corpus.json"
        corpus.write_text(json.dumps(texts), encoding="utf-8")
        try:
            for name, env in environments.items():
                kind = "sentence-transformers" if name == "sentence-transformers" else "localembed"
                spec = {
                    "kind": kind,
                    "path": model_path,
                    "corpus": str(corpus),
                    "options": WORKER_OPTIONS.get(name, {}),
                }
                process = subprocess.Popen(
                    [sys.executable, "-c", WORKER, json.dumps(spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                workers.append(Worker(name, process))
            for worker in workers:
                worker.threads = int(worker.read()["threads"])
            quiet = {worker.name: float(worker.ask()["seconds"]) for worker in workers}
            burners = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(busy)]
            busy_s: dict[str, list[float]] = {worker.name: [] for worker in workers}
            for _ in range(rounds):
                for worker in workers:
                    busy_s[worker.name].append(float(worker.ask()["seconds"]))
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()
            for worker in workers:
                worker.process.kill()
                worker.process.wait()
    for worker in workers:
        env = environments[worker.name]
        results[worker.name] = {
            "quiet_s": quiet[worker.name],
            "busy_s": busy_s[worker.name],
            "threads": worker.threads,
            "settings": {
                name: env.get(name, "unset")
                for name in (
                    hardware.WAIT_POLICY,
                    hardware.LINEAR_KERNEL,
                    hardware.ADAPTIVE_THREADS,
                )
            },
        }
    return results


def report(results: dict[str, Any], docs: int, busy: int) -> list[dict[str, Any]]:
    """Rows of docs/s (median busy round), the ratio to sentence-transformers and the drop."""
    baseline = results.get("sentence-transformers")
    rows = []
    for name, result in results.items():
        busy_median = statistics.median(result["busy_s"])
        row = {
            "name": name,
            "quiet_docs_per_s": docs / result["quiet_s"],
            "busy_docs_per_s": docs / busy_median,
            "busy_ratio": (statistics.median(baseline["busy_s"]) / busy_median)
            if baseline
            else None,
            "threads": result["threads"],
            "settings": result["settings"],
        }
        rows.append(row)
    print(
        f"# beside {busy} CPU-burning process(es), {docs} mixed documents, median of "
        f"{len(next(iter(results.values()))['busy_s'])} rounds; each contender in its own process"
    )
    print(f"{'contender':<48} {'quiet docs/s':>12} {'busy docs/s':>12} {'x ST':>6}  settings")
    for row in rows:
        ratio = "-" if row["busy_ratio"] is None else f"{row['busy_ratio']:.2f}"
        settings = ", ".join(f"{k}={v}" for k, v in row["settings"].items())
        print(
            f"{row['name']:<48} {row['quiet_docs_per_s']:>12.1f} {row['busy_docs_per_s']:>12.1f} "
            f"{ratio:>6}  threads {row['threads']}, {settings}"
        )
    return rows
