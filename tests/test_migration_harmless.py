"""Hugging Face arguments that change nothing are accepted; the rest refused with a reason.

Checked against the installed classes' real signatures (issue 19 item 8): every argument of
langchain-huggingface's ``HuggingFaceEmbeddings`` and llama-index's ``HuggingFaceEmbedding``,
at its default value, builds the localembed adapter (the deprecated placeholders and the
default model id aside), and ``cache_folder`` finds a hub model in that cache, offline.
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding


def test_every_huggingface_embeddings_field_at_its_default_is_accepted() -> None:
    from langchain_huggingface import HuggingFaceEmbeddings

    for name, info in HuggingFaceEmbeddings.model_fields.items():
        if name == "model_name":  # its default model is not available offline
            continue
        LocalEmbeddings(**{name: info.get_default(call_default_factory=True)})


def test_every_huggingface_embedding_argument_at_its_default_is_accepted() -> None:
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    for name, parameter in inspect.signature(HuggingFaceEmbedding.__init__).parameters.items():
        if name in ("self", "model_name", "model_kwargs") or parameter.default == "deprecated":
            continue
        LocalEmbedding(**{name: parameter.default})


@pytest.mark.parametrize(
    ("adapter", "name", "value"),
    [
        (LocalEmbeddings, "multi_process", True),
        (LocalEmbedding, "parallel_process", True),
        (LocalEmbedding, "target_devices", ["cuda:0", "cuda:1"]),
    ],
)
def test_process_pools_are_refused_with_the_reason(adapter: type, name: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        adapter(**{name: value})
    message = str(caught.value)
    assert f"{name}={value!r} is not supported" in message
    assert "micro-batching" in message and "device='cuda:N'" in message


def fake_hub_cache(cache: Path, repo_id: str, model_dir: Path) -> Path:
    """A Hugging Face hub cache holding ``model_dir`` as ``repo_id`` (the real layout)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40, encoding="utf-8")
    return snapshot


@pytest.mark.parametrize("adapter", [LocalEmbeddings, LocalEmbedding])
def test_cache_folder_finds_the_model_in_that_cache(
    adapter: type, default_model_dir: Path, tmp_path: Path
) -> None:
    snapshot = fake_hub_cache(tmp_path / "cache", "acme/minilm-copy", default_model_dir)
    embeddings = adapter(model_name="acme/minilm-copy", cache_folder=str(tmp_path / "cache"))
    assert Path(embeddings.model) == snapshot
    reference = LocalEmbeddings(model=str(default_model_dir))
    np.testing.assert_allclose(
        embeddings.encoder.encode(["cache folder"]),
        reference.encoder.encode(["cache folder"]),
        atol=1e-6,
    )
