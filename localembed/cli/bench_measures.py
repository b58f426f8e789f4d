"""``localembed bench``'s measures: timings, query latency, vector gaps, STS, memory, machine.

Each takes what it measures as an argument (a contender, a function, options), so the run in
:mod:`localembed.cli.benchmark` only orders them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from localembed.cli.bench_corpora import read_pairs, sts_file

if TYPE_CHECKING:
    from pathlib import Path

    from localembed.cli.bench_contenders import Contender, Encode

__all__ = [
    "bare_forward",
    "cosine_gap",
    "machine_line",
    "padded_tokens",
    "peak_rss_mb",
    "process_settings",
    "query_latencies",
    "stream_peak_rss",
    "sts_score",
    "time_call",
]


def padded_tokens(lengths: list[int], groups: list[list[int]]) -> int:
    """Tokens the batches ``groups`` (row indices) compute, each padded to its longest row.

    Example:
        >>> padded_tokens([5, 3, 2, 2], [[0, 1], [2, 3]])
        14

    """
    return sum(len(group) * max(lengths[i] for i in group) for group in groups)


def machine_line() -> str:
    """The CPU, its features (the kernels that decide speed) and the usable CPUs."""
    from localembed import hardware

    cpu = hardware.read_cpuinfo()
    features = " ".join(f"{name} {'yes' if has else 'no'}" for name, has in cpu.features().items())
    family = f" family {cpu.family} model {cpu.model}" if cpu.family is not None else ""
    usable = hardware.usable_cpus(quota=hardware.cgroup_cpu_quota())
    return f"machine: {cpu.model_name} ({cpu.vendor}{family}); {features}; {usable} usable CPUs"


def process_settings() -> dict[str, str]:
    """This process's thread policy and Linear kernel (as ``localembed info --hardware``)."""
    from localembed import hardware

    return {
        hardware.WAIT_POLICY: os.environ.get(hardware.WAIT_POLICY, "unset"),
        "Linear kernel": hardware.linear_kernel(),
    }


def time_call(function: Callable[[], Any]) -> float:
    """Seconds one call of ``function`` takes."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bare_forward(model: str | None) -> Callable[[str], None]:
    """Tokenizer + a bare ``model(**inputs)`` forward: the floor for one query."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from localembed.encoder import get_encoder

    encoder = get_encoder(model=model)
    tokenizer = AutoTokenizer.from_pretrained(encoder.source.path)
    bare = AutoModel.from_pretrained(encoder.source.path).eval()
    max_length = encoder.settings.max_length

    def run(text: str) -> None:
        inputs = tokenizer([text], return_tensors="pt", truncation=True, max_length=max_length)
        with torch.inference_mode():
            bare(**inputs)

    return run


def query_latencies(
    contenders: list[Contender], bare: Callable[[str], None], queries: list[str]
) -> tuple[dict[str, float], float]:
    """Median seconds per single query, and that of the bare forward.

    Each query is run by every contender and the bare forward in turn, so all see the same
    machine state.
    """
    for query in queries[:5]:
        bare(query)
        for contender in contenders:
            contender.query(query)
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    bare_times = []
    for query in queries:
        bare_times.append(time_call(partial(bare, query)))
        for contender in contenders:
            times[contender.name].append(time_call(partial(contender.query, query)))
    return {k: statistics.median(v) for k, v in times.items()}, statistics.median(bare_times)


def cosine_gap(vectors: np.ndarray, reference: np.ndarray) -> float:
    """Largest |1 - cosine| between matching rows."""
    a = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    return float(np.max(np.abs(1.0 - (a * b).sum(1))))


def sts_score(encode: Encode, data: Path) -> float:
    """STS Benchmark test Spearman (cosine) x 100."""
    from scipy.stats import spearmanr

    first, second, gold = read_pairs(sts_file(data))
    a, b = encode(first), encode(second)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(spearmanr(gold, cosine).statistic * 100)


STREAM_SCRIPT = """
import os, sys, json
os.environ["HF_HUB_OFFLINE"] = "1"
from localembed import get_encoder
options = json.loads(sys.argv[1]); count = int(sys.argv[2])
encoder = get_encoder(**options)
model = encoder.model
model_bytes = sum(p.numel() * p.element_size() for p in model.parameters()) if model else 0
def high_water_mb():
    # VmHWM belongs to this process image; ru_maxrss would carry the parent's peak over exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
baseline = high_water_mb()
texts = ("a short document number %d about streaming" % i for i in range(count))
chunk, done = [], 0
for text in texts:
    chunk.append(text)
    if len(chunk) == 1000:
        encoder.encode(chunk); done += len(chunk); chunk = []
if chunk:
    encoder.encode(chunk); done += len(chunk)
peak = high_water_mb()
print(json.dumps({"docs": done, "rss_after_load_mb": baseline, "peak_rss_mb": peak,
                  "model_mb": model_bytes / 2**20}))
"""


def stream_peak_rss(options: dict[str, Any], count: int) -> dict[str, float]:
    """Peak RSS while embedding ``count`` short documents in chunks, in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", STREAM_SCRIPT, json.dumps(options), str(count)],
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MiB; None where ``resource`` is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
