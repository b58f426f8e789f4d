"""Throughput, latency, memory and accuracy of localembed against sentence-transformers.

All contenders run in one process, interleaved round by round, on the same model and texts,
so ratios are fair on a noisy machine. Absolute numbers are for this run only.

    python benchmarks/throughput.py --data ../shared/data/stsbenchmark [--json out.json]
    make bench

Figures: tokens/s and docs/s per corpus (short STS sentences; a mixed-length document corpus
of 16-512 tokens with a long tail), the ratio to sentence-transformers, the share of the fp32
matrix-multiply ceiling measured in this process, median single-query latency against a bare
``model(**inputs)`` forward, max |1 - cosine| against fp32 vectors, STS Benchmark Spearman,
and peak RSS of streaming many short documents (each in a fresh subprocess).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stsb import read_pairs

warnings.filterwarnings("ignore")
logging.getLogger("localembed").setLevel(logging.ERROR)  # truncation is expected here
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

Encode = Callable[[list[str]], np.ndarray]

LOCALEMBED_OPTIONS: dict[str, dict[str, Any]] = {
    "localembed fp32": {},
    "localembed int8 (torch)": {"quantize": "int8"},
    "localembed bf16": {"dtype": "bfloat16"},
    "localembed onnx fp32": {"backend": "onnx"},
    "localembed onnx int8": {"backend": "onnx", "quantize": "int8"},
}


@dataclass
class Contender:
    name: str
    encode: Encode
    query: Callable[[str], Any]
    seconds: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""


def gemm_ceiling(seconds: float = 2.0) -> float:
    """Best fp32 GFLOP/s of torch matrix products of transformer-like shapes, in this process."""
    import torch

    best = 0.0
    for m, k, n in [(2048, 384, 1536), (2048, 1536, 384), (1024, 1024, 1024), (2048, 768, 3072)]:
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 4:
            torch.mm(a, b)
            count += 1
        elapsed = time.perf_counter() - start
        best = max(best, 2 * m * k * n * count / elapsed / 1e9)
    return best


def flops_per_token(model_config: Any, mean_length: float) -> float:
    """Forward FLOPs per token: 2 x weights in the layers + attention scores and mixing."""
    hidden = model_config.hidden_size
    layers = model_config.num_hidden_layers
    inner = model_config.intermediate_size
    weights = layers * (4 * hidden * hidden + 2 * hidden * inner)
    attention = layers * 4 * hidden * mean_length
    return 2.0 * weights + attention


def mixed_documents(sentences: list[str], count: int, seed: int = 0) -> list[str]:
    """Documents of 16-512 tokens (log-normal lengths, median ~90 tokens, long tail)."""
    rng = np.random.default_rng(seed)
    words_per_token = 0.75
    documents = []
    for _ in range(count):
        target = int(np.clip(rng.lognormal(mean=np.log(90), sigma=0.8), 16, 512))
        words: list[str] = []
        while len(words) < target * words_per_token:
            words.extend(sentences[int(rng.integers(len(sentences)))].split())
        documents.append(" ".join(words[: int(target * words_per_token)]))
    return documents


def build_contenders(model: str | None, names: list[str]) -> list[Contender]:
    from sentence_transformers import SentenceTransformer

    from localembed import get_encoder

    contenders = []
    path = str(get_encoder(model=model).source.path)
    if "sentence-transformers" in names:
        st = SentenceTransformer(path, device="cpu")
        contenders.append(
            Contender(
                "sentence-transformers",
                lambda texts, st=st: st.encode(texts, batch_size=32, convert_to_numpy=True),
                lambda text, st=st: st.encode([text]),
            )
        )
    if "sentence-transformers onnx" in names:
        try:
            st_onnx = SentenceTransformer(path, device="cpu", backend="onnx")
            contenders.append(
                Contender(
                    "sentence-transformers onnx",
                    lambda texts, st=st_onnx: st.encode(texts, convert_to_numpy=True),
                    lambda text, st=st_onnx: st.encode([text]),
                )
            )
        except Exception as error:  # reported, not fatal: it needs optimum to export
            print(f"# sentence-transformers onnx unavailable: {type(error).__name__}: {error}")
    for name, options in LOCALEMBED_OPTIONS.items():
        if name not in names:
            continue
        try:
            encoder = get_encoder(model=model, **options)
        except Exception as error:
            print(f"# {name} unavailable: {type(error).__name__}: {error}")
            continue
        contenders.append(Contender(name, encoder.encode, lambda text, e=encoder: e.encode([text])))
    return contenders


def time_call(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bare_forward(model: str | None) -> Callable[[str], None]:
    """Tokenizer + a bare ``model(**inputs)`` forward: the floor for one query."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from localembed import get_encoder

    path = get_encoder(model=model).source.path
    tokenizer = AutoTokenizer.from_pretrained(path)
    bare = AutoModel.from_pretrained(path).eval()

    def run(text: str) -> None:
        inputs = tokenizer([text], return_tensors="pt", truncation=True, max_length=256)
        with torch.inference_mode():
            bare(**inputs)

    return run


