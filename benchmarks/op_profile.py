"""Where the time goes: an operator profile of localembed's fp32 path on the mixed corpus.

    python benchmarks/op_profile.py [--data ../shared/data/stsbenchmark] [--random-base]

Prints, for one pass over the benchmark's mixed-length corpus: tokenization, and the
transformer's time by operator family (matrix products, attention, layer norm, GELU, the
rest) with the rate the matrix products reach against the fp32 GEMM ceiling measured in the
same process; and the padding each batching policy adds (localembed's token budget vs
sentence-transformers' 32 texts per batch, both sorted by length). This is the profile behind
the README's performance analysis.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# torch's profiler records the calling thread's operators only, not those of the row-split
# workers (localembed.row_split): profile the unsplit pass on torch's intra-op threads.
os.environ.setdefault("LOCALEMBED_SPLIT_ROWS", "0")

from localembed.cli.bench_ceiling import gemm_ceiling
from localembed.cli.bench_corpora import bench_sentences, mixed_documents
from localembed.cli.bench_measures import padded_tokens
from localembed.cli.bench_random_base import build_random_base

FAMILIES = {
    "matrix products": (
        "aten::addmm",
        "aten::mm",
        "aten::bmm",
        "aten::matmul",
        "mkldnn::_linear_pointwise",  # oneDNN Linear (LOCALEMBED_LINEAR_KERNEL)
    ),
    "attention": ("scaled_dot_product", "aten::softmax", "aten::_softmax"),
    "layer norm": ("layer_norm",),
    "gelu": ("aten::gelu",),
}


def family(name: str) -> str:
    for label, fragments in FAMILIES.items():
        if any(fragment in name for fragment in fragments):
            return label
    return "other (adds, copies, views, embeddings)"


def matmul_flops(name: str, shapes: list[Any]) -> float:
    """FLOPs of one addmm/mm/bmm call from its recorded input shapes."""
    try:
        if name == "aten::addmm":  # bias, (m, k), (k, n)
            (m, k), (_, n) = shapes[1], shapes[2]
            return 2.0 * m * k * n
        if name == "aten::mm":
            (m, k), (_, n) = shapes[0], shapes[1]
            return 2.0 * m * k * n
        if name == "mkldnn::_linear_pointwise":  # (..., k) input, (n, k) weight
            *rows, k = shapes[0]
            n = shapes[1][0]
            return 2.0 * math.prod(rows) * k * n
        if name == "aten::bmm":
            (b, m, k), (_, _, n) = shapes[0], shapes[1]
            return 2.0 * b * m * k * n
    except (ValueError, TypeError, IndexError):
        return 0.0
    return 0.0


def padding(lengths: list[int], groups: list[list[int]]) -> float:
    return padded_tokens(lengths, groups) / sum(lengths) - 1


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from localembed import get_encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="STS Benchmark folder")
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--random-base", action="store_true", help="a bge-base-sized model")
    args = parser.parse_args()
    sentences = bench_sentences(args.data)
    documents = mixed_documents(sentences, args.docs)
    model = None
    if args.random_base:
        model = str(build_random_base(Path("/tmp/localembed-profile-random-base")))
    encoder = get_encoder(model=model)
    encoder.encode(documents[:20])  # warm-up

    began = time.perf_counter()
    tokenized = encoder.tokenize(documents)
    tokenize_s = time.perf_counter() - began
    lengths = [len(ids) for ids in tokenized.ids]
    ours = encoder.batches(tokenized.ids)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    theirs = [order[i : i + 32] for i in range(0, len(order), 32)]

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        began = time.perf_counter()
        encoder.encode(documents)
        total_s = time.perf_counter() - began
    by_family: dict[str, float] = defaultdict(float)
    flops = 0.0
    matmul_s = 0.0
    for event in profiler.key_averages(group_by_input_shape=True):
        seconds = event.self_cpu_time_total / 1e6
        label = family(event.key)
        by_family[label] += seconds
        if label == "matrix products":
            flops += event.count * matmul_flops(event.key, event.input_shapes)
            matmul_s += seconds
    ceiling = gemm_ceiling()
    profiled = sum(by_family.values())

    print(f"# {encoder.source.name}: {len(documents)} documents, {sum(lengths)} tokens")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, fp32")
    print(f"tokenization            {1000 * tokenize_s:8.1f} ms")
    print(f"encode (profiled)       {1000 * total_s:8.1f} ms  (profiler overhead included)")
    for label, seconds in sorted(by_family.items(), key=lambda item: -item[1]):
        print(f"  {label:<38} {1000 * seconds:8.1f} ms  {100 * seconds / profiled:5.1f}%")
    rate = flops / matmul_s / 1e9 if matmul_s else 0.0
    print(
        f"matrix products: {flops / 1e9:.1f} GFLOP at {rate:.0f} GFLOP/s = "
        f"{100 * rate / ceiling:.0f}% of the {ceiling:.0f} GFLOP/s GEMM ceiling"
    )
    packed = "packed: the Linear layers run real tokens only" if encoder.runtime.unpadded else ""
    print(
        f"padding in planned batches ({packed or 'padded'}): localembed "
        f"{100 * padding(lengths, ours):.1f}% "
        f"({len(ours)} batches); 32 texts per batch {100 * padding(lengths, theirs):.1f}% "
        f"({len(theirs)} batches)"
    )


if __name__ == "__main__":
    main()
