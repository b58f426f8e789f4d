"""Hardware detection (cpuinfo, affinity, cgroup quotas), process settings, oneDNN Linear."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localembed import hardware
from localembed.hardware import CpuInfo

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512_bf16 avx512_vnni

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: fpu
"""
ZEN3 = ZEN4.replace(" avx512f avx512dq avx512_bf16 avx512_vnni", "").replace("25", "25", 1)
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp sve
CPU implementer\t: 0x41
"""


def cpu(tmp_path: Path, text: str) -> CpuInfo:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return hardware.read_cpuinfo(path)


def test_cpuinfo_of_an_amd_avx512_cpu(tmp_path: Path) -> None:
    info = cpu(tmp_path, ZEN4)
    assert (info.vendor, info.family, info.model) == ("AuthenticAMD", 25, 17)
    assert info.model_name == "AMD EPYC 9654 96-Core Processor"
    assert info.features() == {
        "avx2": True,
        "avx512f": True,
        "avx512_bf16": True,
        "avx512_vnni": True,
        "amx": False,
    }
    assert info.amd_avx512
    assert hardware.linear_kernel({"LOCALEMBED_LINEAR_KERNEL": "auto"}, info) == "onednn"


@pytest.mark.parametrize("text", [ZEN3, SAPPHIRE_RAPIDS, GRAVITON, ""])
def test_no_amd_avx512_measure_on_other_cpus(tmp_path: Path, text: str) -> None:
    info = cpu(tmp_path, text)
    assert not info.amd_avx512
    assert hardware.linear_kernel({"LOCALEMBED_LINEAR_KERNEL": "auto"}, info) == "mkl"


def test_intel_amx_and_arm_features(tmp_path: Path) -> None:
    assert cpu(tmp_path, SAPPHIRE_RAPIDS).has("amx")
    arm = cpu(tmp_path, GRAVITON)
    assert arm.vendor == "unknown" and not arm.has("avx2")
    assert hardware.read_cpuinfo(tmp_path / "missing") == CpuInfo()


def test_linear_kernel_setting() -> None:
    intel = CpuInfo(vendor="GenuineIntel", flags=frozenset({"avx512f"}))
    assert hardware.linear_kernel({}, intel) == "mkl"
    assert hardware.linear_kernel({"LOCALEMBED_LINEAR_KERNEL": "oneDNN"}, intel) == "onednn"
    with pytest.raises(ValueError, match="auto, mkl, onednn"):
        hardware.linear_kernel({"LOCALEMBED_LINEAR_KERNEL": "blas"}, intel)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_takes_the_smallest_up_the_tree(tmp_path: Path) -> None:
    write(tmp_path / "self", "0::/app/worker\n")
    write(tmp_path / "cpu.max", "max 100000\n")
    write(tmp_path / "app" / "cpu.max", "250000 100000\n")
    write(tmp_path / "app" / "worker" / "cpu.max", "max 100000\n")
    assert hardware.cgroup_cpu_quota(tmp_path, tmp_path / "self") == 2.5
    write(tmp_path / "app" / "worker" / "cpu.max", "50000 100000\n")
    assert hardware.cgroup_cpu_quota(tmp_path, tmp_path / "self") == 0.5


def test_cgroup_v2_without_quota(tmp_path: Path) -> None:
    write(tmp_path / "self", "0::/\n")
    write(tmp_path / "cpu.max", "max 100000\n")
    assert hardware.cgroup_cpu_quota(tmp_path, tmp_path / "self") is None
    assert hardware.cgroup_cpu_quota(tmp_path, tmp_path / "no-such-file") is None


@pytest.mark.parametrize("controllers", ["cpu,cpuacct", "cpu"])
def test_cgroup_v1_quota(tmp_path: Path, controllers: str) -> None:
    write(tmp_path / "self", f"4:memory:/docker/abc\n2:{controllers}:/docker/abc\n")
    # In a container the controller's mount is the container's own group.
    write(tmp_path / controllers / "cpu.cfs_quota_us", "300000\n")
    write(tmp_path / controllers / "cpu.cfs_period_us", "100000\n")
    assert hardware.cgroup_cpu_quota(tmp_path, tmp_path / "self") == 3.0
    write(tmp_path / controllers / "cpu.cfs_quota_us", "-1\n")
    assert hardware.cgroup_cpu_quota(tmp_path, tmp_path / "self") is None


def test_usable_cpus_and_threads() -> None:
    assert hardware.usable_cpus(affinity=64, quota=2.0) == 2
    assert hardware.usable_cpus(affinity=2, quota=0.2) == 1
    assert hardware.usable_cpus(affinity=2, quota=8) == 2
    assert hardware.resolve_threads(5, current=2, environ={}) == 5
    assert hardware.resolve_threads("auto", current=1, environ={}) == 1  # never raised
    usable = hardware.usable_cpus(quota=hardware.cgroup_cpu_quota())
    assert hardware.resolve_threads("auto", current=512, environ={}) == usable
    assert hardware.resolve_threads("auto", current=512, environ={"MKL_NUM_THREADS": "9"}) == 512
    for bad in (0, -1, "4", 2.0, True):
        with pytest.raises(ValueError, match="'auto' or a positive int"):
            hardware.check_threads(bad)  # type: ignore[arg-type]


CONFIGURE = """
import json, sys
from localembed import hardware
from localembed.hardware import CpuInfo
cpu = CpuInfo(vendor=sys.argv[2], flags=frozenset({"avx2", "avx512f"}))
env = json.loads(sys.argv[1])
settings = hardware.configure_process(env, cpu)
print(json.dumps([settings.applied, settings.kept, env, "torch" in sys.modules]))
"""


@pytest.mark.parametrize(
    ("vendor", "given", "applied"),
    [
        ("AuthenticAMD", {}, {"OMP_WAIT_POLICY": "PASSIVE", "LOCALEMBED_LINEAR_KERNEL": "auto"}),
        ("GenuineIntel", {}, {"OMP_WAIT_POLICY": "PASSIVE"}),
        ("AuthenticAMD", {"OMP_WAIT_POLICY": "active", "LOCALEMBED_LINEAR_KERNEL": "mkl"}, {}),
        ("AuthenticAMD", {"OMP_WAIT_POLICY": "active"}, {"LOCALEMBED_LINEAR_KERNEL": "auto"}),
    ],
)
def test_configure_process_before_torch(
    vendor: str, given: dict[str, str], applied: dict[str, str]
) -> None:
    # A fresh interpreter: torch is not imported yet there (in this test session it is).
    out = subprocess.run(
        [sys.executable, "-c", CONFIGURE, json.dumps(given), vendor],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    got_applied, kept, env, torch_imported = json.loads(out)
    assert got_applied == applied
    assert kept == given  # what the user set is kept as is
    assert env == {**given, **applied}
    assert torch_imported is False  # configure_process itself imports no torch


def test_configure_process_after_torch_warns_and_does_nothing() -> None:
    import torch  # noqa: F401

    env: dict[str, str] = {}
    with pytest.warns(RuntimeWarning, match="after torch was imported"):
        settings = hardware.configure_process(env)
    assert env == {} and settings.applied == {}


def test_describe_hardware_names_features_threads_and_kernels() -> None:
    text = hardware.describe_hardware()
    for fragment in ("features: avx2", "usable (affinity", "OMP_WAIT_POLICY", "GEMM kernels: MKL"):
        assert fragment in text
    assert "AMD AVX-512 override" in text


def test_onednn_linear_keeps_hidden_states(default_model_dir: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from localembed.onednn import onednn_available, use_onednn_linear

    if not onednn_available():
        pytest.skip("this torch has no oneDNN")
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    model = AutoModel.from_pretrained(default_model_dir).eval()
    texts = ["A man is playing a guitar.", "", "word " * 300, "Two dogs run in a field."]
    inputs = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        reference = model(**inputs)[0]
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert use_onednn_linear(model) == linears > 0
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert "oneDNN + gelu" in repr(model.encoder.layer[0].intermediate)  # GELU fused in
    assert type(model.encoder.layer[0].intermediate.intermediate_act_fn) is torch.nn.Identity
    with torch.inference_mode():
        hidden = model(**inputs)[0]
    assert torch.isfinite(hidden).all()
    real = inputs["attention_mask"].bool()
    scale = reference[real].abs().max().item()
    assert (hidden - reference)[real].abs().max().item() < 1e-5 * scale
    pooled = [
        torch.nn.functional.normalize((h * real[..., None]).sum(1), dim=-1)
        for h in (hidden, reference)
    ]
    assert (pooled[0] - pooled[1]).abs().max().item() < 1e-5
    assert use_onednn_linear(model) == 0  # idempotent


@pytest.mark.parametrize("user_policy", [None, "ACTIVE"])
def test_cli_sets_a_passive_wait_policy_unless_the_user_set_one(user_policy: str | None) -> None:
    import os

    env = {
        k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", hardware.LINEAR_KERNEL)
    }
    if user_policy:
        env["OMP_WAIT_POLICY"] = user_policy
    result = subprocess.run(
        [sys.executable, "-m", "localembed.cli", "info", "--hardware"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    if user_policy:
        assert lines["OMP_WAIT_POLICY"] == "ACTIVE"
    else:
        assert lines["OMP_WAIT_POLICY"] == "PASSIVE (set by localembed)"
    amd_avx512 = hardware.read_cpuinfo().amd_avx512
    assert ("fp32 Linear layers: onednn" in lines["GEMM kernels"]) is amd_avx512
    assert lines["features"].startswith("avx2 ")


def test_encoder_runs_linear_layers_through_onednn_when_asked(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    import numpy as np
    import torch

    from localembed import get_encoder
    from localembed.encoder import clear_encoder_cache
    from localembed.onednn import onednn_available

    if not onednn_available():
        pytest.skip("this torch has no oneDNN")
    texts = ["alpha beta", "", "gamma " * 40, "delta epsilon zeta"]
    reference = get_encoder(model=tiny_bert_dir, backend="torch").encode(texts)
    # Equal settings share one loaded model: forget it, so that the next load takes the
    # oneDNN kernel, and forget that one afterwards, so that no other test gets it.
    clear_encoder_cache()
    monkeypatch.setenv("LOCALEMBED_LINEAR_KERNEL", "onednn")
    try:
        encoder = get_encoder(model=tiny_bert_dir, backend="torch")
        kinds = {type(m).__name__ for m in encoder.model.modules()}
        assert "OneDnnLinear" in kinds and "Linear" not in kinds
        assert np.abs(encoder.encode(texts) - reference).max() < 1e-5
        layer = next(m for m in encoder.model.modules() if type(m).__name__ == "OneDnnLinear")
        copy = pickle.loads(pickle.dumps(layer))
        inputs = torch.randn(3, layer.in_features)
        assert torch.equal(copy(inputs), layer(inputs))
    finally:
        clear_encoder_cache()


def test_threads_auto_never_raises_the_count(tiny_bert_dir: Path) -> None:
    import torch

    from localembed import get_encoder

    before = torch.get_num_threads()
    get_encoder(model=tiny_bert_dir, backend="torch", max_batch_tokens=997)
    assert torch.get_num_threads() <= before
    assert torch.get_num_threads() <= hardware.usable_cpus(quota=hardware.cgroup_cpu_quota())


def test_threads_option_sets_torch_and_onnx_threads(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from localembed import EncoderConfig, get_encoder

    before = torch.get_num_threads()
    try:
        get_encoder(model=tiny_bert_dir, backend="torch", threads=1, max_batch_tokens=996)
        assert torch.get_num_threads() == 1  # process-wide: documented
        monkeypatch.setenv("LOCALEMBED_CACHE", str(tmp_path))
        onnx = get_encoder(model=tiny_bert_dir, backend="onnx", threads=1)
        assert onnx.runtime.session.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)
    for bad in (0, -1, True, 1.5, "4"):
        with pytest.raises(ValueError, match="'auto' or a positive int"):
            EncoderConfig(threads=bad)


def test_each_model_runs_its_passes_on_its_own_thread_count(tiny_bert_dir: Path) -> None:
    """A model loaded with threads=1 runs on 1 thread even in a thread whose count another
    model (or the caller) set to 2 since: torch keeps the count per thread."""
    import torch

    from localembed import get_encoder

    before = torch.get_num_threads()
    seen: list[int] = []
    try:
        one = get_encoder(model=tiny_bert_dir, backend="torch", threads=1, max_batch_tokens=995)
        model = one.backend.runtime.model
        handle = model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
        torch.set_num_threads(2)  # what loading a 2-thread model in this thread leaves
        try:
            one.encode(["a lone query"])
        finally:
            handle.remove()
    finally:
        torch.set_num_threads(before)
    assert seen == [1]


def _readings(*others: float, cpus: int = 2) -> list[hardware.CpuSample]:
    """One reading per second: this process used 1 CPU, other processes ``others[i]`` CPUs."""
    samples = [hardware.CpuSample(0.0, 0.0, 0.0, cpus)]
    for second, other in enumerate(others, start=1):
        last = samples[-1]
        samples.append(hardware.CpuSample(float(second), last.busy + 1 + other, last.own + 1, cpus))
    return samples


def test_adaptive_threads_follow_the_load_beside_them() -> None:
    samples = iter(_readings(0.0, 1.0, 0.9, 0.3, 0.0))
    threads = hardware.AdaptiveThreads(2, sample=lambda: next(samples))
    assert threads.next_count() == 2  # the first reading only starts the count
    # quiet; one busy process; most of one (it gets less while we run 2); a little; quiet
    assert [threads.next_count() for _ in range(5)] == [2, 1, 1, 2, 2]
    assert threads.others == 0.0
    # Readings closer together than the interval change nothing; unreadable: the maximum.
    close = iter([*_readings(1.0), hardware.CpuSample(1.1, 9.0, 1.0, 2)])
    threads = hardware.AdaptiveThreads(2, sample=lambda: next(close))
    assert [threads.next_count() for _ in range(3)] == [2, 1, 1]
    threads.sample = lambda: None
    assert threads.next_count() == 2
    assert hardware.AdaptiveThreads(1, sample=lambda: None).next_count() == 1
    # More CPUs: only what the others leave free, never more than the maximum.
    wide = iter(_readings(2.6, 0.0, cpus=8))
    threads = hardware.AdaptiveThreads(6, sample=lambda: next(wide))
    assert [threads.next_count() for _ in range(3)] == [6, 5, 6]


def test_sample_cpu_reads_the_busy_time_of_this_process_s_cpus(tmp_path: Path) -> None:
    import os

    allowed = sorted(os.sched_getaffinity(0))
    stat = tmp_path / "stat"
    lines = ["cpu  900 900 900 900 900 900 900 900 0 0"]
    # user nice system idle iowait irq softirq steal guest guest_nice, per CPU
    lines += [f"cpu{index} 100 10 20 5000 30 1 2 3 0 0" for index in allowed]
    lines += [f"cpu{max(allowed) + 1} 999 0 0 0 0 0 0 0 0 0", "intr 1 2 3"]
    stat.write_text("\n".join(lines) + "\n", encoding="ascii")
    reading = hardware.sample_cpu(stat)
    assert reading is not None
    ticks = os.sysconf("SC_CLK_TCK")
    assert reading.cpus == len(allowed)
    assert reading.busy == pytest.approx(len(allowed) * 136 / ticks)  # idle and iowait left out
    assert reading.own > 0 and reading.wall > 0
    assert hardware.sample_cpu(tmp_path / "missing") is None
    assert hardware.sample_cpu(Path("/proc/stat")) is not None  # the real file parses


def test_adaptive_threads_setting() -> None:
    assert hardware.adaptive_threads("auto", {}) is hardware.ADAPTIVE_DEFAULT
    assert hardware.adaptive_threads("auto", {"LOCALEMBED_ADAPTIVE_THREADS": "1"}) is True
    assert hardware.adaptive_threads("auto", {"LOCALEMBED_ADAPTIVE_THREADS": "0"}) is False
    # A count the user chose is kept as it is.
    assert hardware.adaptive_threads(2, {"LOCALEMBED_ADAPTIVE_THREADS": "1"}) is False
    on_but_pinned = {"LOCALEMBED_ADAPTIVE_THREADS": "1", "OMP_NUM_THREADS": "2"}
    assert hardware.adaptive_threads("auto", on_but_pinned) is False
    with pytest.raises(ValueError, match="LOCALEMBED_ADAPTIVE_THREADS must be 0 or 1, got 'yes'"):
        hardware.adaptive_threads("auto", {"LOCALEMBED_ADAPTIVE_THREADS": "yes"})


def test_torch_runtime_runs_batches_on_one_thread_beside_a_busy_process(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setenv("LOCALEMBED_SPLIT_ROWS", "0")  # adaptive threads run unsplit passes
    from transformers import AutoModel

    from localembed.runtimes import TorchRuntime

    model = AutoModel.from_pretrained(tiny_bert_dir).eval()
    seen: list[int] = []
    model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        plain = TorchRuntime(model, threads=2, adaptive=False)
        busy = iter(_readings(1.0, 1.0, 0.0))
        adaptive = TorchRuntime(
            model, threads=2, adaptive=hardware.AdaptiveThreads(2, sample=lambda: next(busy))
        )
        ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
        mask = (ids != 0).long()
        reference = plain(ids, mask)
        outputs = [adaptive(ids, mask) for _ in range(4)]
        # First reading, one busy process twice (1 thread), quiet again (2 threads).
        assert seen == [2, 2, 1, 1, 2]
        assert torch.get_num_threads() == 2  # restored after each batch
        # One thread or two: MKL may sum a small product in another order (2.4e-7 seen on
        # this tiny model; bit-equal on all-MiniLM-L6-v2), never more than the 1e-5 contract.
        for output in outputs:
            assert (output - reference).abs().max() < 1e-5
    finally:
        torch.set_num_threads(before)


def test_encoder_adapts_its_threads_only_when_asked(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from localembed import get_encoder
    from localembed.encoder import clear_encoder_cache
    from localembed.runtimes import TorchRuntime

    def runtime(**options: object) -> TorchRuntime:
        loaded = get_encoder(model=tiny_bert_dir, backend="torch", **options).runtime
        assert isinstance(loaded, TorchRuntime)
        return loaded

    clear_encoder_cache()  # the setting is read when a model loads
    try:
        monkeypatch.setenv("LOCALEMBED_ADAPTIVE_THREADS", "0")
        assert runtime().adaptive is None
        clear_encoder_cache()
        monkeypatch.setenv("LOCALEMBED_ADAPTIVE_THREADS", "1")
        adaptive = runtime().adaptive
        assert isinstance(adaptive, hardware.AdaptiveThreads)
        assert adaptive.maximum == runtime().threads
        assert runtime(threads=1).adaptive is None  # a count you chose is kept
    finally:
        clear_encoder_cache()
