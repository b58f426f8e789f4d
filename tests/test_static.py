"""`localembed distill` and static models: model2vec loads what we write, we load it the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from localembed import get_encoder
from localembed.errors import InputError
from localembed.static import DEFAULT_MAX_LENGTH, is_static_model

TEXTS = [
    "A man is playing a guitar.",
    "",
    "机器学习是人工智能的一个分支。",
    "qqqzzx unknownish tokens [UNK] here",
    "word " * 900,  # over max_length: truncated the same way by both
    "Two dogs run through a field of tall grass.",
]


@pytest.fixture(scope="module")
def static_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from localembed.cli import main

    target = tmp_path_factory.mktemp("static") / "tiny-static"
    code = main(["distill", str(tiny_bert_dir), "-o", str(target), "--dimension", "8"])
    assert code == 0
    return target


def test_distill_writes_model2vec_files(static_dir: Path, tiny_bert_dir: Path) -> None:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    assert is_static_model(static_dir) and not is_static_model(tiny_bert_dir)
    config = json.loads((static_dir / "config.json").read_text())
    assert config["model_type"] == "model2vec" and config["normalize"] is True
    embeddings = load_file(str(static_dir / "model.safetensors"))["embeddings"]
    vocab = Tokenizer.from_file(str(static_dir / "tokenizer.json")).get_vocab_size()
    assert embeddings.shape == (vocab, 8) and embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all() and np.abs(embeddings).max() > 0


def test_model2vec_and_get_encoder_give_the_same_vectors(static_dir: Path) -> None:
    from model2vec import StaticModel

    reference = StaticModel.from_pretrained(str(static_dir), force_download=False)
    encoder = get_encoder(model=str(static_dir))
    ours = encoder.encode(TEXTS)
    theirs = reference.encode(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), 8) and encoder.dimension == 8
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert np.abs(ours[0]).max() > 0  # a real vector, not the zero row of an empty text
    assert encoder.settings.max_length == DEFAULT_MAX_LENGTH
    np.testing.assert_allclose(encoder.encode_queries(TEXTS[:3]), theirs[:3], atol=1e-6)


def test_adapters_load_a_static_model_unchanged(static_dir: Path) -> None:
    from langchain_localembed import LocalEmbeddings
    from llamaindex_localembed import LocalEmbedding

    expected = get_encoder(model=str(static_dir)).encode(TEXTS[:2])
    langchain = LocalEmbeddings(model=str(static_dir)).embed_documents(TEXTS[:2])
    llamaindex = LocalEmbedding(model=str(static_dir)).get_text_embedding_batch(TEXTS[:2])
    np.testing.assert_allclose(np.asarray(langchain), expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(llamaindex), expected, atol=1e-6)


def test_truncate_dim_and_normalize_apply(static_dir: Path) -> None:
    full = get_encoder(model=str(static_dir), normalize=False).encode(TEXTS[:1])
    cut = get_encoder(model=str(static_dir), normalize=False, truncate_dim=4).encode(TEXTS[:1])
    np.testing.assert_allclose(cut, full[:, :4], atol=1e-6)
    assert abs(float(np.linalg.norm(full)) - 1.0) > 1e-3  # not normalized when told so


@pytest.mark.parametrize(
    "options",
    [
        {"backend": "onnx"},
        {"quantize": "int8"},
        {"dtype": "bfloat16"},
        {"pooling": "cls"},
        {"long_text": "chunk"},
    ],
)
def test_transformer_options_are_refused(static_dir: Path, options: dict[str, str]) -> None:
    with pytest.raises(InputError, match="static model"):
        get_encoder(model=str(static_dir), **options).encode(["x"])


def test_token_outputs_are_refused(static_dir: Path) -> None:
    encoder = get_encoder(model=str(static_dir))
    with pytest.raises(ValueError, match="token_embeddings"):
        encoder.encode(["x"], output="token_embeddings")
    with pytest.raises(ValueError, match="static model"):
        encoder.encode_m3(["x"], sparse=True)


def test_bench_times_a_static_model_beside_the_others(
    static_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from localembed.cli import main

    result = tmp_path / "bench.json"
    argv = ["bench", "--contenders", "localembed fp32", "--static", str(static_dir)]
    argv += ["--short", "8", "--docs", "2", "--queries", "2", "--rounds", "1", "--no-stream"]
    assert main([*argv, "--contention", "0", "--json", str(result)]) == 0
    rows = {row["name"]: row for row in json.loads(result.read_text())["results"]}
    assert set(rows) == {"localembed fp32", "localembed static"}
    assert rows["localembed static"]["mixed_docs_per_s"] > 0
    assert rows["localembed static"]["max_1_minus_cos"] is None  # another width: no gap
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("localembed")]
    assert [line.split()[1] for line in table] == ["fp32", "static"]
