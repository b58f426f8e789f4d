"""ONNX export: the same vectors from ONNX Runtime, through localembed or on their own.

``get_encoder(backend="onnx", device="cpu")`` exports the model once with
``torch.onnx.export`` (fused with ONNX Runtime's transformer optimizer), caches the file under
``$LOCALEMBED_CACHE/onnx`` (default ``~/.cache/localembed/onnx``) and runs it in an ONNX
Runtime session; tokenizing, pooling and normalizing stay in localembed, so the vectors match
the PyTorch encoder's. This script:

1. compares the ONNX encoder with the PyTorch float32 encoder (max |difference| and the
   smallest cosine similarity over a few texts), and the int8-quantized ONNX model too;
2. runs the exported ``.onnx`` file directly with ``onnxruntime.InferenceSession``, a
   ``tokenizers`` tokenizer and mean pooling in numpy (what a service without PyTorch would
   do) and shows it gives the same vectors.

Runs offline on the embedded all-MiniLM-L6-v2 (needs ``pip install "localembed[onnx]"``; the
first run exports the model, a few seconds)::

    python examples/onnx_export.py
    LOCALEMBED_CACHE=/tmp/onnx-cache python examples/onnx_export.py   # export elsewhere
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

from localembed import get_encoder
from localembed.runtimes import OnnxRuntime

TEXTS = [
    "ONNX Runtime runs the exported graph on the CPU.",
    "The same vectors, without PyTorch at inference time.",
    "short",
    "Embeddings map sentences with similar meanings to nearby points, so a nearest-neighbour "
    "search over them finds relevant passages even when the words differ.",
]


def compare(vectors: np.ndarray, reference: np.ndarray) -> str:
    """Max |difference| and smallest row-wise cosine (rows are L2-normalized)."""
    difference = float(np.abs(vectors - reference).max())
    cosine = float(np.sum(vectors * reference, axis=1).min())
    return f"{difference:10.1e}  {cosine:10.6f}"


def onnxruntime_only(model_file: Path, model_dir: Path, max_length: int) -> np.ndarray:
    """Embed TEXTS with just onnxruntime, tokenizers and numpy (no torch, no localembed)."""
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # all-MiniLM-L6-v2's tokenizer.json pads and truncates to 128 tokens; the model is used
    # with max_seq_length 256 (sentence_bert_config.json) and padding to the longest text.
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    encodings = tokenizer.encode_batch(TEXTS)
    input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
    attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    (hidden,) = session.run(
        ["last_hidden_state"], {"input_ids": input_ids, "attention_mask": attention_mask}
    )
    # Mean pooling over real tokens (the model's training pooling), then L2 normalization.
    mask = attention_mask[:, :, None].astype(np.float32)
    pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    normalized: np.ndarray = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return normalized


def main() -> None:
    reference = get_encoder(device="cpu").encode(TEXTS)  # PyTorch, float32

    encoder = get_encoder(device="cpu", backend="onnx")  # exports on the first run
    runtime = encoder.runtime
    assert isinstance(runtime, OnnxRuntime)
    size_mb = runtime.path.stat().st_size / 1e6
    print(f"exported model: {runtime.path} ({size_mb:.1f} MB)")
    for node in runtime.session.get_inputs():
        print(f"  input  {node.name}: {node.type} {node.shape}")
    for node in runtime.session.get_outputs():
        print(f"  output {node.name}: {node.type} {node.shape}")

    int8 = get_encoder(device="cpu", backend="onnx", quantize="int8")
    direct = onnxruntime_only(runtime.path, Path(encoder.source.path), encoder.settings.max_length)

    print(f"{len(TEXTS)} texts, compared with the PyTorch float32 encoder:")
    print(f"{'':38}{'max |diff|':>10}  {'min cosine':>10}")
    print(f"{'localembed backend=onnx':38}{compare(encoder.encode(TEXTS), reference)}")
    print(f"{'onnxruntime + tokenizers + numpy':38}{compare(direct, reference)}")
    print(f"{'localembed backend=onnx quantize=int8':38}{compare(int8.encode(TEXTS), reference)}")


if __name__ == "__main__":
    main()
