"""Throughput, latency, memory and accuracy of localembed against sentence-transformers.

All contenders run in one process, interleaved round by round, on the same model and texts,
so ratios are fair on a noisy machine. Absolute numbers are for this run only.

    localembed bench [--data ../shared/data/stsbenchmark] [--json out.json]
    python benchmarks/throughput.py --data ../shared/data/stsbenchmark   (the same options)

Figures: tokens/s and docs/s per corpus (short sentences; a mixed-length document corpus of
16-512 tokens with a long tail), the ratio to sentence-transformers, the share of the fp32
matrix-multiply ceiling measured in this process, median single-query latency against a bare
``model(**inputs)`` forward, max |1 - cosine| against fp32 vectors, STS Benchmark Spearman
(with ``--data``), and peak RSS of streaming many short documents (each in a fresh subprocess).

Without ``--data`` the sentences are generated (:func:`builtin_sentences`) and the STS score is
skipped. sentence-transformers is an optional contender: without it, it is skipped with a note
and ratios are taken against the first contender.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from localembed.cli.bench_corpora import (
    builtin_sentences,
    mixed_documents,
    read_pairs,
    sts_file,
)
from localembed.cli.bench_options import ALL_CONTENDERS, SENTENCE_TRANSFORMERS, add_arguments
from localembed.config import EncoderConfig
from localembed.errors import InputError

Encode = Callable[[list[str]], np.ndarray]

LOCALEMBED_OPTIONS: dict[str, dict[str, Any]] = {
    "localembed fp32": {},  # the defaults (backend="torch"; "auto" is "localembed onnx fp32" here)
    "localembed torch fp32": {"backend": "torch"},
    "localembed int8 (torch)": {"backend": "torch", "quantize": "int8"},
    "localembed bf16": {"dtype": "bfloat16"},
    "localembed onnx fp32": {"backend": "onnx"},
    "localembed onnx int8": {"backend": "onnx", "quantize": "int8"},
}
"""localembed contenders: name -> get_encoder options."""

STREAMED = ("localembed fp32", "localembed onnx int8")
"""Contenders whose streaming peak RSS is measured (when they run)."""


@dataclass
class Contender:
    """One way to embed: a batch function and a single-query function, and their timings."""

    name: str
    encode: Encode
    query: Callable[[str], Any]
    seconds: dict[str, list[float]] = field(default_factory=dict)


GEMM_SHAPES = [(2048, 384, 1536), (2048, 1536, 384), (1024, 1024, 1024), (2048, 768, 3072)]
"""(rows, inner, columns) of the ceiling's matrix products: transformer Linear shapes."""


def gemm_ceiling(seconds: float = 2.0) -> float:
    """Best fp32 GFLOP/s of torch's matrix products on transformer shapes, in this process.

    The best of torch's default (MKL on x86) and oneDNN, so that on CPUs where MKL leaves
    kernels unused (AMD with AVX-512) the ceiling is the machine's, not MKL's.
    """
    return max(gemm_rates(seconds).values())


def gemm_rates(seconds: float = 2.0) -> dict[str, float]:
    """Best fp32 GFLOP/s over :data:`GEMM_SHAPES` of each kernel: "mkl" (torch.mm), "onednn"."""
    import torch

    from localembed.onednn import onednn_available

    rates: dict[str, float] = {}
    for m, k, n in GEMM_SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        weight = b.t().contiguous()
        kernels: dict[str, Callable[[], Any]] = {"mkl": partial(torch.mm, a, b)}
        if onednn_available():
            kernels["onednn"] = partial(
                torch.ops.mkldnn._linear_pointwise, a, weight, None, "none", [], ""
            )
        for name, kernel in kernels.items():
            kernel()
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 4 / len(kernels):
                kernel()
                count += 1
            rate = 2 * m * k * n * count / (time.perf_counter() - start) / 1e9
            rates[name] = max(rates.get(name, 0.0), rate)
    return rates


def flops_per_token(model_config: Any) -> float:
    """Linear-layer FLOPs per real token: 2 per weight of the layers' matrix products.

    Attention's own products (and padding) are not counted: the share of the GEMM ceiling
    is useful work only.
    """
    hidden = model_config.hidden_size
    layers = model_config.num_hidden_layers
    inner = model_config.intermediate_size
    return float(2.0 * layers * (4 * hidden * hidden + 2 * hidden * inner))


RANDOM_BASE_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "vocab_size": 30522,
}
"""BERT-base sizes (those of bge-base-en-v1.5 / e5-base / all-mpnet-base), for ``--random-base``."""


