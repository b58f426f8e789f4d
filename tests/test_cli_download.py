"""`localembed download` without a network: a clear one-line error, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants

from localembed.cli import main
from localembed.cli.download import ALLOW_PATTERNS


@pytest.mark.parametrize("offline", [True, False])
def test_download_offline_is_one_clear_line(
    offline: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # offline=False: the hub is tried, and the network is blocked (pytest-socket), as on a
    # machine without one.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    target = tmp_path / "models" / "minilm"
    code = main(["download", "sentence-transformers/all-MiniLM-L6-v2", "--to", str(target)])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("localembed: cannot download sentence-transformers/all-MiniLM-L6-v2")
    assert ("HF_HUB_OFFLINE is set" in err) == offline
    assert not any(target.rglob("*.safetensors"))


def test_download_fetches_no_pickle_or_code() -> None:
    from fnmatch import fnmatch

    wanted = [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "vocab.txt",
        "modules.json",
        "1_Pooling/config.json",
        "sentencepiece.bpe.model",
        "sparse_linear.pt",  # bge-m3's heads: read with torch.load(weights_only=True)
        "colbert_linear.pt",
    ]
    refused = [
        "pytorch_model.bin",
        "training_args.pt",
        "sub/colbert_linear.pt",
        "modeling.py",
        "onnx/model.onnx",
    ]
    assert all(any(fnmatch(name, p) for p in ALLOW_PATTERNS) for name in wanted)
    assert not any(fnmatch(name, p) for name in refused for p in ALLOW_PATTERNS)


def test_download_keeps_the_m3_heads_the_loader_reads() -> None:
    """bge-m3's head files are fetched by the exact names localembed.m3 loads."""
    from localembed.presets import HEAD_FILES

    assert set(HEAD_FILES.values()) <= set(ALLOW_PATTERNS)
