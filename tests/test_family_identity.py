"""A model's family from its own files, not only its folder's name (issue 19 item 7).

Copies of a tiny BERT with BGE's sentence-transformers layout (CLS pooling, Normalize), in a
folder named ``embedder``: the model card's metadata (``model-index`` name, ``base_model``) or
the record ``localembed download`` writes confirm the family, and its query instruction is
used; without them a warning says how to choose.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from localembed import get_encoder
from localembed.loading import DOWNLOAD_RECORD, identity_names
from localembed.presets import find_preset
from tests.model_factory import build_sentence_transformers_dir

BGE = find_preset("BAAI/bge-small-en-v1.5")
assert BGE is not None
BGE_QUERY = BGE.query_instruction


@pytest.fixture
def embedder(tiny_bert_dir: Path, tmp_path: Path) -> Path:
    """A BGE-like copy (CLS pooling, normalized) in a folder named neutrally."""
    return build_sentence_transformers_dir(
        tmp_path / "models" / "embedder",
        tiny_bert_dir,
        pooling="cls",
        normalize=True,
        max_seq_length=64,
    )


CARDS = {
    "model-index": (
        "---\nlicense: mit\nmodel-index:\n- name: bge-small-en-v1.5\n  results: []\n---\n"
    ),
    "base_model": "---\nbase_model: BAAI/bge-small-en-v1.5\ntags:\n- sentence-transformers\n---\n",
    "base_model list": "---\nbase_model:\n- BAAI/bge-small-en-v1.5\n---\n# My model\n",
}


@pytest.mark.parametrize("card", sorted(CARDS))
def test_the_model_card_confirms_the_family(
    card: str, embedder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (embedder / "README.md").write_text(CARDS[card], encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="localembed"):
        encoder = get_encoder(model=str(embedder))
    assert encoder.settings.query_instruction == BGE_QUERY
    assert encoder.settings.sources["query_instruction"] == "preset bge-en-v1.5 (model card)"
    assert "pools the [CLS] token" not in caplog.text
    # What the model's own files say still wins over the preset: its metadata's pooling.
    assert encoder.settings.sources["pooling"] == "sentence-transformers"


def test_the_download_record_confirms_the_family(embedder: Path) -> None:
    record = {"model": "BAAI/bge-small-en-v1.5", "revision": "main"}
    (embedder / DOWNLOAD_RECORD).write_text(json.dumps(record), encoding="utf-8")
    assert identity_names(embedder) == ["BAAI/bge-small-en-v1.5"]
    assert get_encoder(model=str(embedder)).settings.query_instruction == BGE_QUERY


def test_an_unconfirmed_bge_like_model_warns_and_says_how_to_choose(
    embedder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="localembed"):
        encoder = get_encoder(model=str(embedder))
    assert encoder.settings.query_instruction == ""
    assert "embedder: pools the [CLS] token like the BGE family" in caplog.text
    assert f"query_instruction={BGE_QUERY!r}" in caplog.text
    assert "query_instruction=''" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="localembed"):
        chosen = get_encoder(model=str(embedder), query_instruction="")
    assert chosen.settings.query_instruction == "" and "BGE" not in caplog.text


def test_a_malformed_or_unrelated_card_is_no_confirmation(
    embedder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (embedder / "README.md").write_text("---\nmodel-index: [unclosed\n---\n", encoding="utf-8")
    assert identity_names(embedder) == []
    with caplog.at_level(logging.WARNING, logger="localembed"):
        assert get_encoder(model=str(embedder)).settings.query_instruction == ""
    assert "pools the [CLS] token" in caplog.text


def test_a_mean_pooled_copy_does_not_warn(
    default_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = shutil.copytree(default_model_dir, tmp_path / "models" / "embedder")
    with caplog.at_level(logging.WARNING, logger="localembed"):
        encoder = get_encoder(model=str(copy))
    assert encoder.settings.query_instruction == ""
    assert "BGE" not in caplog.text
