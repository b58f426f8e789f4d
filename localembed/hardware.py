"""The machine this process runs on: usable CPUs, CPU features, and process settings.

Framework-free at import (torch is imported only inside the functions that report on it), so
:func:`configure_process` can run before torch loads:

- **Usable CPUs**: the CPUs this process may run on (its affinity) capped by its cgroup CPU
  quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``): a container limited to 2 CPUs on a
  64-core host gets 2, not 64 (``os.cpu_count()`` says 64).
- **OpenMP wait policy**: torch's OpenMP threads busy-wait between parallel regions by
  default; when anything else runs on the same cores they steal each other's time.
  ``OMP_WAIT_POLICY=PASSIVE`` makes them sleep instead. OpenMP reads it once, when torch
  loads, so it must be in the environment before ``import torch``.
- **AMD AVX-512**: MKL (torch's fp32 GEMM on x86) runs its AVX-512 kernels only on Intel
  CPUs; on AMD CPUs with AVX-512 (Zen 4/5) it takes a slower path. oneDNN, also inside torch,
  picks its kernels from the CPU's features, so localembed can run the Linear layers through
  oneDNN there (same products, vectors within 1e-6). ``LOCALEMBED_LINEAR_KERNEL`` chooses:
  ``mkl`` (torch's default), ``onednn``, or ``auto`` (oneDNN on AMD CPUs with AVX-512, torch's
  default elsewhere). The CLI and the server call :func:`configure_process`, which sets it to
  ``auto`` unless the user set it.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
import warnings
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from localembed.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Callable

WAIT_POLICY = "OMP_WAIT_POLICY"
LINEAR_KERNEL = "LOCALEMBED_LINEAR_KERNEL"
LINEAR_KERNELS = ("auto", "mkl", "onednn")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables through which a user sizes torch's thread pool themselves."""

FEATURES = {
    "avx2": ("avx2",),
    "avx512f": ("avx512f",),
    "avx512_bf16": ("avx512_bf16",),
    "avx512_vnni": ("avx512_vnni",),
    "amx": ("amx_tile", "amx_bf16", "amx_int8"),
}
"""Reported feature -> /proc/cpuinfo flags that show it (any of them)."""

Threads = int | Literal["auto"]


