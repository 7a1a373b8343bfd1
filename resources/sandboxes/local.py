"""The local sandbox: a temporary workspace on the host, isolated with bubblewrap when present."""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from resources.cancel import kill_group
from resources.sandboxes.base import BASE_ENV, WORKSPACE, ExecRequest, ExecResult
from resources.sandboxes.docker import ContainerLimits, EngineConnection
from resources.sandboxes.output import OutputTail
from resources.sandboxes.workspaces import HostSandbox, WorkspaceProvider

log = logging.getLogger(__name__)

SANDBOX_WORKSPACE = WORKSPACE  # where commands see the workspace under bubblewrap
# Places on the host a sandboxed command must not read: credentials of the user running the
# platform. Hidden behind empty tmpfs mounts when they exist.
SECRET_PATHS = (
    "~/.ssh", "~/.gnupg", "~/.aws", "~/.kube", "~/.docker", "~/.config", "~/.netrc",
    "~/.git-credentials", "~/.claude", "~/.claude.json", "~/.pypirc",
)  # fmt: skip


def bwrap_path() -> str | None:
    """The bubblewrap binary, or None when it is not installed."""
    return shutil.which("bwrap")


class SandboxUnavailable(RuntimeError):
    """The sandbox a profile asks for cannot be had on this machine; nothing runs unisolated
    instead (a profile opts out with `isolation: none`)."""


NO_BWRAP = (
    "bubblewrap (bwrap) is not installed, so the local sandbox cannot isolate the commands of "
    "a target (its setup, transformation or agent, and verifiers that run its code): install it "
    "(`apt-get install bubblewrap`, or `make system-deps`), use a docker or kubernetes profile, "
    "or say `isolation: none` in the campaign's profile to run them as plain host processes"
)


def runsc_path() -> str | None:
    """gVisor's runsc binary (Debian package `runsc`), or None when it is not installed."""
    return shutil.which("runsc")


def default_path() -> str:
    """PATH inside a sandbox: the platform's own Python environment first, then the system's."""
    return os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])


def read_only_root() -> list[str]:
    """bwrap arguments for a root that shows the host's read-only, on a tmpfs of its own (so
    that mount points such as /workspace can be made in it)."""
    args = ["--tmpfs", "/"]
    for entry in sorted(os.listdir("/")):
        path = f"/{entry}"
        if entry in ("proc", "dev", "tmp", "run", SANDBOX_WORKSPACE.strip("/")):
            continue
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        else:
            args += ["--ro-bind", path, path]
    return args


def python_prefixes() -> list[Path]:
    """The platform's virtual environment and the Python installation it was made from."""
    return sorted({Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()})


