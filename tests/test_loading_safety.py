"""Safe loading: damaged files name the file and the fix, pickle and remote code only on
opt-in, no network for local or offline models, no machine paths in error messages."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from langchain_localembed import LocalEmbeddings
from llamaindex_localembed import LocalEmbedding
from localembed import get_encoder
from localembed.config import EncoderConfig
from localembed.encoder import LocalEncoder
from localembed.model_errors import (
    MissingModelFileError,
    ModelFileError,
    ModelNotFoundError,
    RemoteCodeError,
)

FIX = "fix:"


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def load(directory: Path | str, **options) -> LocalEncoder:
    """A fresh encoder (never a cached one), so the files are really read."""
    return LocalEncoder(EncoderConfig(model=str(directory), **options))


# -- damaged files ----------------------------------------------------------------------------


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _nan_tail(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-4096:] = b"\xff" * 4096  # float32 0xffffffff is NaN: a corrupt tail, header intact
    path.write_bytes(bytes(data))


def _drop_tensor(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    del tensors["encoder.layer.1.output.dense.weight"]
    save_file(tensors, path, metadata={"format": "pt"})


def _reshape_tensor(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    tensors["encoder.layer.1.output.dense.weight"] = torch.zeros(3, 3)
    save_file(tensors, path, metadata={"format": "pt"})


DAMAGE = {
    # name: (file, how, expected error, words the message must contain)
    "weights missing": ("model.safetensors", Path.unlink, MissingModelFileError, ["no weights"]),
    "weights empty": (
        "model.safetensors",
        lambda p: p.write_bytes(b""),
        ModelFileError,
        ["model.safetensors", "truncated or corrupt"],
    ),
    "weights truncated": (
        "model.safetensors",
        lambda p: _truncate(p, 0.5),
        ModelFileError,
        ["model.safetensors", "truncated or corrupt"],
    ),
    "weights random bytes": (
        "model.safetensors",
        lambda p: p.write_bytes(os.urandom(4096)),
        ModelFileError,
        ["model.safetensors", "truncated or corrupt"],
    ),
    "weights NaN tail": (
        "model.safetensors",
        _nan_tail,
        ModelFileError,
        ["model.safetensors", "NaN or infinite"],
    ),
    "weights lack a tensor": (
        "model.safetensors",
        _drop_tensor,
        ModelFileError,
        ["model.safetensors", "1 missing (encoder.layer.1.output.dense.weight)", "config.json"],
    ),
    "weights of another shape": (
        "model.safetensors",
        _reshape_tensor,
        ModelFileError,
        ["model.safetensors", "file [3, 3], config [32, 64]"],
    ),
    "config missing": ("config.json", Path.unlink, MissingModelFileError, ["config.json"]),
    "config truncated": (
        "config.json",
        lambda p: _truncate(p, 0.5),
        ModelFileError,
        ["config.json", "not valid JSON"],
    ),
    "config empty": (
        "config.json",
        lambda p: p.write_text(""),
        ModelFileError,
        ["config.json", "not valid JSON"],
    ),
    "tokenizer truncated": (
        "tokenizer.json",
        lambda p: _truncate(p, 0.3),
        ModelFileError,
        ["tokenizer.json", "truncated or corrupt"],
    ),
    "tokenizer garbage": (
        "tokenizer.json",
        lambda p: p.write_bytes(os.urandom(2048)),
        ModelFileError,
        ["tokenizer.json", "truncated or corrupt"],
    ),
    "no tokenizer files": (
        "vocab.txt",
        lambda p: (p.unlink(), (p.parent / "tokenizer.json").unlink()),
        MissingModelFileError,
        ["no tokenizer", "tokenizer.json"],
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_file_names_the_file_and_the_fix(
    case: str, tiny_bert_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    file, damage, error_type, words = DAMAGE[case]
    model = copy_model(tiny_bert_dir, tmp_path / "model")
    damage(model / file)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error_type) as caught:
        load("model")  # a relative path, as a user would type it
    message = str(caught.value)
    for word in words:
        assert word in message, message
    assert FIX in message
    # The model path as the user gave it, nothing else of the machine.
    assert "model/" in message or "model:" in message or "'model'" in message
    assert str(tmp_path) not in message


@pytest.mark.parametrize(
    "case",
    ["weights truncated", "weights NaN tail", "weights lack a tensor", "weights of another shape"],
)
def test_onnx_backend_checks_the_weights_it_exports(
    case: str, tiny_bert_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    file, damage, error_type, words = DAMAGE[case]
    monkeypatch.setenv("LOCALEMBED_CACHE", str(tmp_path / "cache"))
    model = copy_model(tiny_bert_dir, tmp_path / "model")
    damage(model / file)
    with pytest.raises(error_type) as caught:
        load(model, backend="onnx")
    for word in words:
        assert word in str(caught.value)
    assert not list((tmp_path / "cache").rglob("*.onnx"))


def test_a_tokenizer_from_another_model_is_refused(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    target = tmp_path / "mismatch"
    target.mkdir()
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(tiny_bert_dir / name, target / name)
    config = json.loads((tiny_bert_dir / "config.json").read_text())
    config["vocab_size"] = 1000  # the tokenizer has 30522 tokens
    BertModel(BertConfig(**config)).save_pretrained(target)
    with pytest.raises(ModelFileError) as caught:
        load(target)
    message = str(caught.value)
    assert "the tokenizer does not match the model" in message
    assert "tokenizer.json has 30522 tokens" in message
    assert "config.json has vocab_size=1000" in message
    assert FIX in message


def test_a_damaged_file_is_not_cached_and_the_repaired_model_loads(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    model = copy_model(tiny_bert_dir, tmp_path / "model")
    (model / "config.json").rename(tmp_path / "config.json")
    with pytest.raises(MissingModelFileError):
        get_encoder(model=str(model))
    (tmp_path / "config.json").rename(model / "config.json")
    assert get_encoder(model=str(model)).encode(["back"]).shape == (1, 32)


# -- pickle weights ---------------------------------------------------------------------------


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_weights_load_only_with_the_opt_in(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model = copy_model(tiny_bert_dir, tmp_path / "pickled")
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    with pytest.raises(MissingModelFileError) as caught:
        load(model)
    assert isinstance(caught.value, FileNotFoundError)
    assert "pytorch_model.bin" in str(caught.value)
    assert "allow_pickle_weights=True" in str(caught.value)
    with pytest.raises(FileNotFoundError, match="allow_pickle_weights"):
        LocalEmbeddings(model=str(model))

    texts = ["pickled weights", "the same vectors"]
    opted_in = load(model, allow_pickle_weights=True, pooling="mean")
    reference = get_encoder(model=str(tiny_bert_dir), pooling="mean")
    np.testing.assert_array_equal(opted_in.encode(texts), reference.encode(texts))


def test_pickle_weights_never_run_code(tiny_bert_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    model = copy_model(tiny_bert_dir, tmp_path / "evil")
    (model / "model.safetensors").unlink()
    torch.save({"weights": _RunsCodeWhenUnpickled(marker)}, model / "pytorch_model.bin")
    with pytest.raises(MissingModelFileError):
        load(model)
    assert not marker.exists()
    # Even opted in, pickle files are read with torch.load(weights_only=True).
    with pytest.raises(ModelFileError, match=r"pytorch_model\.bin"):
        load(model, allow_pickle_weights=True)
    assert not marker.exists()


def test_safetensors_win_over_pickle_weights(tiny_bert_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    model = copy_model(tiny_bert_dir, tmp_path / "both")
    torch.save({"weights": _RunsCodeWhenUnpickled(marker)}, model / "pytorch_model.bin")
    load(model, allow_pickle_weights=True)
    assert not marker.exists()


# -- remote code ------------------------------------------------------------------------------

CONFIGURATION_PY = """
from transformers import BertConfig


