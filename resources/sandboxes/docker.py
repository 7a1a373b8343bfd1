"""The docker sandbox: every command runs in a fresh container from the profile's image.

The workspace is a directory on the host, bind-mounted at `/workspace` (the working directory);
its `.git` is mounted read-only on top, because the platform runs git on the host in it. A
container per command gives each command its own network mode (setup may reach the registries,
verifiers may not), and a timeout or an out-of-memory kill ends exactly that command. Containers
carry labels naming campaign, target and run, and the installation's workspaces folder, so
`orchestrator sandboxes prune` can find what a crashed run of this installation left behind and
leaves other installations' containers on the same engine alone.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.types import Mount

from resources.sandboxes.base import BASE_ENV, WORKSPACE, ExecRequest, ExecResult, OutputCallback
from resources.sandboxes.model_proxy import SOCKET_DIR, ModelProxy, endpoint_of, is_ip, wrap_command
from resources.sandboxes.output import OutputTail
from resources.sandboxes.workspaces import HostSandbox, WorkspaceProvider

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "campaign-sandbox:latest"  # built by `make images` (images/Dockerfile.sandbox)
LABEL = "org.campaign.sandbox"  # on every container the platform starts: the provider's name
LABEL_PREFIX = "org.campaign."
INSTALLATION_TAG = "workspaces"  # the label naming the workspaces folder of the installation


class DockerUnavailable(RuntimeError):
    """No Docker engine answers; the message says how to start one."""


def docker_client() -> Any:
    """A client of the Docker engine named by the environment (DOCKER_HOST, else the socket)."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=120, max_pool_size=64)
        client.ping()
    except DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise DockerUnavailable(
            f"no Docker engine answers at {where} ({exc.__class__.__name__}); start one "
            "(`make docker-engine` as root) or use a profile with provider: local"
        ) from None
    return client


@dataclass(frozen=True)
class ContainerLimits:
    """What a profile sets for every container: memory, CPUs and the network for `full`."""

    memory_mb: int | None = None
    cpus: float | None = None
    full_network: str = "host"
    isolation: str = "default"  # "gvisor": the runsc runtime (docker), runsc (local)
    cluster: str | None = None  # the profile's kubernetes/agent_sandbox settings, as JSON


@dataclass
class ContainerRequest:
    """One command to run in a container with a workspace mounted."""

    image: str
    command: list[str]
    workspace: Path
    entrypoint: Sequence[str] | None = None
    readable: Sequence[Path] = ()
    writable: Sequence[Path] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    network: bool = False
    timeout_s: float = 600
    labels: Mapping[str, str] = field(default_factory=dict)
    model_endpoint: str | None = None  # without network: the one endpoint it may reach


