"""CUDA paths: float16 default, bfloat16, explicit device, throughput against sentence-transformers.

Builds random-weight models from config (no downloads): a bge-base-sized XLM-RoBERTa (12 layers,
hidden 768) with the tiny test tokenizer, and the tiny Qwen2. Compares CUDA vectors with the CPU
float32 reference of the same model and times localembed against sentence-transformers on the GPU.

    python benchmarks/cuda_check.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.model_factory import build_tiny_qwen2, build_tiny_xlm_roberta  # noqa: E402


def base_sized_xlmr(directory: Path) -> Path:
    """A random XLM-RoBERTa of bge-base size, with the tiny test tokenizer."""
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    tiny = build_tiny_xlm_roberta(directory / "tiny", with_m3_heads=False)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        pad_token_id=1,
        type_vocab_size=1,
    )
    target = directory / "bge-base-sized"
    XLMRobertaModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def texts(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = [
        "the",
        "a",
        "river",
        "mountain",
        "city",
        "runs",
        "quickly",
        "under",
        "over",
        "bright",
        "dark",
        "Haus",
        "Stadt",
        "你好",
        "世界",
    ]
    return [" ".join(rng.choice(words, size=int(rng.integers(8, 300)))) for _ in range(count)]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import logging

    import torch

    from localembed import get_encoder

    logging.getLogger("localembed").setLevel(logging.ERROR)  # truncation is expected here

    assert torch.cuda.is_available(), "no CUDA device"
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    sample = texts(64)
    with tempfile.TemporaryDirectory() as folder:
        models = {
            "xlmr-base-sized": base_sized_xlmr(Path(folder)),
            "qwen2-tiny": build_tiny_qwen2(Path(folder) / "qwen2"),
        }
        for name, path in models.items():
            pooling = "last_token" if "qwen" in name else "mean"
            cpu = get_encoder(model=str(path), device="cpu", pooling=pooling).encode(sample)
            auto = get_encoder(model=str(path), pooling=pooling)
            row = {"auto_device": str(auto.device), "auto_dtype": str(auto.dtype)}
            row["fp16_min_cos"] = min_cosine(auto.encode(sample), cpu)
            bf16 = get_encoder(model=str(path), pooling=pooling, device="cuda:0", dtype="bfloat16")
            row["bf16_min_cos"] = min_cosine(bf16.encode(sample), cpu)
            fp32 = get_encoder(model=str(path), pooling=pooling, device="cuda", dtype="float32")
            row["fp32_min_cos"] = min_cosine(fp32.encode(sample), cpu)
            report[name] = row
            print(name, row, flush=True)

        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

        path = models["xlmr-base-sized"]
        corpus = texts(args.docs, seed=1)
        contenders = {}
        for dtype in ("float32", "float16"):
            transformer = Transformer(
                str(path), max_seq_length=512
            )  # one per model: .half() is in place
            pooling = Pooling(transformer.get_embedding_dimension(), "mean")
            st = SentenceTransformer(modules=[transformer, pooling], device="cuda")
            if dtype == "float16":
                st = st.half()
            contenders[f"sentence-transformers {dtype}"] = lambda st=st: st.encode(
                corpus, batch_size=32, convert_to_numpy=True
            )
            encoder = get_encoder(model=str(path), pooling="mean", dtype=dtype, max_length=512)
            contenders[f"localembed {dtype}"] = lambda e=encoder: e.encode(corpus)
        encoder = get_encoder(
            model=str(path), pooling="mean", max_length=512, batch_size=256, max_batch_tokens=65536
        )
        contenders["localembed float16 (max_batch_tokens=65536)"] = lambda e=encoder: e.encode(
            corpus
        )
        timings: dict[str, float] = {}
        for _ in range(3):
            for label, run in contenders.items():
                torch.cuda.synchronize()
                start = time.perf_counter()
                run()
                torch.cuda.synchronize()
                timings[label] = min(timings.get(label, 1e9), time.perf_counter() - start)
        for label, seconds in timings.items():
            ratio = timings["sentence-transformers float32"] / seconds
            print(f"{label:<45} {args.docs / seconds:9.1f} docs/s  x{ratio:.2f} vs ST fp32")
        report["throughput_docs_per_s"] = {k: args.docs / v for k, v in timings.items()}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