@dataclass(frozen=True)
class CpuInfo:
    """Vendor, model and instruction-set flags of the CPU (from /proc/cpuinfo)."""

    vendor: str = "unknown"
    model_name: str = "unknown"
    family: int | None = None
    model: int | None = None
    flags: frozenset[str] = field(default_factory=frozenset)

    def has(self, feature: str) -> bool:
        """Whether the CPU has ``feature`` (a key of :data:`FEATURES`)."""
        return any(flag in self.flags for flag in FEATURES[feature])

    @property
    def is_amd(self) -> bool:
        """An AMD CPU (vendor AuthenticAMD)."""
        return self.vendor == "AuthenticAMD"

    @property
    def amd_avx512(self) -> bool:
        """An AMD CPU with AVX-512: where MKL leaves its AVX-512 kernels unused."""
        return self.is_amd and self.has("avx512f")

    def features(self) -> dict[str, bool]:
        """Each reported feature and whether the CPU has it."""
        return {name: self.has(name) for name in FEATURES}


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """The first processor's vendor, family, model and flags; an empty description if unreadable."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return CpuInfo()
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if values:
                break  # the first processor is enough
            continue
        key, _, value = line.partition(":")
        values.setdefault(key.strip(), value.strip())
    flags = values.get("flags") or values.get("Features") or ""
    return CpuInfo(
        vendor=values.get("vendor_id", "unknown"),
        model_name=values.get("model name", "unknown"),
        family=_int_or_none(values.get("cpu family")),
        model=_int_or_none(values.get("model")),
        flags=frozenset(flags.split()),
    )


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def affinity_cpus() -> int:
    """How many CPUs this process may run on (its scheduler affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cgroup_cpu_quota(
    root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
) -> float | None:
    """This process's cgroup CPU quota in CPUs (e.g. 1.5), or None when it has none.

    cgroup v2: ``cpu.max`` ("quota period" or "max period") of the process's group and each
    group above it (the smallest wins). cgroup v1: ``cpu.cfs_quota_us / cpu.cfs_period_us``
    (-1: none) of the cpu controller's group.
    """
    try:
        lines = membership.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    quotas: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, relative = parts[1], parts[2].strip().strip("/")
        if controllers == "":  # cgroup v2: this group and every group above it
            folder = root / relative
            quotas.extend(_v2_quota(folder / "cpu.max"))
            while folder != root:
                folder = folder.parent
                quotas.extend(_v2_quota(folder / "cpu.max"))
        elif "cpu" in controllers.split(","):  # cgroup v1: in a container, the mount is the group
            for base in dict.fromkeys([root / controllers, root / "cpu"]):
                quotas.extend(_v1_quota(base / relative))
                if relative:
                    quotas.extend(_v1_quota(base))
    return min(quotas) if quotas else None


def _v2_quota(path: Path) -> list[float]:
    try:
        quota, period = path.read_text(encoding="utf-8").split()[:2]
    except (OSError, ValueError):
        return []
    if quota == "max":
        return []
    try:
        return [int(quota) / int(period)] if int(quota) > 0 and int(period) > 0 else []
    except ValueError:
        return []


def _v1_quota(folder: Path) -> list[float]:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text(encoding="utf-8"))
        period = int((folder / "cpu.cfs_period_us").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [quota / period] if quota > 0 and period > 0 else []


def usable_cpus(affinity: int | None = None, quota: float | None = None) -> int:
    """CPUs this process can keep busy: its affinity capped by its cgroup quota (at least 1).

    Example:
        >>> usable_cpus(affinity=64, quota=2.5)
        3
        >>> usable_cpus(affinity=4, quota=None)
        4

    """
    count = affinity_cpus() if affinity is None else affinity
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def check_threads(threads: Threads) -> Threads:
    """Validate a ``threads`` setting: "auto" or a positive int."""
    if threads == "auto" or (
        isinstance(threads, int) and not isinstance(threads, bool) and threads > 0
    ):
        return threads
    msg = f"threads must be 'auto' or a positive int, got {threads!r}"
    raise InputError(msg)


def resolve_threads(
    threads: Threads, current: int, environ: MutableMapping[str, str] | None = None
) -> int:
    """The intra-op thread count a ``threads`` setting asks for, given torch's ``current`` one.

    An int is taken as is. "auto" keeps a count the user chose (``OMP_NUM_THREADS`` or
    ``MKL_NUM_THREADS`` set) and otherwise caps ``current`` (torch sizes its pool from the
    cores it sees) at :func:`usable_cpus` (affinity and cgroup quota); it never raises it.

    Example:
        >>> resolve_threads(3, current=8)
        3
        >>> resolve_threads("auto", current=8, environ={"OMP_NUM_THREADS": "8"})
        8

    """
    check_threads(threads)
    if isinstance(threads, int):
        return threads
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in THREAD_VARIABLES):
        return current
    return max(1, min(current, usable_cpus(quota=cgroup_cpu_quota())))


def apply_threads(threads: Threads) -> int:
    """Set torch's intra-op thread count (process-wide) from ``threads``; returns it.

    torch has one intra-op pool per process: the last encoder loaded with an explicit count
    sets it for every encoder (and anything else using torch) in the process.
    """
    import torch

    from localembed.forks import torch_thread_count

    count = torch_thread_count(resolve_threads(threads, torch.get_num_threads()))
    if count != torch.get_num_threads():
        torch.set_num_threads(count)
    return count


