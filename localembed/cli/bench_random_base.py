"""``localembed bench --random-base``: a BERT-base-sized model with random weights, offline.

Its vectors are meaningless; its cost per token is a base model's (bge-base-en-v1.5's sizes).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

__all__ = ["RANDOM_BASE_CONFIG", "build_random_base"]

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
