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
import sys
import tempfile
import warnings
from functools import partial
from pathlib import Path
from typing import Any

from localembed.cli.bench_ceiling import flops_per_token, gemm_rates
from localembed.cli.bench_contenders import (
    LOCALEMBED_OPTIONS,
    STREAMED,
    Contender,
    build_contenders,
    static_contender,
)
from localembed.cli.bench_corpora import (
    bench_sentences,
    mixed_documents,
    sts_file,
)
from localembed.cli.bench_measures import (
    bare_forward,
    cosine_gap,
    machine_line,
    peak_rss_mb,
    process_settings,
    query_latencies,
    stream_peak_rss,
    sts_score,
    time_call,
)
from localembed.cli.bench_options import ALL_CONTENDERS, add_arguments
from localembed.cli.bench_random_base import build_random_base
from localembed.cli.bench_report import print_summary, print_table
from localembed.config import EncoderConfig
from localembed.errors import InputError


def _corpora(args: argparse.Namespace) -> tuple[dict[str, list[str]], list[str]]:
    sentences = bench_sentences(args.data, max(args.short, args.queries, 1000))
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

    print_table(results, baseline.name)
    print(
        f"# fp32 GEMM ceiling in this process: {ceiling:.0f} GFLOP/s ("
        + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
        + f"); % ceil counts 2 FLOPs per Linear weight per real token; bare forward query "
        f"{1000 * bare:.2f} ms"
    )
    busy = _contention(args, corpora["mixed"], reference_encoder)
    print_summary(results, busy, baseline.name)
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


def _contention(args: argparse.Namespace, mixed: list[str], encoder: Any) -> list[dict[str, Any]]:
    from localembed.cli import contention

    count = getattr(args, "contention", 0)
    if not count:
        return []
    texts = mixed[:count]
    results = contention.measure(str(encoder.source.path), texts, args.rounds)
    return contention.report(results, len(texts), busy=1)


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
