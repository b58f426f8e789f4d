"""bge-m3-sized encoder: peak memory and throughput on long documents, per dtype and length.

    python benchmarks/m3_memory.py [--docs 1] [--lengths 512 2048] [--dtypes float32 bfloat16]
        [--max-batch-tokens 8192] [--outputs dense,sparse] [--device cpu] [--json results.json]

The defaults took 7 minutes on 2 shared CPU cores (283 s of CPU time), most of it bfloat16,
which is many times slower than float32 on CPUs without native bfloat16. 8192-token
documents are opt-in (``--lengths 8192``): about 4 minutes per document in float32 there.

The model has bge-m3's shape with random weights: XLMRobertaModel with 24 layers, hidden 1024,
16 heads, intermediate 4096, vocabulary 250002, 8194 positions, plus random
``sparse_linear.pt`` and ``colbert_linear.pt`` heads. It is written once per dtype (in that
dtype, safetensors) into a temporary folder (or --model-dir, reused when present) whose name
contains "bge-m3", so the bge-m3 preset applies (cls pooling, 8192 tokens).

Documents are text, embedded through the public path ``get_encoder(model=dir, dtype=...,
max_batch_tokens=...).encode_m3(docs, ...)`` (tokenization included in the time). The
tokenizer is the tests' small trained Unigram tokenizer (tests/model_factory.py). Each
document is a random sequence of words that the tokenizer keeps as one token each, so a
document of length N has exactly N tokens with <s> and </s> (checked).

Every (dtype, length) runs in a fresh subprocess, so peaks do not mix. Reported per run:
``model_bytes`` (parameters of the transformer and both heads, in that dtype),
``peak_rss`` (the process's VmHWM: model loading included; every weight is read once after
loading, so the whole model is resident even where the weights are memory-mapped and the
small tokenizer would leave most embedding rows untouched), ``peak_rss_encode`` (VmHWM
reset through /proc/self/clear_refs after loading and a short warm-up, so: the encoding
alone), ``gpu_peak`` (torch.cuda.max_memory_allocated, on CUDA), throughput in tokens/s
and docs/s over the measured call, and ``within_budget``: peak_rss <= model_bytes + 2 GB
(2e9 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BGE_M3_SHAPE = {
    "vocab_size": 250002,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "max_position_embeddings": 8194,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "layer_norm_eps": 1e-5,
}
BUDGET_EXTRA = 2_000_000_000
"""Peak RSS must stay within model size + this (2 GB)."""


# -- model ----------------------------------------------------------------------------------


def build_models(root: Path, dtypes: list[str], layers: int) -> dict[str, Path]:
    """Write the random bge-m3-shaped model once per dtype; reuse folders that exist."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from tests import model_factory

    targets = {d: root / f"bge-m3-random-{layers}l-{d}" for d in dtypes}
    missing = {d: p for d, p in targets.items() if not (p / "colbert_linear.pt").is_file()}
    if not missing:
        return targets
    tokenizer_dir = root / "tokenizer-source"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        model_factory.build_tiny_xlm_roberta(tokenizer_dir, with_m3_heads=False)
    config = XLMRobertaConfig(**{**BGE_M3_SHAPE, "num_hidden_layers": layers})
    torch.manual_seed(0)
    print(f"building a random {layers}-layer bge-m3-shaped model ...", file=sys.stderr)
    model = XLMRobertaModel(config).eval()
    colbert = torch.nn.Linear(1024, 1024)
    sparse = torch.nn.Linear(1024, 1)
    for dtype, target in missing.items():
        target.mkdir(parents=True, exist_ok=True)
        model.to(getattr(torch, dtype)).save_pretrained(target, safe_serialization=True)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(tokenizer_dir / name, target / name)
        torch.save(colbert.state_dict(), target / "colbert_linear.pt")
        torch.save(sparse.state_dict(), target / "sparse_linear.pt")
    return targets


def single_token_words(tokenizer: Any) -> list[str]:
    """Words the tokenizer turns into exactly one token (with <s> and </s>: three)."""
    words = []
    for piece in tokenizer.get_vocab():
        word = piece[1:] if piece.startswith("▁") else ""
        if word.isalpha() and len(tokenizer(word)["input_ids"]) == 3:
            words.append(word)
    return sorted(words)


def make_documents(tokenizer: Any, length: int, count: int, seed: int) -> list[str]:
    """``count`` documents of exactly ``length`` tokens (<s> and </s> included)."""
    words = single_token_words(tokenizer)
    rng = random.Random(seed)
    docs = [" ".join(rng.choices(words, k=length - 2)) for _ in range(count)]
    for doc in docs:
        got = len(tokenizer(doc)["input_ids"])
        if got != length:
            msg = f"a document has {got} tokens, not {length}"
            raise RuntimeError(msg)
    return docs


