"""Encoder settings: sentence-transformers metadata, instruction precedence, loading errors."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from localembed import EncoderConfig, get_encoder
from localembed.encoder import LocalEncoder
from localembed.model_errors import ModelNotFoundError
from tests.model_factory import build_sentence_transformers_dir


@pytest.fixture(scope="session")
def bge_named_dir(tiny_bert_dir: Path, tmp_path_factory) -> Path:
    """A tiny BERT in a directory named like bge-small-en-v1.5: the preset applies."""
    target = tmp_path_factory.mktemp("presets") / "bge-small-en-v1.5"
    shutil.copytree(tiny_bert_dir, target)
    return target


@pytest.fixture(scope="session")
def st_dir(bge_named_dir: Path, tmp_path_factory) -> Path:
    return build_sentence_transformers_dir(
        tmp_path_factory.mktemp("st") / "bge-small-en-v1.5",
        bge_named_dir,
        pooling="max",
        normalize=False,
        max_seq_length=24,
        prompts={"query": "saved query: ", "document": "saved doc: "},
    )


def test_sentence_transformers_metadata_is_read_and_matches(st_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    encoder = get_encoder(model=str(st_dir))
    assert encoder.settings.pooling == "max"
    assert encoder.settings.max_length == 24
    assert encoder.settings.query_instruction == "saved query: "
    assert encoder.settings.document_instruction == "saved doc: "
    assert encoder.settings.sources["pooling"] == "sentence-transformers"
    texts = ["a short one", "a much longer text that goes on and on past twenty four tokens " * 3]
    # No Normalize module in modules.json: the vectors are not normalized, as in
    # sentence-transformers.
    assert encoder.settings.normalize is False
    assert encoder.settings.sources["normalize"] == "sentence-transformers"
    st_model = SentenceTransformer(str(st_dir), device="cpu")
    np.testing.assert_allclose(encoder.encode(texts), st_model.encode(texts), atol=1e-5)
    forced = get_encoder(model=str(st_dir), normalize=True).encode(texts)
    np.testing.assert_allclose(forced, st_model.encode(texts, normalize_embeddings=True), atol=1e-5)


def test_preset_applies_by_directory_name(bge_named_dir: Path) -> None:
    encoder = get_encoder(model=str(bge_named_dir))
    assert encoder.settings.pooling == "cls"
    assert encoder.settings.sources["pooling"] == "preset bge-en-v1.5"
    assert encoder.settings.query_instruction == (
        "Represent this sentence for searching relevant passages: "
    )
    assert encoder.settings.document_instruction == ""
    assert encoder.settings.max_length == 512


@pytest.mark.parametrize(
    ("argument", "expected_query", "source"),
    [
        (None, "saved query: ", "saved prompts"),
        ("", "", "argument"),
        ("mine: ", "mine: ", "argument"),
    ],
)
def test_instruction_precedence(st_dir: Path, argument, expected_query, source) -> None:
    encoder = get_encoder(model=str(st_dir), query_instruction=argument)
    assert encoder.settings.query_instruction == expected_query
    assert encoder.settings.sources["query_instruction"] == source
    np.testing.assert_array_equal(
        encoder.encode_queries(["cats"]), encoder.encode([expected_query + "cats"])
    )


def test_instruction_template(bge_named_dir: Path) -> None:
    encoder = get_encoder(
        model=str(bge_named_dir), query_instruction="Q: {text} (search)", document_instruction="D|"
    )
    np.testing.assert_array_equal(
        encoder.encode_queries(["cats"]), encoder.encode(["Q: cats (search)"])
    )
    np.testing.assert_array_equal(encoder.encode_documents(["cats"]), encoder.encode(["D|cats"]))
    np.testing.assert_array_equal(
        encoder.encode(["cats"], instruction="<{text}>"), encoder.encode(["<cats>"])
    )


def test_same_config_same_instance_and_concurrent_first_use(tiny_xlmr_dir: Path) -> None:
    results: list[LocalEncoder] = []
    options = {"model": str(tiny_xlmr_dir), "pooling": "weighted_mean", "batch_size": 3}
    barrier = threading.Barrier(8)

    def load() -> None:
        barrier.wait()
        results.append(get_encoder(**options))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(r) for r in results}) == 1
    assert get_encoder(EncoderConfig(**options)) is results[0]
    assert get_encoder(EncoderConfig(**options), batch_size=4) is not results[0]


def test_max_length_over_the_model_limit(tiny_xlmr_dir: Path) -> None:
    with pytest.raises(ValueError, match="exceeds the model's limit of 512 tokens"):
        get_encoder(model=str(tiny_xlmr_dir), max_length=600)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="model directory not found"):
        get_encoder(model=str(tmp_path / "nope"))


def test_unknown_hub_id_offline_says_what_was_tried() -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        get_encoder(model="someone/not-a-real-model")
    message = str(caught.value)
    assert "local directory 'someone/not-a-real-model': does not exist" in message
    assert "Hugging Face hub" in message
    assert "Fix:" in message


def test_pickle_only_weights_are_refused(tiny_bert_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "pickled"
    shutil.copytree(tiny_bert_dir, target)
    (target / "model.safetensors").rename(target / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"no \.safetensors weights.*pytorch_model\.bin"):
        get_encoder(model=str(target))


def test_unsupported_sentence_transformers_module(st_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "with-dense"
    shutil.copytree(st_dir, target)
    modules = json.loads((target / "modules.json").read_text())
    modules.append(
        {"idx": 9, "name": "9", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (target / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="Dense are not supported"):
        get_encoder(model=str(target))


def test_config_errors_name_valid_values() -> None:
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, mps"):
        EncoderConfig(device="gpu")
    with pytest.raises(ValueError, match="dtype"):
        EncoderConfig(dtype="fp8")
    with pytest.raises(ValueError, match="greater than 0"):
        EncoderConfig(batch_size=0)


def test_empty_input_gives_empty_array() -> None:
    out = get_encoder().encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_relative_model_paths_resolve_against_the_working_directory(
    tiny_bert_dir: Path, tiny_qwen2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # get_encoder remembers how settings resolved; a relative path must still follow the cwd.
    for name, source in (("one", tiny_bert_dir), ("two", tiny_qwen2_dir)):
        shutil.copytree(source, tmp_path / name / "model")
    monkeypatch.chdir(tmp_path / "one")
    first = get_encoder(model="model", pooling="mean")
    assert get_encoder(model="model", pooling="mean") is first
    monkeypatch.chdir(tmp_path / "two")
    second = get_encoder(model="model", pooling="mean")
    assert second is not first
    assert second.model_config.model_type == "qwen2"
    assert first.model_config.model_type == "bert"
