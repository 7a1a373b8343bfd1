"""The CPU time a benchmarked command and everything it starts used, counted by a cgroup.

`getrusage(RUSAGE_CHILDREN)` only counts descendants that were waited for up the chain, and
bubblewrap's sandboxed processes are reaped inside their own PID namespace by a process that
exits without passing their usage on: a platform run's ruff and pytest would not be counted
(measured here: 0.07 s of rusage for a 2.8 s computation under bwrap). A cgroup's `cpuacct`
counts every process in it, and a process's children stay in its cgroup.

Standard library only: `github_mode.py` imports it before the project is importable.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

V1 = Path("/sys/fs/cgroup/cpuacct")  # cgroup v1: cpuacct.usage, nanoseconds
V2 = Path("/sys/fs/cgroup")  # cgroup v2 (or /sys/fs/cgroup/unified): cpu.stat usage_usec


def _v2_root() -> Path | None:
    for root in (V2, V2 / "unified"):
        if (root / "cgroup.procs").exists() and not (root / "cpuacct.usage").exists():
            return root
    return None


class CpuGroup:
    """A fresh cgroup for one timed command: `wrap(argv)` runs the command inside it, `seconds()`
    is the CPU its process tree used so far. Falls back to `getrusage` (`method` says which)
    where cgroups cannot be made (not root, a read-only cgroup filesystem)."""

    def __init__(self, label: str = "bench") -> None:
        self.path: Path | None = None
        self.method = "rusage (misses sandboxed processes)"
        name = f"{label}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        for root, method in ((V1 if V1.is_dir() else None, "cgroup v1"), (_v2_root(), "cgroup v2")):
            if root is None:
                continue
            try:
                (root / name).mkdir()
            except OSError:
                continue
            self.path, self.method = root / name, method
            break
        self._rusage_start = self._rusage()

    @staticmethod
    def _rusage() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` run inside this group: a shell joins it, then becomes the command (exec)."""
        if self.path is None:
            return argv
        shell = shutil.which("sh") or "/bin/sh"
        join = f'echo $$ > "{self.path / "cgroup.procs"}" && exec "$@"'
        return [shell, "-c", join, "cpu-group", *argv]

    def seconds(self) -> float:
        """CPU seconds (user + system) of every process that ran in the group."""
        if self.path is None:
            return self._rusage() - self._rusage_start
        if self.method == "cgroup v1":
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6

    def kill(self) -> None:
        """End every process still in the group: what a stopped benchmark's command started
        (an `xargs` below a shell, a run's tools) must not go on competing with the next run."""
        if self.path is None:
            return
        for _ in range(50):
            try:
                pids = [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                return
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def close(self) -> None:
        """Remove the group (once its processes have ended; a leftover one is left alone)."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.rmdir()


@contextlib.contextmanager
def cpu_group(label: str) -> Iterator[CpuGroup]:
    """A `CpuGroup` for the block; when the block ends, however it ends, whatever still runs in
    the group is killed and the group removed."""
    group = CpuGroup(label)
    try:
        yield group
    finally:
        group.kill()
        group.close()


def exit_on_sigterm() -> None:
    """Make SIGTERM end this process as an exception would, so that `cpu_group` blocks (and every
    other `finally`) still stop what the benchmark started; by default Python just dies."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def cpu_method() -> str:
    """How CPU is counted on this machine (what `CpuGroup` can use here), for the results."""
    group = CpuGroup("probe")
    group.close()
    return group.method
