"""Packed forward passes (localembed.unpadding): real tokens only, the same hidden states."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from localembed.errors import InputError
from localembed.unpadding import (
    ATTENTION,
    can_unpad,
    unpad_enabled,
    unpadded_forward,
    use_unpadded_attention,
)
from tests import model_factory

TEXTS = [
    "a long text about the market, which fell sharply today while the rain kept falling",
    "short",
    "",
    "a text of middling length about a cat",
    "x",
    "another long one: the committee met twice and agreed on nothing at all, again",
]


def _model(model_dir: Path, auto_class: str = "AutoModel"):  # type: ignore[no-untyped-def]
    import transformers

    return getattr(transformers, auto_class).from_pretrained(model_dir).eval()


def _batch(model_dir: Path, *, side: str = "right", pairs: bool = False):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side=side)
    if pairs:  # two segments: token_type_ids of 0 and 1
        return dict(tokenizer(TEXTS, TEXTS[::-1], padding=True, return_tensors="pt"))
    return dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))


def _padded(model, inputs):  # type: ignore[no-untyped-def]
    import torch

    with torch.inference_mode():
        return model(**inputs)[0]


def _packed(model, inputs):  # type: ignore[no-untyped-def]
    import torch

    with torch.inference_mode():
        return unpadded_forward(model, inputs)


@pytest.mark.parametrize(
    ("family", "side", "pairs"),
    [
        ("bert", "right", False),
        ("bert", "left", False),
        ("bert", "right", True),
        ("xlm-roberta", "right", False),
        ("xlm-roberta", "left", False),
    ],
)
def test_packed_hidden_states_equal_the_padded_ones_token_for_token(
    tiny_models: dict[str, Path], family: str, side: str, pairs: bool
) -> None:
    model_dir = tiny_models[family]
    inputs = _batch(model_dir, side=side, pairs=pairs)
    if pairs:
        assert inputs["token_type_ids"].max() == 1
    reference = _padded(_model(model_dir), inputs)  # a model that was never switched
    model = _model(model_dir)
    assert can_unpad(model)
    use_unpadded_attention(model)
    packed = _packed(model, inputs)
    real = inputs["attention_mask"].bool()
    assert packed.shape == reference.shape
    assert (packed[real] - reference[real]).abs().max() < 1e-5
    assert not packed[~real].any()  # padding positions are zeros
    # The switched model's padded passes are sdpa's, unchanged.
    assert (_padded(model, inputs)[real] - reference[real]).abs().max() < 1e-6


def test_position_ids_follow_each_model_s_own_rule(tiny_xlmr_dir: Path) -> None:
    """XLM-RoBERTa counts positions from its padding id: the column index would be wrong."""
    import torch

    from localembed import unpadding

    inputs = _batch(tiny_xlmr_dir)
    model = _model(tiny_xlmr_dir)
    positions = unpadding._position_ids(model, inputs["input_ids"])
    pad = model.embeddings.padding_idx
    assert positions[0, 0] == pad + 1
    columns = torch.arange(inputs["input_ids"].shape[1]).expand_as(positions)
    assert not torch.equal(positions, columns)


def test_rows_with_nothing_attended_are_zeros_and_leave_the_others(tiny_bert_dir: Path) -> None:
    import torch

    inputs = _batch(tiny_bert_dir)
    model = _model(tiny_bert_dir)
    use_unpadded_attention(model)
    reference = _packed(model, inputs)
    inputs["attention_mask"] = inputs["attention_mask"].clone()
    inputs["attention_mask"][1] = 0
    out = _packed(model, inputs)
    assert not out[1].any()
    others = [0, 2, 3, 4, 5]
    real = inputs["attention_mask"][others].bool()
    assert torch.equal(out[others][real], reference[others][real])
    inputs["attention_mask"] = torch.zeros_like(inputs["attention_mask"])
    assert not _packed(model, inputs).any()


def test_packed_and_padded_calls_from_many_threads_on_one_model(tiny_bert_dir: Path) -> None:
    """No call changes what another sees: the layout travels with the call, not the model."""
    inputs = _batch(tiny_bert_dir)
    real = inputs["attention_mask"].bool()
    model = _model(tiny_bert_dir)
    use_unpadded_attention(model)
    reference = _padded(_model(tiny_bert_dir), inputs)
    errors: list[float] = []

    def run(packed: bool) -> None:
        for _ in range(15):
            out = (_packed if packed else _padded)(model, inputs)
            errors.append(float((out[real] - reference[real]).abs().max()))

    threads = [threading.Thread(target=run, args=(i % 2 == 0,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 60
    assert max(errors) < 1e-5


def test_only_bare_encoders_with_sdpa_and_absolute_positions_are_packed(
    tmp_path: Path, tiny_bert_dir: Path, tiny_qwen2_dir: Path
) -> None:
    import transformers

    assert can_unpad(_model(tiny_bert_dir))
    reranker_dir = model_factory.build_tiny_bert_reranker(tmp_path / "reranker")
    # A head that reads a row's first token would read the pack's first token only.
    assert not can_unpad(_model(reranker_dir, "AutoModelForSequenceClassification"))
    assert not can_unpad(_model(tiny_qwen2_dir))  # a decoder: causal, rotary positions
    eager = transformers.AutoModel.from_pretrained(tiny_bert_dir, attn_implementation="eager")
    assert not can_unpad(eager)
    model = _model(tiny_bert_dir)
    use_unpadded_attention(model)
    assert model.config._attn_implementation == ATTENTION
    assert can_unpad(model)

    class BertModel(transformers.BertModel):  # remote code's own class of the same name
        pass

    assert not can_unpad(BertModel.from_pretrained(tiny_bert_dir).eval())
    mapped = _model(tiny_bert_dir)
    mapped.config.auto_map = {"AutoModel": "modeling_custom.BertModel"}
    assert not can_unpad(mapped)


def test_the_runtime_packs_unless_the_environment_says_no(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from localembed import get_encoder
    from localembed.encoder import clear_encoder_cache

    clear_encoder_cache()
    packed = get_encoder(model=tiny_bert_dir, backend="torch", threads=1)
    assert packed.runtime.unpadded
    vectors = packed.encode(TEXTS)
    clear_encoder_cache()
    monkeypatch.setenv("LOCALEMBED_UNPAD", "0")
    padded = get_encoder(model=tiny_bert_dir, backend="torch", threads=1)
    assert not padded.runtime.unpadded
    np.testing.assert_allclose(vectors, padded.encode(TEXTS), atol=1e-6)
    clear_encoder_cache()
    monkeypatch.delenv("LOCALEMBED_UNPAD")
    # int8 runs padded: packing would change its activation scales (and vectors).
    assert not get_encoder(model=tiny_bert_dir, quantize="int8").runtime.unpadded
    clear_encoder_cache()
    assert unpad_enabled({}) is True
    with pytest.raises(InputError, match="LOCALEMBED_UNPAD must be 0 or 1, got 'off'"):
        unpad_enabled({"LOCALEMBED_UNPAD": "off"})
