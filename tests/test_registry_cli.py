"""Entry points, load_adapter, and the localembed command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding
from localembed import available_adapters, get_encoder, load_adapter
from localembed.cli import main


def test_available_adapters() -> None:
    assert available_adapters() == ["langchain", "llamaindex"]


def test_load_adapter_builds_each_framework() -> None:
    langchain = load_adapter("langchain", pooling="mean")
    llamaindex = load_adapter("llamaindex", pooling="mean")
    assert isinstance(langchain, LocalEmbeddings)
    assert isinstance(llamaindex, LocalEmbedding)
    assert langchain.encoder is llamaindex.encoder


def test_load_adapter_unknown_name() -> None:
    with pytest.raises(ValueError, match="installed adapters: langchain, llamaindex"):
        load_adapter("haystack")


def test_info_prints_resolved_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["pooling"] == "mean"
    assert info["dimension"] == 384
    assert info["max_length"] == 256
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["sources"]["pooling"] == "sentence-transformers"
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "pooling: 'mean'  (sentence-transformers)" in text


def test_embed_to_npy_and_jsonl(tmp_path: Path) -> None:
    source = tmp_path / "texts.txt"
    source.write_text("first line\nsecond line\n\nfourth 🎉\n", encoding="utf-8")
    assert main(["embed", str(source), "-o", str(tmp_path / "out.npy")]) == 0
    vectors = np.load(tmp_path / "out.npy")
    expected = get_encoder().encode(["first line", "second line", "", "fourth 🎉"])
    np.testing.assert_array_equal(vectors, expected)
    assert main(["embed", str(source), "-o", str(tmp_path / "out.jsonl"), "--kind", "query"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["first line", "second line", "", "fourth 🎉"]
    np.testing.assert_allclose(np.asarray([r["embedding"] for r in rows]), expected, atol=1e-7)
    assert not list(tmp_path.glob("*.partial"))


def test_embed_errors_are_messages_not_tracebacks(tmp_path: Path, capsys) -> None:
    assert main(["embed", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "x.npy")]) == 1
    assert "missing.txt" in capsys.readouterr().err
    assert main(["embed", "-", "-o", str(tmp_path / "x.csv")]) == 2
    assert main(["info", str(tmp_path / "no-such-model")]) == 1
    assert "model directory not found" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "localembed"), "embed", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "examples:" in result.stdout
