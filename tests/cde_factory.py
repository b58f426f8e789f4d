"""Build a tiny contextual document embedding (CDE) model directory for tests and examples.

The directory holds ``config.json`` (whose ``auto_map`` names ``modeling_tiny_cde.py``, a copy
of ``tests/tiny_cde_modeling.py``: remote code, loaded only with ``trust_remote_code=True``),
``model.safetensors`` (random weights seeded by ``torch.manual_seed(0)``) and the
all-MiniLM-L6-v2 tokenizer (or none, as the released models, with ``config.embedder`` naming
one). Nothing is downloaded.

:func:`notebook_embeddings` embeds texts the way the CDE model card's notebook does, by
calling the model directly: the reference the tests compare localembed's vectors with.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer

from tests.model_factory import _MINILM_TOKENIZER_FILES, _minilm_tokenizer_dir

__all__ = [
    "CORPUS_SIZE",
    "DOCUMENT_PREFIX",
    "QUERY_PREFIX",
    "build_tiny_cde",
    "load_modeling",
    "notebook_embeddings",
]

CORPUS_SIZE = 8
"""``transductive_corpus_size`` of the tiny model (512 for the released ones)."""

MODELING_FILE = "modeling_tiny_cde.py"
QUERY_PREFIX = "search_query: "
DOCUMENT_PREFIX = "search_document: "


def load_modeling(path: Path | None = None) -> Any:
    """Import the tiny model's code (``tests/tiny_cde_modeling.py`` by default)."""
    path = path or Path(__file__).with_name("tiny_cde_modeling.py")
    name = f"_tiny_cde_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_tiny_cde(
    directory: Path,
    *,
    corpus_size: int = CORPUS_SIZE,
    seed: int = 0,
    tokenizer: bool = True,
    embedder: str = "",
) -> Path:
    """Write the tiny CDE model into ``directory`` (created if missing).

    Args:
        directory: where to write it.
        corpus_size: ``transductive_corpus_size``.
        seed: the weights' seed (another seed: another model, same shapes).
        tokenizer: copy the tokenizer into the directory; False: leave it out, as the
            released models do (the tokenizer is then named by ``embedder``).
        embedder: ``config.embedder``: where the tokenizer comes from when the directory has
            none (a hub id in the released models; a local directory here).

    Returns:
        ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    source = _minilm_tokenizer_dir()
    vocab_size = len(AutoTokenizer.from_pretrained(str(source)))
    if tokenizer:
        for name in _MINILM_TOKENIZER_FILES:
            shutil.copyfile(source / name, directory / name)
    shutil.copyfile(Path(__file__).with_name("tiny_cde_modeling.py"), directory / MODELING_FILE)
    backbone = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "pad_token_id": 0,
    }
    modeling = load_modeling(directory / MODELING_FILE)
    config = modeling.TinyCdeConfig(
        backbone=backbone,
        transductive_corpus_size=corpus_size,
        max_seq_length=512,
        embedder=embedder,
        architectures=["TinyContextualModel"],
        auto_map={
            "AutoConfig": "modeling_tiny_cde.TinyCdeConfig",
            "AutoModel": "modeling_tiny_cde.TinyContextualModel",
        },
    )
    torch.manual_seed(seed)
    model = modeling.TinyContextualModel(config)
    with torch.no_grad():  # wider weights than the default init: texts differ more
        for name, parameter in model.named_parameters():
            if name.endswith("weight") and parameter.dim() == 2:
                parameter.normal_(0.0, 0.2)
    config_dict = config.to_dict()
    config_dict.pop("transformers_version", None)
    (directory / "config.json").write_text(json.dumps(config_dict, indent=2), encoding="utf-8")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "model.safetensors"))
    return directory


def notebook_embeddings(
    directory: Path,
    minicorpus: Sequence[str],
    texts: Sequence[str],
    prefix: str,
    *,
    batch_size: int = 32,
    tokenizer_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Dataset embeddings and normalized text vectors, computed as the CDE notebook does.

    The model loads with ``AutoModel.from_pretrained(trust_remote_code=True)``; the mini
    corpus is tokenized at once (``search_document: `` prefix, padding, truncation at 512),
    run through ``first_stage_model`` in batches of ``batch_size`` and concatenated; the
    texts (with ``prefix``) go through ``second_stage_model(input_ids=, attention_mask=,
    dataset_embeddings=)`` and are divided by their L2 norm.
    """
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(directory), trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(
        str(tokenizer_dir or directory), trust_remote_code=True
    )
    docs = tokenizer(
        [DOCUMENT_PREFIX + doc for doc in minicorpus],
        truncation=True,
        padding=True,
        max_length=512,
        return_tensors="pt",
    )
    parts = []
    for start in range(0, len(docs["input_ids"]), batch_size):
        batch = {k: v[start : start + batch_size] for k, v in docs.items()}
        with torch.no_grad():
            parts.append(model.first_stage_model(**batch))
    dataset_embeddings = torch.cat(parts)
    inputs = tokenizer(
        [prefix + text for text in texts],
        truncation=True,
        padding=True,
        max_length=512,
        return_tensors="pt",
    )
    with torch.no_grad():
        vectors = model.second_stage_model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            dataset_embeddings=dataset_embeddings,
        )
    vectors = vectors / vectors.norm(p=2, dim=1, keepdim=True)
    return dataset_embeddings.numpy(), vectors.numpy()
