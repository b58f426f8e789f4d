"""`localembed serve` against a peer server, interleaved rounds, same model, same client.

Both servers run at once on free loopback ports, serving the same model directory on the
CPU with torch's default threads; each round runs every load point against one, then the
other (the order alternates by round), so that a shared machine's changing load falls on
both. The client is ``server_models.load``: ``--processes`` client processes (httpx), each
client sending one request of ``batch`` texts at a time to ``POST /embeddings``.

The peer (``--against``):

- ``infinity``: infinity's ``v2`` command (``--infinity``: its ``infinity_emb`` script, in its
  own virtual environment: it pins older numpy, transformers and sentence-transformers),
  torch engine, no disk cache.
- ``heap-off`` / ``heap-mmap``: ``localembed serve`` itself with ``LOCALEMBED_HEAP=off``
  (glibc's defaults: the price of bounding the RSS) or ``=mmap`` (a fixed 128 KiB mmap
  threshold, the policy before ``trim``); the contender ``localembed`` runs the default,
  ``trim``.
- ``keep-alive-5``: ``localembed serve --keep-alive 5`` (uvicorn's default, the setting before
  65 s), to count the connection errors each setting gets at volume.
- ``baseline``: ``localembed serve`` from another checkout (``--baseline``: a ``git worktree``
  of the commit to compare with), in the same virtual environment: a change's A/B.

    python benchmarks/server_vs_infinity.py --infinity /tmp/infvenv/bin/infinity_emb
    python benchmarks/server_vs_infinity.py --against heap-off --points 1x1 16x1
    git worktree add /tmp/base HEAD~1
    python benchmarks/server_vs_infinity.py --against baseline --baseline /tmp/base

A point is ``CLIENTSxTEXTS`` (``64x1``: 64 clients of one text each); each runs with every
``--processes`` count (fewer processes than clients only). Prints one table: requests/s,
p50 and p99 ms, errors (non-200 answers and transport errors, such as a ``ReadError``) for
each server, the ratio of requests/s, and the load averages before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import sysconfig
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_models import LOCALEMBED_SERVE, Server, load

SERVED_NAME = "minilm"
"""The model id both servers answer to."""


def start(name: str, args: argparse.Namespace, model: str) -> Server:
    """Start one contender serving ``model`` as ``SERVED_NAME``."""
    if name == "infinity":
        options = ["--model-id", model, "--served-model-name", SERVED_NAME]
        options += ["--engine", "torch", "--device", "cpu", "--host", "127.0.0.1"]
        options += ["--no-vector-disk-cache", "--log-level", "warning"]
        environment = {"DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
        return Server(*options, env=environment, program=(args.infinity, "v2"))
    options = ["--model", model, "--model-name", SERVED_NAME, "--device", "cpu"]
    if name == "baseline":
        # No site initialisation: the editable install's import hook would load this
        # checkout's localembed instead of the baseline's, which leads the path.
        packages = sysconfig.get_paths()["purelib"]
        return Server(
            *options,
            env={"PYTHONPATH": f"{args.baseline}{os.pathsep}{packages}"},
            program=(sys.executable, "-S", *LOCALEMBED_SERVE[1:]),
            cwd=args.baseline,
        )
    if name == "keep-alive-5":
        options += ["--keep-alive", "5"]
    policy = name.removeprefix("heap-") if name.startswith("heap-") else "trim"
    return Server(*options, env={"LOCALEMBED_HEAP": policy}, program=LOCALEMBED_SERVE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--against",
        choices=["infinity", "heap-off", "heap-mmap", "keep-alive-5", "baseline"],
        default="infinity",
    )
    parser.add_argument("--infinity", default=None, help="infinity's infinity_emb script")
    parser.add_argument("--baseline", default=None, help="the baseline checkout's root")
    parser.add_argument("--model", default=None, help="model directory (default: embedded)")
    parser.add_argument(
        "--points", nargs="+", default=["1x1", "16x1", "64x1", "8x32"], help="CLIENTSxTEXTS"
    )
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--pause",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="each client waits a uniform LOW-HIGH s after every answer (idle connections)",
    )
    args = parser.parse_args()
    if args.against == "infinity" and not args.infinity:
        parser.error("--against infinity needs --infinity PATH/TO/infinity_emb")
    if args.against == "baseline" and not args.baseline:
        parser.error("--against baseline needs --baseline PATH/TO/CHECKOUT")
    from localembed.loading import locate_model

    model = args.model or str(locate_model(None).path)
    names = ["localembed", args.against]
    points = []
    for point in args.points:
        clients, texts = (int(part) for part in point.split("x"))
        points += [(clients, texts, n) for n in args.processes if n == 1 or n < clients]
    before = os.getloadavg()
    servers = {}
    try:
        for name in names:
            servers[name] = start(name, args, model)
        results: dict[tuple[str, int, int, int], list[dict[str, float]]] = {}
        for round_index in range(args.rounds):
            for clients, texts, processes in points:
                order = names if round_index % 2 == 0 else names[::-1]
                for name in order:
                    urls = {SERVED_NAME: servers[name].url}
                    got = load(
                        urls, clients, processes, args.warmup, args.duration, texts, args.pause
                    )
                    results.setdefault((name, clients, texts, processes), []).append(got)
        rss = {name: server.rss() for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    after = os.getloadavg()
    print(
        f"{args.rounds} interleaved rounds of {args.duration:g} s measured per point and "
        f"server (after {args.warmup:g} s warm-up); load average (1/5/15 min) before "
        f"{before[0]:.1f}/{before[1]:.1f}/{before[2]:.1f}, after "
        f"{after[0]:.1f}/{after[1]:.1f}/{after[2]:.1f}"
    )
    if args.pause:
        print(f"each client paused {args.pause[0]:g}-{args.pause[1]:g} s after every answer")
    short = {"localembed": "le", args.against: "peer"}
    header = f"{'clients x texts':<16} {'procs':>5}"
    for name in names:
        header += f" {short[name] + ' req/s':>11} {'p50':>6} {'p99':>6} {'err':>4}"
    print(f"le: localembed serve; peer: {args.against}; p50/p99 in ms")
    print(header + f" {'le/peer':>8}")
    for clients, texts, processes in points:
        line = f"{f'{clients} x {texts}':<16} {processes:>5}"
        rates = []
        for name in names:
            runs = results[(name, clients, texts, processes)]
            rate = statistics.mean(run["rps"] for run in runs)
            rates.append(rate)
            p50 = statistics.mean(run["p50"] for run in runs)
            p99 = max(run["p99"] for run in runs)
            errors = sum(run["errors"] for run in runs)
            line += f" {rate:>11.1f} {p50:>6.0f} {p99:>6.0f} {errors:>4.0f}"
        ratio = rates[0] / rates[1] if rates[1] else float("inf")
        print(line + f" {ratio:>8.2f}")
    print("p50: mean over rounds; p99: the worst round's; err: all rounds' errors")
    print("RSS MiB at the end: " + ", ".join(f"{n} {rss[n] / 2**20:.0f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