def env_switch(variable: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether an on/off environment variable is on: ``0`` off, ``1`` or unset on.

    Example:
        >>> env_switch("LOCALEMBED_SPLIT_ROWS", {"LOCALEMBED_SPLIT_ROWS": "0"})
        False
        >>> env_switch("LOCALEMBED_SPLIT_ROWS", {})
        True

    Raises:
        InputError: the variable is set to something other than 0 or 1.
    """
    env = os.environ if environ is None else environ
    value = env.get(variable, "").strip()
    if value not in {"", "0", "1"}:
        msg = f"{variable} must be 0 or 1, got {value!r}"
        raise InputError(msg)
    return value != "0"


def linear_kernel(
    environ: MutableMapping[str, str] | None = None, cpu: CpuInfo | None = None
) -> Literal["mkl", "onednn"]:
    """Which kernels run fp32 Linear layers on the CPU: ``LOCALEMBED_LINEAR_KERNEL`` resolved.

    Unset or "mkl": torch's default (MKL). "onednn": oneDNN. "auto": oneDNN on AMD CPUs with
    AVX-512, torch's default elsewhere.

    Example:
        >>> linear_kernel({"LOCALEMBED_LINEAR_KERNEL": "auto"}, CpuInfo(vendor="GenuineIntel"))
        'mkl'

    """
    env = os.environ if environ is None else environ
    value = env.get(LINEAR_KERNEL, "mkl").strip().lower() or "mkl"
    if value not in LINEAR_KERNELS:
        msg = f"{LINEAR_KERNEL} must be one of {', '.join(LINEAR_KERNELS)}, got {value!r}"
        raise InputError(msg)
    if value == "auto":
        return "onednn" if (cpu or read_cpuinfo()).amd_avx512 else "mkl"
    return "onednn" if value == "onednn" else "mkl"


@dataclass
class ProcessSettings:
    """What :func:`configure_process` set (variable -> value); the rest was already set."""

    applied: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)


def recommended_settings(cpu: CpuInfo | None = None) -> dict[str, str]:
    """The environment :func:`configure_process` sets (where the user has not).

    Example:
        >>> recommended_settings(CpuInfo(vendor="AuthenticAMD", flags=frozenset({"avx512f"})))
        {'OMP_WAIT_POLICY': 'PASSIVE', 'LOCALEMBED_LINEAR_KERNEL': 'auto'}

    """
    wanted = {WAIT_POLICY: "PASSIVE"}
    if (cpu or read_cpuinfo()).amd_avx512:
        wanted[LINEAR_KERNEL] = "auto"
    return wanted


def configured() -> dict[str, str]:
    """The variables :func:`configure_process` set in this process's environment."""
    return dict(_CONFIGURED)


_CONFIGURED: dict[str, str] = {}
"""The variables :func:`configure_process` set in this process (for describe_hardware)."""


def configure_process(
    environ: MutableMapping[str, str] | None = None,
    cpu: CpuInfo | None = None,
    *,
    warn_after_torch: bool = True,
) -> ProcessSettings:
    """Process settings for a command or server that owns its process; before ``import torch``.

    Unless the user set them: ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep instead
    of spinning, so a busy machine does not stall torch), and on AMD CPUs with AVX-512,
    ``LOCALEMBED_LINEAR_KERNEL=auto`` (fp32 Linear layers through oneDNN's AVX-512 kernels).
    After torch has been imported it changes nothing and warns (unless ``warn_after_torch``
    is False): OpenMP has read its settings.
    A library should leave this to the application (it changes the whole process).
    """
    env = os.environ if environ is None else environ
    settings = ProcessSettings()
    if "torch" in sys.modules:
        if not warn_after_torch:
            return settings
        warnings.warn(
            "localembed.hardware.configure_process() was called after torch was imported: "
            "OpenMP has already read its settings, nothing was changed",
            RuntimeWarning,
            stacklevel=2,
        )
        return settings
    for name, value in recommended_settings(cpu).items():
        if env.get(name):
            settings.kept[name] = env[name]
        else:
            env[name] = value
            settings.applied[name] = value
    if environ is None:
        _CONFIGURED.update(settings.applied)
    return settings


def torch_kernels() -> dict[str, str]:
    """The CPU kernels of torch: its vector capability and the MKL / oneDNN versions it carries."""
    import torch

    config = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", config)
    onednn = re.search(r"MKL-DNN v([\w.]+)", config)
    return {
        "torch": torch.__version__,
        "cpu capability": str(torch.backends.cpu.get_cpu_capability()),
        "MKL": mkl.group(1) if mkl else "none",
        "oneDNN": onednn.group(1) if onednn else "none",
        "threads": str(torch.get_num_threads()),
    }


def describe_hardware(cpu: CpuInfo | None = None) -> str:
    """What ``localembed info --hardware`` prints: CPU, features, threads, GEMM kernels."""
    cpu = cpu or read_cpuinfo()
    quota = cgroup_cpu_quota()
    affinity = affinity_cpus()
    features = " ".join(f"{name} {'yes' if has else 'no'}" for name, has in cpu.features().items())
    family = f", family {cpu.family} model {cpu.model}" if cpu.family is not None else ""
    policy = os.environ.get(WAIT_POLICY)
    if policy is None:
        policy_text = "unset (OpenMP default: idle threads spin)"
    else:
        policy_text = policy + (" (set by localembed)" if WAIT_POLICY in _CONFIGURED else "")
    kernel = linear_kernel(cpu=cpu)
    override = (
        "active: Linear layers run through oneDNN"
        if kernel == "onednn" and cpu.amd_avx512
        else ("not needed" if not cpu.amd_avx512 else "off (MKL takes its non-AVX-512 path)")
    )
    lines = [
        f"cpu: {cpu.model_name} ({cpu.vendor}{family})",
        f"features: {features}",
        f"cpus: {usable_cpus(affinity, quota)} usable (affinity {affinity}, cgroup quota "
        f"{'none' if quota is None else f'{quota:g}'}; os.cpu_count {os.cpu_count()})",
        f"{WAIT_POLICY}: {policy_text}",
    ]
    kernels = torch_kernels()
    lines += [
        f"torch {kernels['torch']}: {kernels['threads']} intra-op threads, "
        f"cpu capability {kernels['cpu capability']}",
        f"GEMM kernels: MKL {kernels['MKL']}, oneDNN {kernels['oneDNN']}; "
        f"fp32 Linear layers: {kernel} ({LINEAR_KERNEL}={os.environ.get(LINEAR_KERNEL, 'unset')})",
        f"AMD AVX-512 override: {override}",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class CpuSample:
    """A reading of the CPUs this process may use, for :class:`AdaptiveThreads`."""

    wall: float
    """Seconds on a monotonic clock."""
    busy: float
    """Non-idle CPU-seconds so far of those CPUs, every process together (``/proc/stat``)."""
    own: float
    """CPU-seconds so far of this process, all its threads (``time.process_time``)."""
    cpus: int
    """How many CPUs the reading covers."""


def sample_cpu(stat: Path = Path("/proc/stat")) -> CpuSample | None:
    """Read the busy time of this process's CPUs and its own CPU time; None where unreadable.

    Busy time is user, nice, system, irq, softirq and steal (time the hypervisor gave another
    machine) of each ``cpuN`` line for the CPUs in this process's affinity.
    """
    try:
        allowed = os.sched_getaffinity(0)
        lines = stat.read_text(encoding="ascii").splitlines()
        ticks = os.sysconf("SC_CLK_TCK")
    except (AttributeError, OSError, ValueError):
        return None
    busy = 0
    cpus = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            index = int(name[3:])
            fields = [int(value) for value in rest.split()]
        except ValueError:
            continue
        if index not in allowed or len(fields) < 8:
            continue
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        busy += user + nice + system + irq + softirq + steal
        cpus += 1
    if cpus == 0 or ticks <= 0:
        return None
    return CpuSample(time.monotonic(), busy / ticks, time.process_time(), cpus)


ADAPTIVE_INTERVAL = 0.2
"""Seconds of readings :class:`AdaptiveThreads` gathers before it changes the count."""


class AdaptiveThreads:
    """torch's intra-op thread count for the next batch, from the load beside this process.

    Between batches it reads how much CPU time other processes took on this process's CPUs
    since the last decision (their busy time less this process's own CPU time, over the wall
    time: ``others`` CPUs) and runs ``round(cpus - others)`` threads, at least 1 and at most
    ``maximum``. With two cores and one other busy process that is 1 thread: OpenMP threads
    that wait at each operator's barrier for a thread the scheduler has put aside lose far
    more than the second core gives. When the other load stops, the count goes back up.
    Decisions are at least ``interval`` seconds apart (the kernel counts CPU time in ticks of
    10 ms). Where ``/proc/stat`` cannot be read it keeps ``maximum``.

    Example:
        >>> readings = iter([CpuSample(0.0, 0.0, 0.0, 2), CpuSample(1.0, 2.0, 1.0, 2)])
        >>> threads = AdaptiveThreads(2, sample=lambda: next(readings))
        >>> threads.next_count(), threads.next_count()
        (2, 1)

    """

    def __init__(
        self,
        maximum: int,
        *,
        sample: Callable[[], CpuSample | None] = sample_cpu,
        interval: float = ADAPTIVE_INTERVAL,
    ) -> None:
        """Adapt between 1 and ``maximum`` threads, from readings of ``sample``."""
        self.maximum = max(1, maximum)
        self.sample = sample
        self.interval = interval
        self.count = self.maximum
        """The count chosen last."""
        self.others = 0.0
        """CPUs other processes kept busy over the last decision's interval."""
        self._last: CpuSample | None = None

    def next_count(self) -> int:
        """The thread count for the next batch (takes a reading)."""
        if self.maximum == 1:
            return 1
        if self._last is not None and time.monotonic() < self._last.wall + self.interval:
            return self.count  # too soon to decide again: no reading (about 0.1 ms each)
        reading = self.sample()
        if reading is None:
            self._last = None
            self.count = self.maximum
            return self.count
        last = self._last
        if last is None or reading.cpus != last.cpus:
            self._last = reading
            return self.count
        wall = reading.wall - last.wall
        if wall < self.interval:
            return self.count
        others = max(0.0, (reading.busy - last.busy) - (reading.own - last.own)) / wall
        self.others = others
        self.count = max(1, min(self.maximum, math.floor(reading.cpus - others + 0.5)))
        self._last = reading
        return self.count


ADAPTIVE_THREADS = "LOCALEMBED_ADAPTIVE_THREADS"
ADAPTIVE_DEFAULT = False
"""Whether ``threads="auto"`` adapts to other load when ``LOCALEMBED_ADAPTIVE_THREADS`` is unset."""


def adaptive_threads(threads: Threads, environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether a torch model loaded with ``threads`` adapts its threads per batch.

    Only ``threads="auto"`` without a count the user set (``OMP_NUM_THREADS``,
    ``MKL_NUM_THREADS``) adapts; ``LOCALEMBED_ADAPTIVE_THREADS`` = ``1`` / ``0`` turns it
    on / off, unset is :data:`ADAPTIVE_DEFAULT`.

    Example:
        >>> adaptive_threads("auto", {"LOCALEMBED_ADAPTIVE_THREADS": "1"})
        True
        >>> adaptive_threads(2, {"LOCALEMBED_ADAPTIVE_THREADS": "1"})
        False

    """
    env = os.environ if environ is None else environ
    if threads != "auto" or any(env.get(name) for name in THREAD_VARIABLES):
        return False
    value = env.get(ADAPTIVE_THREADS, "").strip().lower()
    if not value:
        return ADAPTIVE_DEFAULT
    if value not in {"0", "1"}:
        msg = f"{ADAPTIVE_THREADS} must be 0 or 1, got {value!r}"
        raise InputError(msg)
    return value == "1"