def query_latencies(
    contenders: list[Contender], bare: Callable[[str], None], queries: list[str]
) -> tuple[dict[str, float], float]:
    """Median seconds per single query, each query run by every contender and the bare
    forward in turn, so all see the same machine state."""
    for query in queries[:5]:
        bare(query)
        for contender in contenders:
            contender.query(query)
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    bare_times = []
    for query in queries:
        bare_times.append(time_call(lambda q=query: bare(q)))
        for contender in contenders:
            times[contender.name].append(time_call(lambda c=contender, q=query: c.query(q)))
    return {k: statistics.median(v) for k, v in times.items()}, statistics.median(bare_times)


def cosine_gap(vectors: np.ndarray, reference: np.ndarray) -> float:
    a = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    return float(np.max(np.abs(1.0 - (a * b).sum(1))))


def sts_score(encode: Encode, data: Path) -> float:
    from scipy.stats import spearmanr

    first, second, gold = read_pairs(data / "sts-test.csv")
    a, b = encode(first), encode(second)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(spearmanr(gold, cosine).statistic * 100)


STREAM_SCRIPT = """
import os, resource, sys, json
os.environ["HF_HUB_OFFLINE"] = "1"
from localembed import get_encoder
options = json.loads(sys.argv[1]); count = int(sys.argv[2])
encoder = get_encoder(**options)
model_bytes = sum(p.numel() * p.element_size() for p in encoder.model.parameters()) if encoder.model is not None else 0
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="STS Benchmark folder")
    parser.add_argument("--model", default=None, help="default: the embedded all-MiniLM-L6-v2")
    parser.add_argument("--short", type=int, default=1000, help="short sentences per round")
    parser.add_argument("--docs", type=int, default=300, help="mixed-length documents per round")
    parser.add_argument("--queries", type=int, default=200, help="single queries for latency")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--stream", type=int, default=100_000, help="docs for the RSS test (0: skip)"
    )
    parser.add_argument(
        "--contenders",
        default=",".join(
            ["sentence-transformers", "sentence-transformers onnx", *LOCALEMBED_OPTIONS]
        ),
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from localembed import get_encoder

    first, second, _ = read_pairs(args.data / "sts-test.csv")
    sentences = list(dict.fromkeys(first + second))
    corpora = {
        "short": sentences[: args.short],
        "mixed": mixed_documents(sentences, args.docs),
    }
    queries = sentences[-args.queries :]
    reference_encoder = get_encoder(model=args.model)
    tokens = {
        name: sum(len(ids) for ids in reference_encoder.tokenize(texts).ids)
        for name, texts in corpora.items()
    }
    mean_length = {name: tokens[name] / len(texts) for name, texts in corpora.items()}
    contenders = build_contenders(args.model, [c.strip() for c in args.contenders.split(",")])
    print(
        f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(
        f"# corpora: short {len(corpora['short'])} texts / {tokens['short']} tokens, "
        f"mixed {len(corpora['mixed'])} docs / {tokens['mixed']} tokens"
    )

    ceiling = gemm_ceiling()
    for round_index in range(args.rounds):
        for contender in contenders:
            for corpus, texts in corpora.items():
                gc.collect()
                seconds = time_call(lambda c=contender, t=texts: c.encode(t))
                contender.seconds.setdefault(corpus, []).append(seconds)
        ceiling = max(ceiling, gemm_ceiling(1.0))
        print(f"# round {round_index + 1}/{args.rounds} done")

    reference = {name: reference_encoder.encode(texts) for name, texts in corpora.items()}
    latency, bare = query_latencies(contenders, bare_forward(args.model), queries)
    baseline = next((c for c in contenders if c.name == "sentence-transformers"), contenders[0])
    results = []
    for contender in contenders:
        row: dict[str, Any] = {"name": contender.name}
        for corpus in corpora:
            best = min(contender.seconds[corpus])
            row[f"{corpus}_docs_per_s"] = len(corpora[corpus]) / best
            row[f"{corpus}_tokens_per_s"] = tokens[corpus] / best
            row[f"{corpus}_ratio"] = min(baseline.seconds[corpus]) / best
            gflops = flops_per_token(reference_encoder.model_config, mean_length[corpus])
            row[f"{corpus}_ceiling_pct"] = 100 * gflops * tokens[corpus] / best / 1e9 / ceiling
        row["max_1_minus_cos"] = max(
            cosine_gap(contender.encode(texts), reference[corpus])
            for corpus, texts in corpora.items()
        )
        row["query_ms"] = 1000 * latency[contender.name]
        row["query_vs_bare_forward"] = row["query_ms"] / (1000 * bare)
        row["sts_spearman"] = sts_score(contender.encode, args.data)
        results.append(row)

    header = (
        f"{'contender':<28} {'mixed docs/s':>12} {'x ST':>6} {'% ceil':>7} {'short docs/s':>12} "
        f"{'x ST':>6} {'query ms':>9} {'x bare':>7} {'max 1-cos':>10} {'STS':>6}"
    )
    print(header)
    for row in results:
        print(
            f"{row['name']:<28} {row['mixed_docs_per_s']:>12.1f} {row['mixed_ratio']:>6.2f} "
            f"{row['mixed_ceiling_pct']:>6.0f}% {row['short_docs_per_s']:>12.1f} "
            f"{row['short_ratio']:>6.2f} {row['query_ms']:>9.2f} {row['query_vs_bare_forward']:>7.2f} "
            f"{row['max_1_minus_cos']:>10.1e} {row['sts_spearman']:>6.2f}"
        )
    print(
        f"# fp32 GEMM ceiling in this process: {ceiling:.0f} GFLOP/s; bare forward query "
        f"{1000 * bare:.2f} ms"
    )

    stream: dict[str, Any] = {}
    if args.stream:
        for name in ["localembed fp32", "localembed onnx int8"]:
            if any(c.name == name for c in contenders):
                options = {"model": args.model, **LOCALEMBED_OPTIONS[name]}
                stream[name] = stream_peak_rss(options, args.stream)
                s = stream[name]
                print(
                    f"# stream {s['docs']} docs with {name}: peak RSS {s['peak_rss_mb']:.0f} MB, "
                    f"after load {s['rss_after_load_mb']:.0f} MB (+{s['peak_rss_mb'] - s['rss_after_load_mb']:.0f} MB), "
                    f"model {s['model_mb']:.0f} MB"
                )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "results": results,
                    "gemm_ceiling_gflops": ceiling,
                    "bare_query_ms": 1000 * bare,
                    "tokens": tokens,
                    "stream": stream,
                    "threads": torch.get_num_threads(),
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