class CustomConfig(BertConfig):
    model_type = "custom-bert"
"""
MODELING_PY = """
from pathlib import Path

from transformers import BertModel

from .configuration_custom import CustomConfig

Path({marker!r}).touch()


class CustomModel(BertModel):
    config_class = CustomConfig
"""


def remote_code_model(base: Path, target: Path, marker: Path, model_type: str) -> Path:
    copy_model(base, target)
    config = json.loads((target / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    if model_type == "custom-bert":
        config["auto_map"]["AutoConfig"] = "configuration_custom.CustomConfig"
    (target / "config.json").write_text(json.dumps(config))
    (target / "configuration_custom.py").write_text(CONFIGURATION_PY)
    (target / "modeling_custom.py").write_text(MODELING_PY.format(marker=str(marker)))
    return target


@pytest.mark.parametrize("model_type", ["custom-bert", "bert"])
def test_remote_code_needs_the_opt_in_and_says_why(
    model_type: str, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    # "bert" with an auto_map: without the check it would load silently as a stock BertModel.
    marker = tmp_path / "remote-code-ran"
    model = remote_code_model(tiny_bert_dir, tmp_path / "custom", marker, model_type)
    builders = (
        (load, RemoteCodeError),
        # pydantic reports a ValueError raised while an adapter is built as a ValidationError.
        (lambda m: LocalEmbeddings(model=str(m)), ValueError),
        (lambda m: LocalEmbedding(model=str(m)), ValueError),
    )
    for build, error in builders:
        with pytest.raises(error) as caught:
            build(model)
        message = str(caught.value)
        assert "ships its own Python code" in message
        assert "AutoModel -> modeling_custom.CustomModel" in message
        assert "trust_remote_code=True" in message
        assert "wrong vectors" in message
    assert not marker.exists()


def test_remote_code_runs_when_trusted(tiny_bert_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import transformers.dynamic_module_utils as dynamic_modules

    modules = tmp_path / "hf-modules"
    default_modules = str(dynamic_modules.HF_MODULES_CACHE)
    monkeypatch.setattr(dynamic_modules, "HF_MODULES_CACHE", str(modules))
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry != default_modules])
    # Another test's remote code (tests/test_cde.py) may have imported transformers_modules
    # from the default modules cache: forget it here, so it is found under the one above.
    for name in [name for name in sys.modules if name.split(".")[0] == "transformers_modules"]:
        monkeypatch.delitem(sys.modules, name)
    marker = tmp_path / "remote-code-ran"
    model = remote_code_model(tiny_bert_dir, tmp_path / "custom", marker, "custom-bert")
    encoder = load(model, trust_remote_code=True, pooling="mean")
    assert type(encoder.model).__name__ == "CustomModel"
    assert marker.exists()
    reference = get_encoder(model=str(tiny_bert_dir), pooling="mean")
    np.testing.assert_array_equal(encoder.encode(["custom"]), reference.encode(["custom"]))


# -- no network -------------------------------------------------------------------------------


@pytest.fixture
def connection_attempts(monkeypatch) -> list[str]:
    """Record (and refuse) every attempt to resolve a name or open an internet socket."""
    attempts: list[str] = []
    real_socket = socket.socket

    class RecordingSocket(real_socket):  # type: ignore[misc,valid-type]
        def __new__(cls, family=-1, type=-1, proto=-1, fileno=None):
            if family in (socket.AF_INET, socket.AF_INET6, -1):
                attempts.append(f"socket({family})")
                raise OSError("network access in a test")
            return super().__new__(cls, family, type, proto, fileno)

    def refuse(name: str):
        def refused(*args, **kwargs):
            attempts.append(f"{name}{args[:2]}")
            raise OSError("network access in a test")

        return refused

    monkeypatch.setattr(socket, "socket", RecordingSocket)
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    return attempts


def test_the_recorder_sees_network_use(connection_attempts: list[str]) -> None:
    with pytest.raises(OSError):
        socket.create_connection(("huggingface.co", 443))
    with pytest.raises(OSError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    assert len(connection_attempts) == 2


def test_local_model_loads_without_network_even_when_online(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch, connection_attempts: list[str]
) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    model = copy_model(tiny_bert_dir, tmp_path / "local")
    assert LocalEmbeddings(model=str(model)).embed_query("offline") is not None
    assert LocalEncoder(EncoderConfig()).encode(["the embedded default"]).shape == (1, 384)
    assert connection_attempts == []


def test_unknown_hub_id_offline_touches_no_network(connection_attempts: list[str]) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(ModelNotFoundError) as caught:
        get_encoder(model="acme/no-such-embedder")
    message = str(caught.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert str(Path.home()) not in message
    assert connection_attempts == []


# -- no machine paths in messages -------------------------------------------------------------


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def cached_hub_model(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay ``source`` out as the hub cache does: refs/main -> snapshots/<commit>/files."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return copy_model(source, repo / "snapshots" / commit)


@pytest.mark.parametrize(
    ("file", "damage", "words"),
    [
        ("config.json", lambda p: p.write_text("{"), ["config.json of hub model 'acme/embedder'"]),
        (
            "model.safetensors",
            lambda p: _truncate(p, 0.5),
            ["model.safetensors of hub model 'acme/embedder'"],
        ),
        (
            "tokenizer.json",
            lambda p: _truncate(p, 0.5),
            ["tokenizer.json of hub model 'acme/embedder'"],
        ),
    ],
)
def test_hub_model_errors_name_the_repo_not_the_cache(
    file: str, damage, words: list[str], tiny_bert_dir: Path, hub_cache: Path, monkeypatch
) -> None:
    snapshot = cached_hub_model(hub_cache, "acme/embedder", tiny_bert_dir)
    damage(snapshot / file)
    monkeypatch.setenv("HOME", str(hub_cache.parent))  # the cache lies in "the home directory"
    with pytest.raises(ModelFileError) as caught:
        load("acme/embedder")
    message = str(caught.value)
    for word in words:
        assert word in message, message
    assert "hf cache delete" in message
    assert str(hub_cache) not in message
    assert "snapshots" not in message
    assert str(hub_cache.parent) not in message


def test_intact_hub_model_loads_offline_from_the_cache(
    tiny_bert_dir: Path, hub_cache: Path, connection_attempts: list[str]
) -> None:
    cached_hub_model(hub_cache, "acme/embedder", tiny_bert_dir)
    encoder = load("acme/embedder", pooling="mean")
    reference = get_encoder(model=str(tiny_bert_dir), pooling="mean")
    np.testing.assert_array_equal(encoder.encode(["cached"]), reference.encode(["cached"]))
    assert connection_attempts == []


def test_hub_model_without_safetensors_hints_at_the_opt_in(
    tiny_bert_dir: Path, hub_cache: Path
) -> None:
    snapshot = cached_hub_model(hub_cache, "acme/pickled", tiny_bert_dir)
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(MissingModelFileError) as caught:
        load("acme/pickled")
    assert "hub model 'acme/pickled'" in str(caught.value)
    assert "allow_pickle_weights=True" in str(caught.value)
    assert str(hub_cache) not in str(caught.value)


@pytest.mark.parametrize("allow", [False, True])
def test_hub_downloads_pickle_weights_only_when_allowed(allow: bool, monkeypatch) -> None:
    import huggingface_hub

    from localembed.loading import locate_model

    requested: list[list[str]] = []

    def fake_snapshot_download(repo_id: str, allow_patterns: list[str]) -> str:
        requested.append(allow_patterns)
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(ModelNotFoundError):
        locate_model("acme/some-model", allow_pickle_weights=allow)
    (patterns,) = requested
    assert ("pytorch_model*.bin" in patterns) is allow
    assert not {"*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl"} & set(patterns)  # never all pickles


QUIET_LOAD = """
import sys, torch
from pathlib import Path
from transformers import BertConfig, BertModel
from localembed.weights import load_transformer
target = Path(sys.argv[1])
config = BertConfig(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
)
BertModel(config, add_pooling_layer=False).save_pretrained(target)
print("LOADING", file=sys.stderr, flush=True)
load_transformer(target, dtype=torch.float32, device=torch.device("cpu"), trust_remote_code=False)
"""


def test_a_model_without_pooler_loads_quietly(tmp_path: Path) -> None:
    # Sentence-embedding checkpoints often lack BERT's pooler; transformers prints a
    # "LOAD REPORT" table and a per-tensor progress bar for that (in a fresh process: its
    # logging handler is set up on first use).
    result = subprocess.run(
        [sys.executable, "-c", QUIET_LOAD, str(tmp_path / "no-pooler")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    after = result.stderr.split("LOADING", 1)[1]
    assert "LOAD REPORT" not in after and "Loading weights" not in after, after
