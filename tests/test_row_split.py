"""CPU batches split by rows over single-threaded workers (localembed.row_split)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from localembed.errors import InputError
from localembed.row_split import balanced_cuts, split_forward, split_rows_enabled
from tests import model_factory

TEXTS = [
    "a long text about the market, which fell sharply today while the rain kept falling",
    "short",
    "a text of middling length about a cat",
    "",
    "x",
    "another long one: the committee met twice and agreed on nothing at all, again",
    "mid length words here",
]


def _runtime(model_dir: Path, split: bool, auto_class: str = "AutoModel"):  # type: ignore[no-untyped-def]
    import transformers

    from localembed.runtimes import TorchRuntime

    model = getattr(transformers, auto_class).from_pretrained(model_dir).eval()
    runtime = TorchRuntime(model, threads=2, adaptive=False)
    runtime.split_workers = 2 if split else 0
    return runtime


def _batch(model_dir: Path, texts: list[str]):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


def test_split_rows_match_one_forward_pass_row_for_row(tiny_bert_dir: Path) -> None:
    import torch

    ids, mask = _batch(tiny_bert_dir, TEXTS)
    whole = _runtime(tiny_bert_dir, split=False)(ids, mask)
    split_runtime = _runtime(tiny_bert_dir, split=True)
    split = split_runtime(ids, mask)
    assert split.shape == whole.shape
    real = mask.bool()
    assert (split[real] - whole[real]).abs().max() < 1e-5  # every real token, every row
    for _ in range(2):  # the slices depend on the batch only: repeats are bit-identical
        assert torch.equal(split_runtime(ids, mask), split)


def test_the_encoder_splits_and_keeps_its_vectors(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from localembed import get_encoder
    from localembed.encoder import clear_encoder_cache

    clear_encoder_cache()
    split = get_encoder(model=tiny_bert_dir, backend="torch", threads=2)
    assert split.runtime.split_workers == 2
    split_vectors = split.encode(TEXTS)
    clear_encoder_cache()
    monkeypatch.setenv("LOCALEMBED_SPLIT_ROWS", "0")
    whole = get_encoder(model=tiny_bert_dir, backend="torch", threads=2)
    assert whole.runtime.split_workers == 0
    np.testing.assert_allclose(split_vectors, whole.encode(TEXTS), atol=1e-5)
    clear_encoder_cache()
    monkeypatch.delenv("LOCALEMBED_SPLIT_ROWS")
    assert get_encoder(model=tiny_bert_dir, backend="torch", threads=1).runtime.split_workers == 0
    int8 = get_encoder(model=tiny_bert_dir, backend="torch", threads=2, quantize="int8")
    assert int8.runtime.split_workers == 2  # activation scales per slice: deterministic too
    np.testing.assert_array_equal(int8.encode(TEXTS), int8.encode(TEXTS))
    clear_encoder_cache()


def test_a_head_s_logits_are_joined_unpadded(tmp_path: Path) -> None:
    reranker_dir = model_factory.build_tiny_bert_reranker(tmp_path / "reranker", num_labels=3)
    ids, mask = _batch(reranker_dir, TEXTS)
    whole = _runtime(reranker_dir, False, "AutoModelForSequenceClassification")(ids, mask)
    split = _runtime(reranker_dir, True, "AutoModelForSequenceClassification")(ids, mask)
    assert split.shape == whole.shape == (len(TEXTS), 3)
    assert (split - whole).abs().max() < 1e-5


def test_workers_run_one_intra_op_thread_and_leave_the_caller_s_count(
    tiny_bert_dir: Path,
) -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runtime = _runtime(tiny_bert_dir, split=True)
        seen: list[tuple[str, int]] = []
        runtime.model.register_forward_pre_hook(
            lambda *_: seen.append((threading.current_thread().name, torch.get_num_threads()))
        )
        ids, mask = _batch(tiny_bert_dir, TEXTS)
        runtime(ids, mask)
        assert len(seen) == 2
        assert all(name.startswith("localembed-rows") and count == 1 for name, count in seen)
        assert torch.get_num_threads() == 2  # the caller's count
        fresh: list[int] = []
        thread = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert fresh == [2]  # torch's global count, which new threads start from, restored
        runtime(ids[:1], mask[:1])  # one row: not split, on the caller's threads
        assert seen[-1] == (threading.current_thread().name, 2)
    finally:
        torch.set_num_threads(before)


def test_an_error_in_a_slice_reaches_the_caller() -> None:
    import torch

    def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if (inputs["input_ids"] == 7).any():
            msg = "slice failed"
            raise RuntimeError(msg)
        return inputs["input_ids"].float()

    ids = torch.tensor([[1, 1], [7, 1], [1, 0]])
    with pytest.raises(RuntimeError, match="slice failed"):
        split_forward(forward, {"input_ids": ids, "attention_mask": (ids != 0).long()}, 2)


def test_more_workers_than_rows_and_all_padding_slices() -> None:
    import torch

    ids = torch.tensor([[5, 6, 0], [4, 0, 0]])
    mask = (ids != 0).long()
    seen: list[int] = []

    def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.append(inputs["input_ids"].shape[1])
        return inputs["input_ids"].float().unsqueeze(-1)  # per token, as hidden states

    out = split_forward(forward, {"input_ids": ids, "attention_mask": mask}, 4)
    assert sorted(seen) == [1, 2]  # two slices, each cut to its own width
    assert torch.equal(out, ids.float().unsqueeze(-1))  # padded back with zeros


def test_the_switch_is_read_from_the_environment_and_a_typo_is_an_error() -> None:
    assert split_rows_enabled({}) is True
    assert split_rows_enabled({"LOCALEMBED_SPLIT_ROWS": "1"}) is True
    assert split_rows_enabled({"LOCALEMBED_SPLIT_ROWS": "0"}) is False
    with pytest.raises(InputError, match="LOCALEMBED_SPLIT_ROWS must be 0 or 1, got 'no'"):
        split_rows_enabled({"LOCALEMBED_SPLIT_ROWS": "no"})


def test_cuts_balance_padded_tokens_and_are_the_best_contiguous_cuts() -> None:
    import itertools
    import random

    def largest(widths: list[int], bounds: list[int]) -> int:
        return max((b - a) * max(widths[a:b]) for a, b in itertools.pairwise(bounds))

    # A planned batch is longest first: equal row counts would leave one worker idle.
    assert balanced_cuts([256] * 4 + [64] * 12, parts=2) == [0, 4, 16]
    generator = random.Random(7)
    for _ in range(300):
        widths = [generator.randint(1, 300) for _ in range(generator.randint(1, 9))]
        parts = generator.randint(1, 4)
        bounds = balanced_cuts(widths, parts)
        assert bounds[0] == 0 and bounds[-1] == len(widths) and len(bounds) - 1 <= parts
        assert all(a < b for a, b in itertools.pairwise(bounds))  # no empty slice
        best = min(
            largest(widths, [0, *cut, len(widths)])
            for count in range(min(parts, len(widths)))
            for cut in itertools.combinations(range(1, len(widths)), count)
        )
        assert largest(widths, bounds) == best


def test_an_interrupted_pool_set_up_leaves_no_worker_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Ctrl-C between the set-up's submissions: the interpreter's exit joins every worker."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from localembed import row_split

    before = set(threading.enumerate())
    submitted = 0
    real_submit = ThreadPoolExecutor.submit

    def submit(self: ThreadPoolExecutor, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        nonlocal submitted
        submitted += 1
        if submitted == 2:
            raise KeyboardInterrupt
        return real_submit(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ThreadPoolExecutor, "submit", submit)
    with pytest.raises(KeyboardInterrupt):
        row_split.worker_pool(5)  # a size no other test makes
    monkeypatch.undo()
    assert 5 not in row_split._pools
    started = [thread for thread in threading.enumerate() if thread not in before]
    deadline = time.monotonic() + 10
    while any(thread.is_alive() for thread in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(thread.is_alive() for thread in started)