# -- one measurement (in its own process) ---------------------------------------------------


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss() -> int:
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Load the model, embed ``args.docs`` documents of ``args.length`` tokens, report."""
    import torch

    from localembed import get_encoder

    outputs = {name: True for name in args.outputs.split(",")}
    start = time.perf_counter()
    encoder = get_encoder(
        model=args.model,
        dtype=args.dtype,
        device=args.device,
        max_batch_tokens=args.max_batch_tokens,
        batch_size=args.batch_size,
    )
    heads = [encoder.load_head(name) for name in ("sparse", "colbert")]
    load_s = time.perf_counter() - start
    parameters = [
        *encoder.model.parameters(),
        *(p for h in heads if h is not None for p in h.parameters()),
    ]
    model_bytes = sum(p.numel() * p.element_size() for p in parameters)
    with torch.no_grad():
        # Weights may stay memory-mapped from the safetensors file, and a small tokenizer
        # never reads most embedding rows: read every weight so the whole model is resident.
        for parameter in parameters:
            parameter.sum()
    docs = make_documents(encoder.tokenizer, args.length, args.docs, seed=args.length)
    encoder.encode_m3(make_documents(encoder.tokenizer, 16, 1, seed=0), **outputs)  # warm-up
    rss_after_load = _status_bytes("VmRSS")
    peak_load = _peak_rss()
    reset = _reset_peak()
    cuda = encoder.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = encoder.encode_m3(docs, **outputs)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak_encode = _peak_rss() if reset else None
    peak_rss = max(peak_load, _peak_rss())
    assert len(result) == len(docs)
    return {
        "dtype": args.dtype,
        "length": args.length,
        "docs": args.docs,
        "outputs": args.outputs,
        "device": str(encoder.device),
        "threads": torch.get_num_threads(),
        "max_batch_tokens": args.max_batch_tokens,
        "model_bytes": model_bytes,
        "load_s": round(load_s, 2),
        "encode_s": round(seconds, 3),
        "tokens_per_s": round(args.length * args.docs / seconds, 1),
        "docs_per_s": round(args.docs / seconds, 4),
        "rss_after_load": rss_after_load,
        "peak_rss": peak_rss,
        "peak_rss_encode": peak_encode,
        "gpu_peak": torch.cuda.max_memory_allocated() if cuda else None,
        "within_budget": peak_rss <= model_bytes + BUDGET_EXTRA,
    }


# -- driver ---------------------------------------------------------------------------------


def _gb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e9:.2f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    """A Markdown table of the results (memory in GB = 1e9 bytes)."""
    print(
        "| dtype | tokens/doc | docs | model GB | peak RSS GB | encode-only peak RSS GB "
        "| GPU peak GB | tokens/s | docs/s | peak <= model + 2 GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dtype']} | {r['length']} | {r['docs']} | {_gb(r['model_bytes'])} "
            f"| {_gb(r['peak_rss'])} | {_gb(r['peak_rss_encode'])} | {_gb(r['gpu_peak'])} "
            f"| {r['tokens_per_s']:.0f} | {r['docs_per_s']:.3f} "
            f"| {'yes' if r['within_budget'] else 'NO'} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1, help="documents per length (default 1)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument(
        "--max-batch-tokens", type=int, default=8192, help="token budget per forward pass"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--outputs", default="dense,sparse", help="of dense,sparse,colbert")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--layers", type=int, default=24, help="24 is bge-m3's depth")
    parser.add_argument("--model-dir", type=Path, default=None, help="keep/reuse models here")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    # Internal: one measurement in this process.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.worker:
        print(json.dumps(measure(args)))
        return

    temporary = None
    if args.model_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="m3-bench-")
        root = Path(temporary.name)
    else:
        root = args.model_dir
        root.mkdir(parents=True, exist_ok=True)
    try:
        models = build_models(root, args.dtypes, args.layers)
        rows = []
        for dtype in args.dtypes:
            for length in args.lengths:
                command = [
                    sys.executable,
                    __file__,
                    "--worker",
                    f"--model={models[dtype]}",
                    f"--dtype={dtype}",
                    f"--length={length}",
                    f"--docs={args.docs}",
                    f"--max-batch-tokens={args.max_batch_tokens}",
                    f"--batch-size={args.batch_size}",
                    f"--outputs={args.outputs}",
                    f"--device={args.device}",
                ]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    sys.stderr.write(done.stderr)
                    raise SystemExit(f"{dtype} x {length}: worker failed")
                row = json.loads(done.stdout.strip().splitlines()[-1])
                print(json.dumps(row), file=sys.stderr)
                rows.append(row)
        print_table(rows)
        if args.json is not None:
            args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    finally:
        if temporary is not None:
            temporary.cleanup()


if __name__ == "__main__":
    main()
