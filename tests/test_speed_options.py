"""Every speed option is checked against the fp32 reference vectors of the same model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from localembed import get_encoder

TEXTS = [
    "A man is playing a guitar.",
    "The stock market fell sharply on Monday after the announcement.",
    "机器学习是人工智能的一个分支。",
    "",
    "Two dogs run through a field of tall grass while their owner watches from the fence.",
    "word " * 300,
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return get_encoder().encode(TEXTS)


@pytest.fixture(scope="module", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory):
    patch = pytest.MonkeyPatch()
    patch.setenv("LOCALEMBED_CACHE", str(tmp_path_factory.mktemp("onnx-cache")))
    yield
    patch.undo()


def min_cosine(vectors: np.ndarray, reference: np.ndarray) -> float:
    return float((vectors * reference).sum(1).min())


@pytest.mark.parametrize(
    ("options", "bound"),
    [
        ({"backend": "onnx"}, 0.99999),
        ({"backend": "onnx", "quantize": "int8"}, 0.97),
        # Dynamic int8 scales activations per forward pass, so a vector depends on the rows it
        # runs with: the empty text measured 0.909 alone, 0.925-0.937 in groupings of these
        # texts whole, 0.896 split by rows over 2 threads (the default). A floor, not a contract.
        ({"quantize": "int8"}, 0.88),
        ({"dtype": "bfloat16"}, 0.999),
    ],
)
def test_option_stays_close_to_fp32(options, bound, reference) -> None:
    vectors = get_encoder(**options).encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert min_cosine(vectors, reference) >= bound


def test_onnx_export_is_cached_and_reused(reference) -> None:
    from localembed.runtimes import cache_dir

    encoder = get_encoder(backend="onnx")
    exported = Path(encoder.runtime.path)
    assert exported.is_file() and cache_dir() in exported.parents
    stamp = exported.stat().st_mtime_ns
    from localembed.encoder import LocalEncoder

    again = LocalEncoder(encoder.config)  # a fresh encoder finds the cached file
    assert again.runtime.path == exported and exported.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again.encode(TEXTS), reference, atol=1e-5)


def test_onnx_on_a_tiny_xlm_roberta_matches_torch(tiny_xlmr_dir) -> None:
    texts = ["hello world", "ein kleiner Test", "你好", ""]
    torch_vectors = get_encoder(model=str(tiny_xlmr_dir)).encode(texts)
    onnx_vectors = get_encoder(model=str(tiny_xlmr_dir), backend="onnx").encode(texts)
    assert min_cosine(onnx_vectors, torch_vectors) >= 0.99999


def test_an_edited_config_gets_a_new_export_not_the_old_one(tiny_bert_dir, tmp_path) -> None:
    # Same weights, same path, another activation: the old export would run the old graph.
    import json
    import shutil

    from localembed import EncoderConfig
    from localembed.encoder import LocalEncoder

    model = shutil.copytree(tiny_bert_dir, tmp_path / "edited")
    texts = ["hello world", "a longer text " * 10]
    before = LocalEncoder(EncoderConfig(model=str(model), backend="onnx"))
    config_file = model / "config.json"
    config = json.loads(config_file.read_text())
    assert config["hidden_act"] != "relu"
    config_file.write_text(json.dumps({**config, "hidden_act": "relu"}))
    after = LocalEncoder(EncoderConfig(model=str(model), backend="onnx"))
    assert after.runtime.path != before.runtime.path
    torch_vectors = LocalEncoder(EncoderConfig(model=str(model), backend="torch")).encode(texts)
    np.testing.assert_allclose(after.encode(texts), torch_vectors, atol=1e-5)
    assert not np.allclose(before.encode(texts), torch_vectors, atol=1e-4)  # the old graph


def test_bfloat16_without_native_support_warns(caplog) -> None:
    from localembed.runtimes import cpu_has_native_bfloat16

    if cpu_has_native_bfloat16():
        pytest.skip("this CPU runs bfloat16 natively")
    from localembed.encoder import LocalEncoder

    with caplog.at_level(logging.WARNING, logger="localembed"):
        LocalEncoder(get_encoder(dtype="bfloat16").config)
    assert "no native support" in caplog.text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "onnx", "dtype": "bfloat16"}, "backend='onnx' runs float32"),
        ({"quantize": "int8", "dtype": "bfloat16"}, "quantize='int8' quantizes float32"),
        ({"quantize": "int4"}, "quantize"),
        ({"backend": "tensorrt"}, "backend"),
    ],
)
def test_invalid_combinations_are_clear_errors(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        get_encoder(**options)


def test_token_budget_keeps_vectors(reference) -> None:
    budgeted = get_encoder(max_batch_tokens=300)
    np.testing.assert_allclose(budgeted.encode(TEXTS), reference, atol=1e-5)
    for group in budgeted.batches(budgeted.tokenize(TEXTS).ids):
        widths = [len(budgeted.tokenize(TEXTS).ids[i]) for i in group]
        assert len(group) == 1 or len(group) * max(widths) <= 300


# -- backend="auto" (opt-in; the default is torch): ONNX Runtime where exact, torch elsewhere --


def test_auto_runs_the_default_model_on_onnx_within_1e5_of_torch(reference) -> None:
    pytest.importorskip("onnxruntime")
    assert get_encoder().config.backend == "torch" and get_encoder().runtime.name == "torch"
    encoder = get_encoder(backend="auto")
    assert encoder.runtime.name == "onnx"
    np.testing.assert_allclose(encoder.encode(TEXTS), reference, atol=1e-5)
    torch_vectors = get_encoder(backend="torch").encode(TEXTS)
    assert get_encoder(backend="torch").runtime.name == "torch"
    np.testing.assert_allclose(reference, torch_vectors, atol=1e-5)


def test_auto_runs_torch_without_onnxruntime(tiny_bert_dir, monkeypatch) -> None:
    import sys

    from localembed import EncoderConfig
    from localembed.encoder import LocalEncoder

    texts = ["hello world", "", "a longer text " * 20]
    with_onnx = LocalEncoder(EncoderConfig(model=str(tiny_bert_dir), backend="auto")).encode(texts)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    encoder = LocalEncoder(EncoderConfig(model=str(tiny_bert_dir), backend="auto"))
    assert encoder.runtime.name == "torch"
    np.testing.assert_allclose(encoder.encode(texts), with_onnx, atol=1e-5)
    with pytest.raises(ImportError, match=r"localembed\[onnx\]"):
        LocalEncoder(EncoderConfig(model=str(tiny_bert_dir), backend="onnx"))


def test_auto_runs_torch_for_a_decoder_and_for_bfloat16(tiny_qwen2_dir, tiny_bert_dir) -> None:
    from localembed import EncoderConfig
    from localembed.encoder import LocalEncoder

    decoder = LocalEncoder(
        EncoderConfig(model=str(tiny_qwen2_dir), dtype="float32", backend="auto")
    )
    assert decoder.runtime.name == "torch"
    bf16 = LocalEncoder(EncoderConfig(model=str(tiny_bert_dir), dtype="bfloat16", backend="auto"))
    assert bf16.runtime.name == "torch"


def test_a_failed_auto_export_warns_runs_torch_and_is_not_retried(
    tiny_bert_dir, tmp_path, monkeypatch, caplog
) -> None:
    import shutil

    pytest.importorskip("onnxruntime")
    from localembed import EncoderConfig, runtimes
    from localembed.encoder import LocalEncoder

    fresh = shutil.copytree(tiny_bert_dir, tmp_path / "never-exported")
    config = EncoderConfig(model=str(fresh), backend="auto")
    monkeypatch.setattr(runtimes, "EXPORT_TOLERANCE", -1.0)  # every export now fails its check
    with caplog.at_level(logging.WARNING, logger="localembed"):
        encoder = LocalEncoder(config)
    assert encoder.runtime.name == "torch"
    assert "ONNX export of" in caplog.text and "running it on torch" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="localembed"):
        assert LocalEncoder(config).runtime.name == "torch"  # the marker: no second try
    assert "ONNX export" not in caplog.text
    with pytest.raises(RuntimeError, match="differs from torch"):
        LocalEncoder(EncoderConfig(model=str(fresh), backend="onnx"))
