"""Vectors and rows you can trust (issue 11): every test here failed on the code before it.

1. normalize follows the model; 2. decoder models never get cls pooling by accident;
3. shared state (tokenizer, torch's default dtype) is never changed under another caller;
4. no silent non-finite output; 5. hostile or damaged model files; 6. inputs;
8. the event loop never stalls; 9. call-time options share one loaded model; and the adapters'
shared base validates on assignment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from localembed import (
    EncoderConfig,
    ModelFileError,
    NonFiniteEmbeddingError,
    clear_encoder_cache,
    get_encoder,
)
from tests.event_loop import lag_against_cpu_thread
from tests.model_factory import build_sentence_transformers_dir

# -- 1. normalize follows the model -----------------------------------------------------------


@pytest.fixture(scope="module")
def dot_product_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentence-transformers model without a Normalize module (like msmarco-*-dot-*)."""
    return build_sentence_transformers_dir(
        tmp_path_factory.mktemp("dot") / "tiny-dot",
        tiny_bert_dir,
        pooling="mean",
        normalize=False,
        max_seq_length=64,
    )


def test_normalize_follows_the_models_sentence_transformers_metadata(
    dot_product_dir: Path,
) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["a dot-product model", "its vectors keep their length", ""]
    encoder = get_encoder(model=str(dot_product_dir))
    reference = SentenceTransformer(str(dot_product_dir), device="cpu").encode(texts)
    ours = encoder.encode(texts)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert not np.allclose(np.linalg.norm(ours, axis=1), 1.0)
    assert encoder.describe()["normalize"] is False
    assert encoder.describe()["sources"]["normalize"] == "sentence-transformers"
    forced = get_encoder(model=str(dot_product_dir), normalize=True).encode(texts)
    np.testing.assert_allclose(np.linalg.norm(forced, axis=1), 1.0, atol=1e-5)


def test_normalize_without_metadata_follows_the_preset_then_true(
    default_model_dir: Path, tiny_bert_dir: Path
) -> None:
    assert get_encoder().settings.sources["normalize"] == "sentence-transformers"
    plain = get_encoder(model=str(tiny_bert_dir), max_length=64)
    assert plain.settings.normalize is True
    assert plain.settings.sources["normalize"] == "fallback"
    assert EncoderConfig().normalize is None


# -- 2. decoder models ------------------------------------------------------------------------


def test_decoder_without_metadata_or_preset_falls_back_to_last_token_with_a_warning(
    tiny_qwen2_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="localembed"):
        encoder = get_encoder(model=str(tiny_qwen2_dir), dtype="float32")
    assert encoder.settings.pooling == "last_token"
    assert encoder.settings.sources["pooling"] == "fallback"
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("pooling=" in r.getMessage() and "decoder" in r.getMessage() for r in warning)
    # Texts sharing their first token no longer get one vector.
    a, b = encoder.encode(["The cat sat on the mat.", "The stock market fell sharply."])
    assert float(a @ b) < 0.999


# -- 3. shared state --------------------------------------------------------------------------


def test_embedding_leaves_the_public_tokenizers_truncation_alone(tiny_bert_dir: Path) -> None:
    encoder = get_encoder(model=str(tiny_bert_dir), max_length=16)
    before = encoder.tokenizer.backend_tokenizer.truncation
    encoder.encode(["a long text " * 40])
    assert encoder.tokenizer.backend_tokenizer.truncation == before


def test_embedding_while_another_thread_uses_the_tokenizer(tiny_bert_dir: Path) -> None:
    encoder = get_encoder(model=str(tiny_bert_dir), max_length=32, pooling="mean")
    texts = [f"text {i} " + "with many words in it " * (i % 5) for i in range(12)]
    expected = encoder.encode(texts)
    expected_ids = encoder.tokenizer(texts, truncation=True, max_length=4)["input_ids"]
    stop = threading.Event()
    wrong_ids: list[Any] = []

    def splitter() -> None:  # what a text splitter does with the public tokenizer
        while not stop.is_set():
            ids = encoder.tokenizer(texts, truncation=True, max_length=4)["input_ids"]
            if ids != expected_ids:
                wrong_ids.append(ids)
            encoder.tokenizer(texts)  # no truncation at all

    thread = threading.Thread(target=splitter)
    thread.start()
    try:
        results = [encoder.encode(texts) for _ in range(30)]
    finally:
        stop.set()
        thread.join()
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-6)
    assert wrong_ids == []


