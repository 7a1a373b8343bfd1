"""How many CPU cores this process can use: its CPU affinity, lowered by a cgroup CPU quota (a
container's `--cpus`, a pod's `limits.cpu`), which the affinity does not show."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The cores this process may keep busy at once (at least 1)."""
    cores = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))  # 1.5 CPUs keep two processes busy part-time
    return max(1, cores)


def cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in cores (None: no quota, or none readable). A
    container sees its own cgroup at the root: cgroup v2's `cpu.max`, v1's `cpu/cpu.cfs_*`."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None
