"""Pooling modes equal hand-computed references, with left and right padding, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from localembed import POOLING_MODES, get_encoder
from localembed.pooling import pool

TEXTS = [
    "Hello world",
    "A much longer sentence that needs quite a few more tokens than the first one does.",
    "你好，世界",
    "",
    "emoji 🙂 and more",
]


def reference_pool(mode: str, tokens: np.ndarray) -> np.ndarray:
    """Pool the real tokens (tokens, hidden) of one text, written out by hand."""
    if mode == "cls":
        return tokens[0]
    if mode == "last_token":
        return tokens[-1]
    if mode == "mean":
        return tokens.mean(axis=0)
    if mode == "max":
        return tokens.max(axis=0)
    if mode == "weighted_mean":
        weights = np.arange(1, len(tokens) + 1, dtype=np.float64)[:, None]
        return (tokens * weights).sum(axis=0) / weights.sum()
    raise AssertionError(mode)


def pad(rows: list[np.ndarray], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    hidden = np.full((len(rows), width, rows[0].shape[1]), 7.0, dtype=np.float32)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        hidden[i, span] = row
        mask[i, span] = 1
    return torch.from_numpy(hidden), torch.from_numpy(mask)


@pytest.mark.parametrize("mode", POOLING_MODES)
@pytest.mark.parametrize("side", ["right", "left"])
def test_pooling_function_equals_reference(mode: str, side: str) -> None:
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=(n, 6)).astype(np.float32) for n in (1, 5, 3, 8)]
    hidden, mask = pad(rows, side)
    pooled = pool(mode, hidden, mask).numpy()
    for i, row in enumerate(rows):
        np.testing.assert_allclose(pooled[i], reference_pool(mode, row), rtol=1e-5, atol=1e-6)


def test_unknown_pooling_names_the_valid_modes() -> None:
    with pytest.raises(ValueError, match="valid: cls, mean, max, last_token, weighted_mean"):
        pool("median", torch.zeros(1, 1, 1), torch.ones(1, 1))


def unpadded_reference(model_dir, mode: str, texts: list[str], max_length: int) -> np.ndarray:
    """Run the model on each text alone (no padding at all) and pool by hand."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    vectors = []
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            tokens = model(input_ids=ids["input_ids"])[0][0].double().numpy()
            vector = reference_pool(mode, tokens)
            vectors.append(vector / np.linalg.norm(vector))
    return np.asarray(vectors)


@pytest.mark.parametrize("architecture", ["bert", "xlm-roberta", "qwen2"])
@pytest.mark.parametrize("mode", POOLING_MODES)
def test_encoder_pooling_equals_unpadded_reference(tiny_models, architecture, mode) -> None:
    model_dir = tiny_models[architecture]
    encoder = get_encoder(model=str(model_dir), pooling=mode, batch_size=8)
    expected = unpadded_reference(model_dir, mode, TEXTS, encoder.settings.max_length)
    np.testing.assert_allclose(encoder.encode(TEXTS), expected, atol=2e-5)


def gte_qwen2_last_token_pool(last_hidden_states: torch.Tensor, attention_mask: torch.Tensor):
    """Verbatim from the gte-Qwen2 / e5-mistral model cards."""
    left_padding = attention_mask[:, -1].sum() == attention_mask.shape[0]
    if left_padding:
        return last_hidden_states[:, -1]
    sequence_lengths = attention_mask.sum(dim=1) - 1
    batch_size = last_hidden_states.shape[0]
    return last_hidden_states[
        torch.arange(batch_size, device=last_hidden_states.device), sequence_lengths
    ]


@pytest.mark.parametrize("side", ["left", "right"])
def test_last_token_equals_gte_qwen2_reference(tiny_qwen2_dir, side: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_dir, padding_side=side)
    model = AutoModel.from_pretrained(tiny_qwen2_dir).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert (batch["attention_mask"][:, 0 if side == "left" else -1] == 0).any()
    with torch.inference_mode():
        hidden = model(**batch)[0]
    reference = torch.nn.functional.normalize(
        gte_qwen2_last_token_pool(hidden, batch["attention_mask"]), dim=-1
    )
    ours = pool("last_token", hidden, batch["attention_mask"])
    np.testing.assert_allclose(
        torch.nn.functional.normalize(ours, dim=-1).numpy(), reference.numpy(), atol=1e-6
    )
    encoder = get_encoder(model=str(tiny_qwen2_dir), pooling="last_token")
    np.testing.assert_allclose(encoder.encode(TEXTS), reference.numpy(), atol=1e-5)


@pytest.mark.parametrize("architecture", ["bert", "xlm-roberta", "qwen2"])
def test_results_do_not_depend_on_batch_neighbours(tiny_models, architecture) -> None:
    encoder = get_encoder(model=str(tiny_models[architecture]), pooling="mean")
    together = encoder.encode(TEXTS, batch_size=len(TEXTS))
    alone = np.vstack([encoder.encode([t]) for t in TEXTS])
    reversed_order = encoder.encode(TEXTS[::-1], batch_size=2)[::-1]
    assert np.abs(together - alone).max() <= 1e-5
    assert np.abs(together - reversed_order).max() <= 1e-5


def test_auto_pooling_without_metadata_or_preset_falls_back_to_cls(tiny_bert_dir, caplog) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="localembed"):
        encoder = get_encoder(model=str(tiny_bert_dir), max_length=128)
    assert encoder.settings.pooling == "cls"
    assert encoder.settings.sources["pooling"] == "fallback"
    assert "using cls pooling" in caplog.text