def _load_concurrently(model: Path, dtypes: list[str], max_length: int) -> dict[int, Any]:
    barrier = threading.Barrier(len(dtypes))
    loaded: dict[int, Any] = {}

    def load(index: int) -> None:
        barrier.wait()
        loaded[index] = get_encoder(
            model=str(model), dtype=dtypes[index], max_length=max_length, backend="torch"
        )

    threads = [threading.Thread(target=load, args=(i,)) for i in range(len(dtypes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return loaded


def test_concurrent_first_loads_keep_their_dtypes_and_torchs_default(tiny_bert_dir: Path) -> None:
    dtypes = ["float32", "bfloat16", "float16", "float32", "bfloat16", "float16"]
    for round_ in range(3):
        clear_encoder_cache()
        loaded = _load_concurrently(tiny_bert_dir, dtypes, max_length=32 + round_)
        for index, dtype in enumerate(dtypes):
            model = loaded[index].model
            found = {p.dtype for p in model.parameters() if p.is_floating_point()}
            assert found == {getattr(torch, dtype)}, (round_, dtype, found)
        assert torch.get_default_dtype() == torch.float32
    clear_encoder_cache()


# -- 4. non-finite output ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def overflowing_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT whose embedding of the token "cat" overflows float32 in the first layer."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    target = tmp_path_factory.mktemp("overflow") / "model"
    shutil.copytree(tiny_bert_dir, target)
    weights = load_file(str(target / "model.safetensors"))
    key = next(k for k in weights if k.endswith("word_embeddings.weight"))
    token = AutoTokenizer.from_pretrained(str(target)).convert_tokens_to_ids("cat")
    weights[key][token] = 3e38
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


def test_non_finite_rows_are_an_error_naming_them(overflowing_dir: Path) -> None:
    encoder = get_encoder(model=str(overflowing_dir), pooling="mean", max_length=32)
    with pytest.raises(NonFiniteEmbeddingError, match=r"1 of 3 texts .*rows 1\b") as caught:
        encoder.encode(["a dog", "the cat", "a bird"])
    assert caught.value.rows == [1]
    with pytest.raises(NonFiniteEmbeddingError):
        encoder.encode_documents(["the cat"])
    assert np.isfinite(encoder.encode(["a dog", "a bird"])).all()


def _damaged_m3_copy(m3_dir: Path, target: Path, head: str, damage: str) -> Path:
    shutil.copytree(m3_dir, target)
    path = target / head
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        state = torch.load(path, weights_only=True)
        state["weight"][0, 0] = float("nan")
        torch.save(state, path)
    return target


@pytest.mark.parametrize("damage", ["truncated", "nan"])
@pytest.mark.parametrize("head", ["sparse_linear.pt", "colbert_linear.pt"])
def test_damaged_head_files_are_model_file_errors(
    tiny_xlmr_dir: Path, tmp_path: Path, head: str, damage: str
) -> None:
    model = _damaged_m3_copy(tiny_xlmr_dir, tmp_path / "m3", head, damage)
    encoder = get_encoder(model=str(model), max_length=32)
    with pytest.raises(ModelFileError, match=head.replace(".", r"\.")):
        encoder.encode_m3(["x"], sparse=True, colbert=True)


# -- 5. hostile or damaged model files --------------------------------------------------------


def _pooling(directory: Path) -> Path:
    return directory / "1_Pooling" / "config.json"


DAMAGES: dict[str, tuple[str, Any, str]] = {
    # name: (file, content, expected words in the message)
    "modules not a list": ("modules.json", {"0": "x"}, "a JSON list"),
    "module not an object": ("modules.json", [1], "module 0"),
    "module type not a str": ("modules.json", [{"path": "", "type": 3}], "'type'"),
    "path not a str": (
        "modules.json",
        [{"path": 1, "type": "sentence_transformers.models.Transformer"}],
        "'path'",
    ),
    "path leaves the directory": (
        "modules.json",
        [{"path": "../elsewhere", "type": "sentence_transformers.models.Transformer"}],
        "'path'",
    ),
    "absolute path": (
        "modules.json",
        [{"path": "/etc", "type": "sentence_transformers.models.Transformer"}],
        "'path'",
    ),
    "custom module class": (
        "modules.json",
        [{"path": "", "type": "evil_package.models.Transformer"}],
        "custom class",
    ),
    "max_seq_length -1": ("sentence_bert_config.json", {"max_seq_length": -1}, "max_seq_length"),
    "max_seq_length str": ("sentence_bert_config.json", {"max_seq_length": "x"}, "max_seq_length"),
    "max_seq_length bool": (
        "sentence_bert_config.json",
        {"max_seq_length": True},
        "max_seq_length",
    ),
    "sentence_bert_config not an object": ("sentence_bert_config.json", [1], "JSON object"),
    "prompts a list": ("config_sentence_transformers.json", {"prompts": ["q"]}, "'prompts'"),
    "prompt not a str": (
        "config_sentence_transformers.json",
        {"prompts": {"query": 5}},
        "prompt 'query'",
    ),
    "pooling flag not a bool": (
        "1_Pooling/config.json",
        {"pooling_mode_mean_tokens": "yes", "pooling_mode_cls_token": False},
        "pooling_mode_mean_tokens",
    ),
    "pooling config not an object": ("1_Pooling/config.json", "mean", "JSON object"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_malformed_sentence_transformers_metadata_is_a_model_file_error(
    dot_product_dir: Path, tmp_path: Path, damage: str
) -> None:
    file, content, words = DAMAGES[damage]
    model = tmp_path / "model"
    shutil.copytree(dot_product_dir, model)
    (model / file).write_text(json.dumps(content))
    with pytest.raises(ModelFileError) as caught:
        get_encoder(model=str(model))
    message = str(caught.value)
    assert Path(file).name in message and words in message, message


def test_a_module_folder_linked_outside_the_model_is_refused(
    dot_product_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(dot_product_dir, model)
    outside = tmp_path / "outside"
    shutil.move(str(model / "1_Pooling"), str(outside))
    (model / "1_Pooling").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ModelFileError, match=r"modules\.json.*'path'"):
        get_encoder(model=str(model))


def test_empty_model_name_is_an_error_not_the_working_directory(
    dot_product_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(dot_product_dir)  # a valid model: "" must not load it
    with pytest.raises(ValueError, match="empty string"):
        get_encoder(model="")
    from localembed.loading import locate_model
    from localembed.model_errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="empty string"):
        locate_model("")


def test_errors_show_a_relative_model_path_as_given(
    dot_product_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(dot_product_dir, tmp_path / "models" / "mine")
    (tmp_path / "models" / "mine" / "sentence_bert_config.json").write_text('{"max_seq_length": 0}')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelFileError) as caught:
        get_encoder(model="models/mine")
    assert "models/mine/sentence_bert_config.json" in str(caught.value)
    assert str(tmp_path) not in str(caught.value)


# -- 6. inputs --------------------------------------------------------------------------------


def test_no_adapter_method_iterates_a_bare_string(tiny_bert_dir: Path, tiny_xlmr_dir: Path) -> None:
    from langchain_localembed import LocalEmbeddings, LocalSparseEmbeddings
    from llamaindex_localembed import LocalEmbedding, LocalSparseEmbedding

    dense = {"model": str(tiny_bert_dir), "max_length": 32}
    sparse = {"model": str(tiny_xlmr_dir), "max_length": 32}
    calls: list[Any] = []
    for adapter in (LocalEmbeddings(**dense), LocalSparseEmbeddings(**sparse)):
        calls += [adapter.embed_documents, adapter.aembed_documents]
    for adapter in (LocalEmbedding(**dense), LocalSparseEmbedding(**sparse)):
        calls += [
            adapter.get_text_embedding_batch,
            adapter.aget_text_embedding_batch,
            adapter.get_agg_embedding_from_queries,
            adapter.aget_agg_embedding_from_queries,
        ]
    for call in calls:
        with pytest.raises(TypeError, match="single str"):
            result = call("a bare string")
            if asyncio.iscoroutine(result):
                asyncio.run(result)


@pytest.fixture(scope="module")
def no_special_tokens_dir(tiny_qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2 with a tokenizer that adds no special tokens at all."""
    target = tmp_path_factory.mktemp("bare-tokenizer") / "model"
    shutil.copytree(tiny_qwen2_dir, target)
    tokenizer_file = target / "tokenizer.json"
    data = json.loads(tokenizer_file.read_text())
    data["post_processor"] = None
    tokenizer_file.write_text(json.dumps(data))
    return target


def test_an_empty_text_gives_a_finite_vector_without_special_tokens(
    no_special_tokens_dir: Path,
) -> None:
    encoder = get_encoder(model=str(no_special_tokens_dir), pooling="mean", dtype="float32")
    assert encoder.tokenizer("")["input_ids"] == []
    vectors = encoder.encode(["", "not empty", ""])
    assert vectors.shape == (3, encoder.dimension) and np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_max_length_that_cannot_hold_the_special_tokens_is_refused(tiny_bert_dir: Path) -> None:
    with pytest.raises(ValueError, match="special tokens"):
        get_encoder(model=str(tiny_bert_dir), max_length=2)
    assert get_encoder(model=str(tiny_bert_dir), max_length=3).encode(["ok"]).shape[0] == 1


def test_score_weights_that_sum_to_zero_are_refused() -> None:
    from localembed.m3 import M3Output, hybrid_score

    out = M3Output(dense=np.eye(2, dtype=np.float32), sparse=[{1: 1.0}, {2: 1.0}])
    with pytest.raises(ValueError, match="sum to zero"):
        hybrid_score(out, out, weights=(1.0, -1.0, 0.0))
    with pytest.raises(ValueError, match="sum to zero"):
        hybrid_score(out, out, weights=(0.0, 0.0, 0.0))
    assert set(hybrid_score(out, out)) == {"dense", "sparse", "sparse+dense"}


# -- 8. the event loop ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One BERT layer 384 wide (all-MiniLM-L6-v2's width): cheap passes, full-size output."""
    from tests.model_factory import build_wide_bert

    return build_wide_bert(tmp_path_factory.mktemp("wide") / "model")


def test_no_collector_pass_traverses_more_than_a_bounded_number_of_new_row_floats() -> None:
    """Converting 20,000 x 384 rows: every young collection sees at most a bounded number of
    the new rows' floats (a load-independent count, not a time).

    CPython traverses every list in the generations it collects, item by item, with the GIL
    held; without the young collections of ``collect_young_rows`` a generation-1 pass met
    ~7,000 new rows (2.7 million floats, 50-250 ms) in whichever thread allocated next.
    """
    import gc

    from localembed.adapters import GC_PASS_VALUES, to_lists

    vectors = np.random.default_rng(0).standard_normal((20_000, 384)).astype(np.float32)
    seen: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            young = [*gc.get_objects(generation=0), *gc.get_objects(generation=1)]
            seen.append(sum(len(item) for item in young if type(item) is list and len(item) == 384))
            if info["generation"] == 2:  # a full pass would see every row so far
                seen[-1] = 0

    gc.collect()
    gc.callbacks.append(count)
    try:
        rows = to_lists(vectors)
    finally:
        gc.callbacks.remove(count)
    assert len(rows) == 20_000 and rows[7][5] == float(vectors[7, 5])
    assert seen, "no collection ran"
    assert max(seen) <= 2 * GC_PASS_VALUES + 384, max(seen)


@pytest.mark.slow  # 20,000 texts, up to three times
async def test_one_large_aembed_documents_keeps_the_loop_responsive(wide_bert_dir: Path) -> None:
    """Tokenizing, list conversion and the collector's passes over the new rows never hold
    the GIL long (before: ~1 s stalls, then 50-250 ms collector passes).

    Measured against a plain CPU thread in the same run (tests/event_loop.py), so that a
    loaded machine cannot fail it.
    """
    from langchain_localembed import LocalEmbeddings

    embeddings = LocalEmbeddings(model=str(wide_bert_dir), max_length=16)
    texts = [f"document number {i} about topic {i % 17}" for i in range(20_000)]
    vectors = await embeddings.aembed_documents(texts)
    assert len(vectors) == 20_000 and len(vectors[0]) == 384
    del vectors
    lag = await lag_against_cpu_thread(lambda: embeddings.aembed_documents(texts))
    assert len(lag.ours.gaps) >= 5
    assert lag.holds, str(lag)


# -- 9. memory --------------------------------------------------------------------------------


def test_adapters_differing_in_call_time_options_share_one_model(tiny_bert_dir: Path) -> None:
    from langchain_localembed import LocalEmbeddings
    from llamaindex_localembed import LocalEmbedding

    adapters: list[Any] = [
        LocalEmbeddings(model=str(tiny_bert_dir), batch_size=1 + i, max_batch_tokens=512 + i)
        for i in range(20)
    ]
    adapters.append(LocalEmbedding(model=str(tiny_bert_dir), long_text="chunk"))
    assert len({id(adapter.encoder.model) for adapter in adapters}) == 1
    assert len({id(adapter.encoder.backend) for adapter in adapters}) == 1
    assert adapters[3].encoder.config.batch_size == 4  # each keeps its own options
    a, b = adapters[0].embed_documents(["x y z"]), adapters[19].embed_documents(["x y z"])
    np.testing.assert_allclose(a, b, atol=1e-6)


# -- the adapters' shared base ----------------------------------------------------------------


def test_every_adapter_validates_assignment(tiny_bert_dir: Path) -> None:
    from pydantic import ValidationError

    from langchain_localembed import LocalEmbeddings
    from llamaindex_localembed import LocalEmbedding

    for adapter in (
        LocalEmbeddings(model=str(tiny_bert_dir)),
        LocalEmbedding(model=str(tiny_bert_dir)),
    ):
        with pytest.raises(ValidationError, match="unknown pooling 'median'"):
            adapter.pooling = "median"
        adapter.pooling = "max"
        assert adapter.encoder.settings.pooling == "max"