class DockerEngine:
    """Runs one-shot containers and keeps track of the running ones, so they can be killed."""

    def __init__(self, client: Any = None, limits: ContainerLimits | None = None):
        self.client = client or docker_client()
        self.limits = limits or ContainerLimits()
        self._running: dict[str, object] = {}  # container id -> owner (a sandbox)
        self._lock = threading.Lock()
        self._runtimes: set[str] | None = None

    def _mounts(self, req: ContainerRequest) -> list[Any]:
        mounts = [Mount(WORKSPACE, str(req.workspace), type="bind")]
        if (req.workspace / ".git").is_dir():
            mounts.append(
                Mount(f"{WORKSPACE}/.git", str(req.workspace / ".git"), type="bind", read_only=True)
            )
        # Git mirrors (alternates) and the agent's files are seen at the same paths as on the host.
        mounts += [Mount(str(p), str(p), type="bind", read_only=True) for p in req.readable]
        mounts += [Mount(str(p), str(p), type="bind") for p in req.writable]
        return mounts

    def run(
        self, req: ContainerRequest, on_output: OutputCallback | None = None, owner: object = None
    ) -> ExecResult:
        """Run `req` to completion (or its timeout) and report how it went; never raises for
        what the command or its image did wrong."""
        argv = [*(req.entrypoint or []), *req.command]
        started = time.monotonic()

        def failed(code: int, message: str) -> ExecResult:
            return ExecResult.of(argv or [req.image], code, message, started=started)

        from docker.errors import APIError, ImageNotFound

        labels = req.labels
        # Everything this command set up (its model proxy) goes when it ends, however it ends.
        with ExitStack() as stack:
            limits = self.limits
            kwargs: dict[str, Any] = {}
            command, entrypoint = list(req.command), req.entrypoint
            mounts = self._mounts(req)
            if req.model_endpoint and not req.network:
                host, port = endpoint_of(req.model_endpoint)
                proxy = ModelProxy(host, port)
                stack.callback(proxy.close)
                mounts.append(Mount(SOCKET_DIR, str(proxy.directory), type="bind"))
                if not is_ip(host):
                    kwargs["extra_hosts"] = {host: "127.0.0.1"}
                # Its own network namespace: letting it listen on the endpoint's port (443) there
                # grants nothing on the host.
                kwargs["sysctls"] = {"net.ipv4.ip_unprivileged_port_start": "0"}
                wrapped = wrap_command(argv, port)
                entrypoint, command = wrapped[:1], wrapped[1:]
            network_mode = limits.full_network if req.network else "none"
            if limits.memory_mb:
                kwargs["mem_limit"] = f"{limits.memory_mb}m"
                kwargs["memswap_limit"] = f"{limits.memory_mb}m"  # no swap: the limit is the limit
            if limits.cpus:
                kwargs["nano_cpus"] = int(limits.cpus * 1e9)
            if limits.isolation == "gvisor":
                # runsc must be told the container's network (scripts/docker-engine.sh
                # registers one runtime per network mode).
                runtime = "runsc-host" if network_mode == "host" else "runsc"
                if not self.has_runtime(runtime):
                    return failed(
                        125,
                        f"the profile asks for isolation: gvisor but the Docker engine has no "
                        f"{runtime} runtime (install runsc and restart the engine with "
                        "scripts/docker-engine.sh, which registers it)",
                    )
                kwargs["runtime"] = runtime
            try:
                container = self.client.containers.create(
                    req.image,
                    command=command or None,
                    entrypoint=list(entrypoint) if entrypoint is not None else None,
                    working_dir=WORKSPACE,
                    environment={**BASE_ENV, **req.env},
                    user=f"{os.getuid()}:{os.getgid()}",
                    network_mode=network_mode,
                    mounts=mounts,
                    labels={LABEL: "docker", **{LABEL_PREFIX + k: v for k, v in labels.items()}},
                    tmpfs={"/tmp": "rw,exec,nosuid,size=1g", "/var/tmp": "rw,exec,nosuid"},
                    read_only=True,
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges"],
                    pids_limit=4096,
                    stdin_open=False,
                    tty=False,
                    **kwargs,
                )
            except ImageNotFound:
                return failed(
                    125,
                    f"image {req.image!r} not found on the Docker engine: build it "
                    "(`make images`) or load it (`docker load`)",
                )
            except APIError as exc:
                return failed(125, f"cannot create a container from {req.image!r}: {_explain(exc)}")
            with self._lock:
                self._running[container.id] = owner
            tail = OutputTail(on_output)
            timed_out = False
            try:
                try:
                    container.start()
                except APIError as exc:
                    # e.g. `exec: "foo": executable file not found in $PATH`
                    what = argv[0] if argv else req.image
                    return failed(127, f"cannot start {what!r}: {_explain(exc)}")
                pump = threading.Thread(target=_pump_logs, args=(container, tail), daemon=True)
                pump.start()
                try:
                    status = container.wait(timeout=req.timeout_s)
                    exit_code = int(status.get("StatusCode", -1))
                except Exception:  # the wait timed out (requests' ReadTimeout / ConnectionError)
                    timed_out = True
                    with suppress(APIError):
                        container.kill()
                    exit_code = int(container.wait(timeout=60).get("StatusCode", -1))
                pump.join(timeout=10)
                oom = False
                with suppress(APIError):
                    container.reload()
                    oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
                if oom:
                    tail.note(
                        f"[sandbox] killed: out of memory (limit {limits.memory_mb} MB)\n"
                        if limits.memory_mb
                        else "[sandbox] killed: out of memory\n"
                    )
                return ExecResult.of(
                    argv or [req.image],
                    exit_code,
                    tail.text(),
                    started=started,
                    timed_out=timed_out,
                    timeout_s=req.timeout_s,
                    oom_killed=oom,
                )
            finally:
                with self._lock:
                    self._running.pop(container.id, None)
                _remove(container)

    def has_runtime(self, name: str) -> bool:
        """Whether the engine has the OCI runtime `name` registered (asked once)."""
        if self._runtimes is None:
            try:
                self._runtimes = set((self.client.info().get("Runtimes") or {}).keys())
            except Exception:
                self._runtimes = set()
        return name in self._runtimes

    def kill_owned_by(self, owner: object) -> None:
        """Kill the running containers started for `owner` (a sandbox being closed)."""
        with self._lock:
            ids = [cid for cid, who in self._running.items() if who is owner]
        for cid in ids:
            with suppress(Exception):
                self.client.containers.get(cid).kill()