class LocalSandbox(HostSandbox):
    """One workspace directory; commands run in it with the provider's isolation."""

    image: str | None = None  # commands run with the host's tools, not an image's

    def __init__(self, provider: LocalSandboxProvider, workspace: Path, tags: dict[str, str]):
        super().__init__(provider, workspace, tags)
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self.isolation = provider.isolation_name
        self.gvisor_ids: set[str] = set()  # runsc containers of this sandbox still running

    def run(self, request: ExecRequest) -> ExecResult:
        """Run the command in the workspace (no shell); output is merged and its tail kept.

        bubblewrap cannot limit a network to one endpoint: a command that must reach the model
        (`model_endpoint`) gets the network.
        """
        argv, timeout_s = request.argv, request.timeout_s
        network = request.network or request.model_endpoint is not None
        full_env = {"PATH": default_path(), **BASE_ENV, **(request.env or {})}
        started = time.monotonic()
        missing = _missing_executable(argv[0], full_env["PATH"], self._workspace)
        if self._provider.gvisor and not missing and not runsc_path():
            missing = (
                "the profile asks for isolation: gvisor but runsc is not installed "
                "(apt-get install runsc, or `make system-deps` as root)"
            )
        if missing:
            return ExecResult.of(argv, 127, missing)
        command = self._provider.wrap(list(argv), self, full_env, network)
        gvisor_id = command[-1] if self._provider.gvisor else None
        try:
            proc = subprocess.Popen(
                command,
                cwd=self._workspace,
                env=full_env if not self._provider.isolated else {"PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return ExecResult.of(argv, 127, f"cannot start {argv[0]!r}: {exc.strerror}")
        with self._lock:
            self._procs.add(proc)
        tail = OutputTail(request.on_output)
        reader = threading.Thread(target=_pump, args=(proc, tail), daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            if gvisor_id:
                self._provider.gvisor_delete(gvisor_id)
            kill_group(proc)
            proc.wait()
        finally:
            reader.join(timeout=5)
            with self._lock:
                self._procs.discard(proc)
            if gvisor_id:
                self._provider.gvisor_delete(gvisor_id)
                self.gvisor_ids.discard(gvisor_id)
        return ExecResult.of(
            argv,
            proc.returncode,
            tail.text(),
            started=started,
            timed_out=timed_out,
            timeout_s=timeout_s,
        )

    def kill_all(self) -> None:
        """Kill every command still running in this sandbox."""
        with self._lock:
            procs = list(self._procs)
        for gvisor_id in list(self.gvisor_ids):
            self._provider.gvisor_delete(gvisor_id)
        for proc in procs:
            kill_group(proc)
        super().kill_all()


def _missing_executable(program: str, path: str, workspace: Path) -> str | None:
    """Why `program` cannot be started, or None. Checked before bubblewrap starts, which would
    otherwise report a missing command as its own exit code 1."""
    if "/" in program:
        found = (workspace / program) if not program.startswith("/") else Path(program)
        if found.is_file() and os.access(found, os.X_OK):
            return None
        return f"cannot start {program!r}: no such executable file"
    if shutil.which(program, path=path):
        return None
    return f"cannot start {program!r}: command not found on PATH ({path})"


def _pump(proc: subprocess.Popen, tail: OutputTail) -> None:
    assert proc.stdout is not None
    for raw in iter(proc.stdout.readline, b""):
        tail.feed(raw)
    tail.finish()


class LocalSandboxProvider(WorkspaceProvider):
    """Workspaces under `root`; commands isolated with bubblewrap (`auto`, `bwrap`: refused when
    it is not installed), gVisor (`gvisor`: runsc with an OCI bundle of the same mounts), or, only
    when asked for by name, not at all (`none`).
    Image transformations run in containers on the Docker engine, with `limits`."""

    provider_name = "local"

    def __init__(
        self,
        root: Path,
        *,
        hidden_paths: Sequence[Path] = (),
        isolation: str = "auto",
        limits: ContainerLimits | None = None,
    ):
        super().__init__(root)
        self.containers = EngineConnection(limits or ContainerLimits())
        self.hidden_paths = [Path(p) for p in hidden_paths]
        self.gvisor = isolation == "gvisor"
        self._gvisor_root: str | None = None
        self._gvisor_ids = itertools.count(1)
        bwrap = None if self.gvisor or isolation == "none" else bwrap_path()
        if isolation in ("auto", "bwrap") and not bwrap:
            raise SandboxUnavailable(NO_BWRAP)  # fail closed: never quietly on the host
        self._bwrap = bwrap

    @property
    def isolated(self) -> bool:
        """True when commands run under bubblewrap or gVisor (they get a clean environment)."""
        return self._bwrap is not None or self.gvisor

    @property
    def isolation_name(self) -> str:
        """How commands are isolated, for the change's record."""
        if self.gvisor:
            return "local:gvisor"
        return "local:bubblewrap" if self._bwrap else "local:none"

    def _new_sandbox(self, workspace: Path, tags: dict[str, str]) -> LocalSandbox:
        return LocalSandbox(self, workspace, tags)

    def wrap(
        self, argv: list[str], sandbox: LocalSandbox, env: dict[str, str], network: bool
    ) -> list[str]:
        """The argv that runs `argv` with this provider's isolation."""
        if self.gvisor:
            return self.gvisor_wrap(argv, sandbox, env, network)
        if not self._bwrap:
            return argv
        ws = str(sandbox.workspace)
        cmd = [
            self._bwrap,
            "--die-with-parent", "--new-session",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            *read_only_root(),
            "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/run",
        ]  # fmt: skip
        if not network:
            cmd.append("--unshare-net")
        for hidden in [*self.hidden_paths, *(Path(p).expanduser() for p in SECRET_PATHS)]:
            if hidden.exists():
                # A hidden file reads as empty (--dev-bind: a plain bind of /dev/null is nodev).
                cmd += (
                    ["--tmpfs", str(hidden)]
                    if hidden.is_dir()
                    else ["--dev-bind", "/dev/null", str(hidden)]
                )
        # The platform's Python environment provides the default tools (python, ruff, pytest);
        # it may live under /tmp or a hidden path, so it is mounted back, read-only.
        for path in (*python_prefixes(), *sandbox.readable_paths):
            cmd += ["--ro-bind", str(path), str(path)]
        for path in sandbox.writable_paths:
            cmd += ["--bind", str(path), str(path)]
        # A stable path inside: what setup builds there (a virtualenv, an editable install) keeps
        # working when the environment cache restores it into another sandbox.
        cmd += ["--bind", ws, SANDBOX_WORKSPACE]
        git_dir = sandbox.workspace / ".git"
        if git_dir.exists():
            # The platform runs git on the host in this workspace: a command that could write
            # .git/config or .git/hooks could make the host run its code.
            cmd += ["--ro-bind", str(git_dir), f"{SANDBOX_WORKSPACE}/.git"]
        cmd += ["--chdir", SANDBOX_WORKSPACE, "--clearenv"]
        for key, value in env.items():
            cmd += ["--setenv", key, value]
        return [*cmd, "--", *argv]

    # gVisor ---------------------------------------------------------------------------------

    def gvisor_wrap(
        self, argv: list[str], sandbox: LocalSandbox, env: dict[str, str], network: bool
    ) -> list[str]:
        """`runsc run` of an OCI bundle written for this command: the host's root read-only,
        the workspace writable at /workspace (its .git read-only), secrets hidden, fresh /tmp,
        no capabilities, and without `network` a network namespace of its own with only
        loopback (runsc --network=none). The container's id is the last argument."""
        runsc = runsc_path() or "runsc"
        if self._gvisor_root is None:
            # Short and outside the workspaces folder: runsc keeps its state (and sockets) here;
            # one per user, shared by processes (container ids carry the pid).
            root = Path(tempfile.gettempdir()) / f"campaign-runsc-{os.getuid()}"
            root.mkdir(mode=0o700, exist_ok=True)
            self._gvisor_root = str(root)
        container_id = f"cs-{os.getpid()}-{next(self._gvisor_ids)}"
        bundle = sandbox.workspace.parent / f"oci-{container_id}"
        bundle.mkdir()
        tmpfs = {"type": "tmpfs", "source": "tmpfs"}
        mounts: list[dict] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", **tmpfs},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", **tmpfs}, {"destination": "/var/tmp", **tmpfs},
            {"destination": "/run", **tmpfs},
        ]  # fmt: skip
        for hidden in [*self.hidden_paths, *(Path(p).expanduser() for p in SECRET_PATHS)]:
            if hidden.is_dir():
                mounts.append({"destination": str(hidden), **tmpfs})
            elif hidden.exists():
                mounts.append({"destination": str(hidden), "type": "bind",
                               "source": "/dev/null", "options": ["rbind", "ro"]})  # fmt: skip
        for path in (*python_prefixes(), *sandbox.readable_paths):
            mounts.append({"destination": str(path), "type": "bind", "source": str(path),
                           "options": ["rbind", "ro"]})  # fmt: skip
        for path in sandbox.writable_paths:
            mounts.append({"destination": str(path), "type": "bind", "source": str(path),
                           "options": ["rbind", "rw"]})  # fmt: skip
        mounts.append({"destination": SANDBOX_WORKSPACE, "type": "bind",
                       "source": str(sandbox.workspace), "options": ["rbind", "rw"]})  # fmt: skip
        git_dir = sandbox.workspace / ".git"
        if git_dir.exists():
            mounts.append({"destination": f"{SANDBOX_WORKSPACE}/.git", "type": "bind",
                           "source": str(git_dir), "options": ["rbind", "ro"]})  # fmt: skip
        namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
        if not network:
            namespaces.append({"type": "network"})
        config = {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": os.getuid(), "gid": os.getgid()},
                "args": argv,
                "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": SANDBOX_WORKSPACE,
                "noNewPrivileges": True,
                "capabilities": {"bounding": [], "effective": [], "inheritable": [],
                                 "permitted": []},
            },
            "root": {"path": "/", "readonly": True},
            "hostname": "sandbox",
            "mounts": mounts,
            "linux": {"namespaces": namespaces},
        }  # fmt: skip
        (bundle / "config.json").write_text(json.dumps(config))
        sandbox.gvisor_ids.add(container_id)
        return [
            runsc, "--root", self._gvisor_root, f"--network={'host' if network else 'none'}",
            "run", "--bundle", str(bundle), container_id,
        ]  # fmt: skip

    def gvisor_delete(self, container_id: str) -> None:
        """Kill and forget a runsc container, ended or not (its bundle goes with the sandbox)."""
        if self._gvisor_root is None:
            return
        runsc = [runsc_path() or "runsc", "--root", self._gvisor_root]
        with suppress(OSError, subprocess.TimeoutExpired):
            # SIGKILL first: `delete --force` alone waits for the container to stop by itself.
            subprocess.run([*runsc, "kill", "--all", container_id, "KILL"], capture_output=True,
                           timeout=30)  # fmt: skip
            subprocess.run([*runsc, "delete", "--force", container_id], capture_output=True,
                           timeout=30)  # fmt: skip
