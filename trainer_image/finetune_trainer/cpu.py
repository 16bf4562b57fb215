"""The CPU the pod was given: its cores (affinity and cgroup quota) and whether it computes bf16 natively
(AVX512_BF16 or AMX), read at run time."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# "fp32" or "bf16": override the detected CPU precision (both engines)
PRECISION_ENV = "FINETUNE_CPU_PRECISION"


def cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup's quota (v2 cpu.max, v1 cfs_quota/period); None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        p = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """Cores this process may use: the affinity mask, capped by the cgroup quota (rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = cgroup_cpus()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def use_pod_cores() -> int:
    """torch intra-op threads = the pod's cores, unless OMP_NUM_THREADS says otherwise (tests pin 1)."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return int(torch.get_num_threads())
    cores = available_cores()
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)
    return cores


def cpu_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> bool:
    """True when the CPU has AVX512_BF16 or AMX-BF16 (oneDNN then runs bf16 matmuls natively)."""
    flags = cpu_flags()
    if any(f in flags for f in BF16_FLAGS):
        return True
    try:
        import torch

        return bool(torch.backends.cpu.get_cpu_capability() == "AVX512_BF16")
    except Exception:
        return False


def cpu_precision() -> str:
    """bf16 where the CPU computes it natively, else fp32; PRECISION_ENV overrides. Used for the adapter's
    frozen pass and for sentence-transformers training under `precision: auto` on CPU."""
    forced = os.environ.get(PRECISION_ENV, "").lower()
    if forced in ("fp32", "bf16"):
        return forced
    return "bf16" if native_bf16() else "fp32"


@contextlib.contextmanager
def autocast(precision: str, device: str = "cpu") -> Iterator[None]:
    """bf16 autocast (oneDNN on CPU) when precision is bf16, else nothing."""
    if precision != "bf16":
        yield
        return
    import torch

    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        yield