def _remove(container: Any, tries: int = 3) -> None:
    """Remove a finished container; a busy engine refusing or timing out is asked again, and a
    container still there after that is logged (`orchestrator sandboxes prune` removes it)."""
    from docker.errors import APIError, NotFound
    from requests.exceptions import RequestException

    for attempt in range(1, tries + 1):
        try:
            container.remove(force=True)
            return
        except NotFound:
            return  # already gone
        except (APIError, RequestException) as exc:
            if attempt == tries:
                log.warning(
                    "container %s was not removed (%s); `orchestrator sandboxes prune` removes it",
                    container.short_id, exc,
                )  # fmt: skip
                return
            time.sleep(0.5 * attempt)


class EngineConnection:
    """The Docker engine a provider runs containers on, connected on first use (so a missing
    engine fails one command clearly instead of every campaign at load)."""

    def __init__(self, limits: ContainerLimits):
        self.limits = limits
        self._engine: DockerEngine | None = None
        self._lock = threading.Lock()

    def get(self) -> DockerEngine:
        """The engine (raises DockerUnavailable when none answers)."""
        with self._lock:
            if self._engine is None:
                self._engine = DockerEngine(limits=self.limits)
            return self._engine

    def kill_owned_by(self, owner: object) -> None:
        """Kill what `owner` runs, if anything was ever started."""
        if self._engine is not None:
            self._engine.kill_owned_by(owner)

    def run(
        self,
        sandbox: HostSandbox,
        image: str,
        request: ExecRequest,
        entrypoint: Sequence[str] | None = None,
    ) -> ExecResult:
        """Run `image` with `sandbox`'s workspace and mounts; a missing engine is this command's
        failure, not an exception."""
        try:
            engine = self.get()
        except DockerUnavailable as exc:
            return ExecResult.of([image, *request.argv], 125, str(exc))
        container = ContainerRequest(
            image=image, command=list(request.argv), entrypoint=entrypoint,
            workspace=sandbox.workspace, readable=list(sandbox.readable_paths),
            writable=list(sandbox.writable_paths), env=request.env or {},
            network=request.network, timeout_s=request.timeout_s, labels=sandbox.tags,
            model_endpoint=request.model_endpoint,
        )  # fmt: skip
        return engine.run(container, request.on_output, owner=sandbox)


def _explain(exc: Any) -> str:
    return str(getattr(exc, "explanation", None) or exc)[:500]


def _pump_logs(container: Any, tail: OutputTail) -> None:
    try:
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            tail.feed(chunk)
    except Exception as exc:  # the container went away mid-stream: keep what was read
        log.debug("log stream ended: %s", exc)
    tail.finish()


class DockerSandbox(HostSandbox):
    """A workspace on the host whose commands run in containers from one image."""

    def __init__(self, provider: DockerSandboxProvider, workspace: Path, tags: dict[str, str]):
        super().__init__(provider, workspace, tags)
        self.image = provider.image
        limits = provider.containers.limits
        self.isolation = "docker:runsc" if limits.isolation == "gvisor" else "docker"

    def run(self, request: ExecRequest) -> ExecResult:
        """Run the command (no shell) in a container from the sandbox image."""
        return self._provider.containers.run(self, self._provider.image, request)


class DockerSandboxProvider(WorkspaceProvider):
    """Sandboxes whose commands run in containers from `image`, with the profile's limits."""

    provider_name = "docker"

    def __init__(self, root: Path, image: str, limits: ContainerLimits | None = None):
        super().__init__(root)
        self.image = image
        self.containers = EngineConnection(limits or ContainerLimits())

    def _new_sandbox(self, workspace: Path, tags: dict[str, str]) -> DockerSandbox:
        # Which installation's container it is: one engine may serve several (a developer's and
        # CI's, two data folders), and prune must never judge another's live sandboxes.
        return DockerSandbox(self, workspace, {**tags, INSTALLATION_TAG: str(self.root.resolve())})


def labelled_containers(client: Any) -> list[Any]:
    """Every container (running or not) the platform started, by its label."""
    return client.containers.list(all=True, filters={"label": LABEL})


def container_tags(container: Any) -> dict[str, str]:
    """The campaign, target and run a container's labels name."""
    labels = container.labels or {}
    return {k[len(LABEL_PREFIX) :]: v for k, v in labels.items() if k.startswith(LABEL_PREFIX)}