def build_random_base(target: Path, seed: int = 0, sizes: dict[str, Any] | None = None) -> Path:
    """Write a BERT-base-sized model with random weights and the default model's tokenizer.

    A sentence-transformers directory like bge-base-en-v1.5's (CLS pooling, 512 tokens,
    normalized): its vectors are meaningless, its cost per token is a base model's.
    """
    import torch
    from transformers import BertConfig, BertModel

    from localembed.loading import locate_model

    target.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = locate_model(None).path
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(tokenizer_dir / name, target / name)
    torch.manual_seed(seed)
    config = BertConfig(**{**RANDOM_BASE_CONFIG, **(sizes or {})})
    BertModel(config, add_pooling_layer=False).save_pretrained(target)
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(
            [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
        )
    ]
    (target / "modules.json").write_text(json.dumps(modules))
    (target / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    (target / "1_Pooling").mkdir(exist_ok=True)
    (target / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": config.hidden_size, "pooling_mode_cls_token": True})
    )
    (target / "2_Normalize").mkdir(exist_ok=True)
    return target


def build_contenders(model: str | None, names: Sequence[str], notes: list[str]) -> list[Contender]:
    """The named contenders that can run here; the others are skipped with a note."""
    from localembed.encoder import get_encoder

    contenders = []
    path = str(get_encoder(model=model).source.path)
    wanted_st = [name for name in SENTENCE_TRANSFORMERS if name in names]
    sentence_transformer: Any = None
    if wanted_st:
        try:
            from sentence_transformers import SentenceTransformer

            sentence_transformer = SentenceTransformer
        except ImportError:
            notes.append(
                f"{', '.join(wanted_st)} skipped: sentence-transformers is not installed "
                f"(pip install sentence-transformers)"
            )
    if sentence_transformer is not None and "sentence-transformers" in names:
        st = sentence_transformer(path, device="cpu")
        contenders.append(_contender("sentence-transformers", st.encode))
    if sentence_transformer is not None and "sentence-transformers onnx" in names:
        try:
            st_onnx = sentence_transformer(path, device="cpu", backend="onnx")
        except Exception as error:  # reported, not fatal: it needs optimum to export
            notes.append(f"sentence-transformers onnx skipped: {type(error).__name__}: {error}")
        else:
            contenders.append(_contender("sentence-transformers onnx", st_onnx.encode))
    for name, options in LOCALEMBED_OPTIONS.items():
        if name not in names:
            continue
        try:
            encoder = get_encoder(model=model, **options)
        except Exception as error:  # e.g. onnx without its extra: reported, not fatal
            notes.append(f"{name} skipped: {type(error).__name__}: {error}")
            continue
        contenders.append(_contender(name, encoder.encode))
    return contenders


def static_contender(directory: Path | None, notes: list[str]) -> list[Contender]:
    """The contender "localembed static" over a distilled model (``--static DIR``), if given."""
    from localembed.encoder import get_encoder

    if directory is None:
        return []
    try:
        encoder = get_encoder(model=str(directory))
    except Exception as error:  # reported, not fatal
        notes.append(f"localembed static skipped: {type(error).__name__}: {error}")
        return []
    return [_contender("localembed static", encoder.encode)]


def machine_line() -> str:
    """The CPU, its features (the kernels that decide speed) and the usable CPUs."""
    from localembed import hardware

    cpu = hardware.read_cpuinfo()
    features = " ".join(f"{name} {'yes' if has else 'no'}" for name, has in cpu.features().items())
    family = f" family {cpu.family} model {cpu.model}" if cpu.family is not None else ""
    usable = hardware.usable_cpus(quota=hardware.cgroup_cpu_quota())
    return f"machine: {cpu.model_name} ({cpu.vendor}{family}); {features}; {usable} usable CPUs"


def _contender(name: str, encode: Callable[..., Any]) -> Contender:
    # Both libraries take a list of texts (and batch 32 texts per pass by default).
    def batch(texts: list[str]) -> np.ndarray:
        return np.asarray(encode(texts))

    def query(text: str) -> Any:
        return encode([text])

    return Contender(name, batch, query)


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


def _corpora(args: argparse.Namespace) -> tuple[dict[str, list[str]], list[str]]:
    if args.data is not None:
        first, second, _ = read_pairs(sts_file(args.data))
        sentences = list(dict.fromkeys(first + second))
    else:
        sentences = builtin_sentences(max(args.short, args.queries, 1000))
    corpora = {"short": sentences[: args.short], "mixed": mixed_documents(sentences, args.docs)}
    return corpora, sentences[-args.queries :]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark with parsed options; print a table and return the results."""
    names = [name.strip() for name in args.contenders.split(",") if name.strip()]
    unknown = [name for name in names if name not in ALL_CONTENDERS]
    if unknown:
        msg = f"unknown contender {unknown[0]!r}; choose from: {', '.join(ALL_CONTENDERS)}"
        raise InputError(msg)
    if min(args.short, args.docs, args.queries, args.rounds) < 1:
        msg = "--short, --docs, --queries and --rounds must be at least 1"
        raise InputError(msg)
    if args.data is not None:
        sts_file(args.data)  # a bad folder fails now, not after minutes of timing
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.random_base:
        if args.model is not None:
            msg = "--random-base and --model exclude each other"
            raise InputError(msg)
        with tempfile.TemporaryDirectory(prefix="localembed-random-base-") as directory:
            model = str(build_random_base(Path(directory) / "random-bert-base"))
            options = {**vars(args), "model": model, "random_base": False, "random_weights": True}
            return run(argparse.Namespace(**options))
    localembed_logger = logging.getLogger("localembed")
    level = localembed_logger.level
    localembed_logger.setLevel(logging.ERROR)  # truncation of long documents is expected here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _run(args, names)
    finally:
        localembed_logger.setLevel(level)


def _run(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    import torch

    from localembed.encoder import get_encoder

    notes: list[str] = []
    corpora, queries = _corpora(args)
    no_sts = args.data is None or getattr(args, "random_weights", False)
    if args.data is None:
        notes.append("generated sentences (no --data): STS Spearman skipped")
    elif no_sts:
        notes.append("random weights: STS Spearman skipped")
    reference_encoder = get_encoder(model=args.model)
    tokens = {
        name: sum(len(ids) for ids in reference_encoder.tokenize(texts).ids)
        for name, texts in corpora.items()
    }
    contenders = build_contenders(args.model, names, notes)
    contenders += static_contender(getattr(args, "static", None), notes)
    if not contenders:
        msg = "no contender can run here: " + "; ".join(notes)
        raise InputError(msg)
    print(f"# {machine_line()}")
    runtime = getattr(get_encoder(model=args.model).runtime, "name", "torch")
    default_backend = EncoderConfig.model_fields["backend"].default
    print(f"# the defaults (backend={default_backend!r}) run this model on {runtime}")
    print(
        f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}; "
        + ", ".join(f"{k}={v}" for k, v in process_settings().items())
    )
    print(
        f"# corpora: short {len(corpora['short'])} texts / {tokens['short']} tokens, "
        f"mixed {len(corpora['mixed'])} docs / {tokens['mixed']} tokens"
    )
    for note in notes:
        print(f"# {note}")

    rates = gemm_rates()
    for round_index in range(args.rounds):
        for contender in contenders:
            for corpus, texts in corpora.items():
                gc.collect()
                seconds = time_call(partial(contender.encode, texts))
                contender.seconds.setdefault(corpus, []).append(seconds)
        for kernel, rate in gemm_rates(1.0).items():
            rates[kernel] = max(rates[kernel], rate)
        print(f"# round {round_index + 1}/{args.rounds} done")

    ceiling = max(rates.values())
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
            flops = flops_per_token(reference_encoder.model_config)
            row[f"{corpus}_ceiling_pct"] = 100 * flops * tokens[corpus] / best / 1e9 / ceiling
        gaps = [
            cosine_gap(vectors, reference[corpus])
            for corpus, texts in corpora.items()
            if (vectors := contender.encode(texts)).shape == reference[corpus].shape
        ]
        row["max_1_minus_cos"] = max(gaps) if gaps else None  # None: another width (static)
        row["query_ms"] = 1000 * latency[contender.name]
        row["query_vs_bare_forward"] = row["query_ms"] / (1000 * bare)
        row["sts_spearman"] = None if no_sts else sts_score(contender.encode, args.data)
        results.append(row)

    _print_table(results, baseline.name)
    print(
        f"# fp32 GEMM ceiling in this process: {ceiling:.0f} GFLOP/s ("
        + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
        + f"); % ceil counts 2 FLOPs per Linear weight per real token; bare forward query "
        f"{1000 * bare:.2f} ms"
    )
    busy = _contention(args, corpora["mixed"], reference_encoder)
    _summary(results, busy, baseline.name)
    stream = _stream(args, contenders)
    report = {
        "results": results,
        "baseline": baseline.name,
        "data": str(args.data) if args.data is not None else None,
        "notes": notes,
        "gemm_ceiling_gflops": ceiling,
        "gemm_rates_gflops": rates,
        "process_settings": process_settings(),
        "contention": busy,
        "bare_query_ms": 1000 * bare,
        "tokens": tokens,
        "stream": stream,
        "threads": torch.get_num_threads(),
        "peak_rss_mb": peak_rss_mb(),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def process_settings() -> dict[str, str]:
    """This process's thread policy and Linear kernel (as ``localembed info --hardware``)."""
    from localembed import hardware

    return {
        hardware.WAIT_POLICY: os.environ.get(hardware.WAIT_POLICY, "unset"),
        "Linear kernel": hardware.linear_kernel(),
    }


def _contention(args: argparse.Namespace, mixed: list[str], encoder: Any) -> list[dict[str, Any]]:
    from localembed.cli import contention

    count = getattr(args, "contention", 0)
    if not count:
        return []
    texts = mixed[:count]
    results = contention.measure(str(encoder.source.path), texts, args.rounds)
    return contention.report(results, len(texts), busy=1)


def _summary(results: list[dict[str, Any]], busy: list[dict[str, Any]], baseline: str) -> None:
    """One line per goal of the performance issue: measured value and goal."""
    if baseline != "sentence-transformers":
        return
    rows = {row["name"]: row for row in results}
    fp32 = rows.get("localembed fp32")
    lines = []
    if fp32 is not None:
        lines.append(
            f"fp32: {fp32['mixed_ratio']:.2f}x sentence-transformers (mixed), "
            f"{fp32['mixed_ceiling_pct']:.0f}% of the GEMM ceiling (goal 80%), "
            f"max 1-cos {fp32['max_1_minus_cos']:.1e}"
        )
    static = rows.get("localembed static")
    if static is not None:
        drop = (
            f", STS {static['sts_spearman'] - fp32['sts_spearman']:+.2f} vs fp32"
            if fp32 is not None
            and static["sts_spearman"] is not None
            and fp32["sts_spearman"] is not None
            else ""
        )
        lines.append(
            f"static (distilled; a trade-off, never the default): {static['mixed_ratio']:.2f}x "
            f"sentence-transformers (mixed){drop}"
        )
    torch_fp32 = rows.get("localembed torch fp32")
    if torch_fp32 is not None:
        lines.append(
            f"fp32 on torch (backend='torch'): {torch_fp32['mixed_ratio']:.2f}x "
            f"sentence-transformers (mixed), {torch_fp32['mixed_ceiling_pct']:.0f}% of the ceiling"
        )
    int8 = [row for name, row in rows.items() if "int8" in name]
    if int8:
        best = max(int8, key=lambda row: row["mixed_ratio"])
        reference_sts = fp32["sts_spearman"] if fp32 is not None else None
        delta = (
            f", STS {best['sts_spearman'] - reference_sts:+.2f} vs fp32"
            if best["sts_spearman"] is not None and reference_sts is not None
            else ""
        )
        lines.append(
            f"fastest int8: {best['name']} {best['mixed_ratio']:.2f}x sentence-transformers "
            f"(mixed; goal 2.0x){delta} (goal within 1.0)"
        )
    for row in busy:
        if row["busy_ratio"] is not None and row["name"] != "sentence-transformers":
            lines.append(
                f"beside a busy process: {row['name']} {row['busy_ratio']:.2f}x "
                f"sentence-transformers (goal 1.3x)"
            )
    for line in lines:
        print(f"# {line}")


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MiB; None where ``resource`` is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _print_table(results: list[dict[str, Any]], baseline: str) -> None:
    ratio = "x ST" if baseline == "sentence-transformers" else "ratio"
    print(
        f"{'contender':<28} {'mixed docs/s':>12} {ratio:>6} {'% ceil':>7} {'short docs/s':>12} "
        f"{ratio:>6} {'query ms':>9} {'x bare':>7} {'max 1-cos':>10} {'STS':>6}"
    )
    for row in results:
        sts = "-" if row["sts_spearman"] is None else f"{row['sts_spearman']:.2f}"
        gap = "-" if row["max_1_minus_cos"] is None else f"{row['max_1_minus_cos']:.1e}"
        print(
            f"{row['name']:<28} {row['mixed_docs_per_s']:>12.1f} {row['mixed_ratio']:>6.2f} "
            f"{row['mixed_ceiling_pct']:>6.0f}% {row['short_docs_per_s']:>12.1f} "
            f"{row['short_ratio']:>6.2f} {row['query_ms']:>9.2f} "
            f"{row['query_vs_bare_forward']:>7.2f} {gap:>10} {sts:>6}"
        )
    if baseline != "sentence-transformers":
        print(f"# ratios against {baseline} (sentence-transformers did not run)")


def _stream(args: argparse.Namespace, contenders: list[Contender]) -> dict[str, Any]:
    stream: dict[str, Any] = {}
    if not args.stream:
        return stream
    for name in STREAMED:
        if any(c.name == name for c in contenders):
            options = {"model": args.model, **LOCALEMBED_OPTIONS[name]}
            stream[name] = s = stream_peak_rss(options, args.stream)
            growth = s["peak_rss_mb"] - s["rss_after_load_mb"]
            print(
                f"# stream {s['docs']:.0f} docs with {name}: peak RSS {s['peak_rss_mb']:.0f} MB, "
                f"after load {s['rss_after_load_mb']:.0f} MB (+{growth:.0f} MB), "
                f"model {s['model_mb']:.0f} MB"
            )
    return stream


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    try:
        run(parser.parse_args(argv))
    except ValueError as error:  # bad options or --data: one line, no traceback
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    return 0
