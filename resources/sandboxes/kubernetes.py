"""The kubernetes sandbox: every sandbox is one pod, made from the profile, that commands exec in.

The pod is created when the sandbox's first command runs (so cloning the target on the host and
starting the pod do not wait for each other), waited for until it is ready (or the profile's
`ready_timeout_s` passes, with the reason: image pull failure, unschedulable, out of memory), and
deleted when the sandbox closes, on success, failure and cancellation. Pods carry labels naming
campaign, target and run (`org.campaign.*`, as the docker provider's containers do), so
`orchestrator sandboxes prune` can find what a crashed run left behind; the pod's
`activeDeadlineSeconds` ends it even when nothing else does.

What the cluster cannot be asked for per command: the network. A pod's network is what the
namespace's NetworkPolicy allows (deploy a default-deny egress policy for sandbox namespaces);
the profile's `network` is not enforced command by command here.

The pieces: `k8s_pod` (exec in a pod, the workspace mirrored in and out), `k8s_copy` (the tar
streams both ways), `k8s_api` (retried API calls, watching an object until ready), `k8s_objects`
(names, labels, manifests, reading a pod's status), `k8s_config` (settings and credentials).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from resources.sandboxes.base import BASE_ENV, WORKSPACE, ExecRequest, ExecResult
from resources.sandboxes.docker import ContainerLimits, EngineConnection
from resources.sandboxes.k8s_api import (
    SandboxNotReady,
    api_error,
    call,
    create_named,
    delete_quietly,
    json_body,
    wait_for,
)
from resources.sandboxes.k8s_config import (
    ClusterAccess,
    KubernetesSettings,
    KubernetesUnavailable,
    api_client,
)
from resources.sandboxes.k8s_objects import (
    LABEL,
    container_resources,
    judge_pod,
    object_manifest,
    object_name,
    object_tags,
    oom_killed,
)
from resources.sandboxes.k8s_pod import Pod
from resources.sandboxes.workspaces import HostSandbox, WorkspaceProvider

# Importable from here as before (orchestrator_assets' sweep, the tests).
__all__ = [
    "LABEL",
    "ClusterProvider",
    "KubernetesSandboxProvider",
    "PodSandbox",
    "object_tags",
]

log = logging.getLogger(__name__)

CONTAINER = "sandbox"
# Runs in the pod before the command ($0 the workspace, $1 the folder `Pod.prepare` wrote the
# environment into, one file per variable): the working directory is the workspace whatever the
# image's; each file becomes a variable (the `x` keeps trailing newlines) and the folder is gone
# before the command starts; the command's argv follows as "$@". Neither data nor a value is
# ever part of this script or of a command line: a secret passed in `env` is read from its file.
RUN = """\
cd "$0" || exit 125
e=$1; shift
for f in "$e"/*; do
  [ -f "$f" ] || continue
  v=$(cat "$f" && printf x) || exit 125
  export "${f##*/}=${v%x}"
done
rm -rf "$e"
exec "$@"
"""


class PodSandbox(HostSandbox):
    """A workspace on the host whose commands run in a pod (made when first needed); the host
    workspace is mirrored into the pod's /workspace."""

    def __init__(self, provider: ClusterProvider, workspace: Path, tags: dict[str, str]):
        super().__init__(provider, workspace, tags)
        self.image: str | None = provider.image
        self.isolation = provider.isolation
        self.pod: Pod | None = None
        self.handle: str | None = None  # the pod or claim name, once created
        self.cancelled = threading.Event()
        self.ready_s: float | None = None  # how long its pod took to be ready, once started
        self._lock = threading.Lock()  # one start at a time
        self._handle_lock = threading.Lock()  # never held while waiting on the cluster
        self._failure: str | None = None

    def claim_handle(self, handle: str) -> bool:
        """Record the pod or claim just created; False when the sandbox was closed meanwhile
        (then the caller deletes it itself)."""
        with self._handle_lock:
            if self.cancelled.is_set():
                return False
            self.handle = handle
            return True

    def _ready_pod(self) -> Pod | str:
        with self._lock:
            if self.pod is None and self._failure is None and not self.cancelled.is_set():
                started = time.monotonic()
                try:
                    self.pod = self._provider.start(self)
                    self.ready_s = time.monotonic() - started
                except (SandboxNotReady, KubernetesUnavailable) as exc:
                    self._failure = str(exc)
                except Exception as exc:  # an API answer we did not expect: this sandbox fails
                    self._failure = f"cannot start the sandbox: {api_error(exc)}"
            if self.cancelled.is_set():
                return "the sandbox was closed"
            return self.pod if self.pod is not None else str(self._failure)

    def run(self, request: ExecRequest) -> ExecResult:
        """Run the command (no shell) in the pod's /workspace after mirroring the host workspace
        in, and mirror what it changed back out. `network` and `model_endpoint` are the
        namespace's NetworkPolicy's business, not this call's."""
        argv, timeout_s = request.argv, request.timeout_s
        started = time.monotonic()

        def failed(code: int, message: str, tail: str = "") -> ExecResult:
            output = tail + f"[sandbox] {message}\n"
            return ExecResult.of(argv, code, output, started=started, timeout_s=timeout_s)

        pod = self._ready_pod()
        if isinstance(pod, str):
            return failed(125, pod)
        problem = pod.push(self._workspace)
        if problem:
            return failed(125, problem)
        # The environment travels as files, never as `env K=V` arguments: an exec's command is
        # part of its URL (API server and proxy logs) and of the process's command line.
        env_folder, problem = pod.prepare({**BASE_ENV, **(request.env or {})})
        if problem:
            return failed(125, problem)
        limit = max(1, math.ceil(timeout_s))
        command = ["sh", "-c", RUN, WORKSPACE, env_folder, "timeout", "-k", "5", str(limit), *argv]
        outcome = pod.run(
            command, on_output=request.on_output, timeout_s=limit + 30, cancelled=self.cancelled
        )
        if outcome.exit_code == -1 and outcome.error:  # never started: its variables stay
            pod.run(["rm", "-rf", env_folder], timeout_s=60)
        elapsed = time.monotonic() - started
        timed_out = outcome.timed_out or (outcome.exit_code in (124, 137) and elapsed >= limit)
        tail = outcome.tail
        oom = False
        if outcome.exit_code == 137 and not timed_out:
            oom = self._provider.oom_killed(pod)
            memory = self._provider.limits.memory_mb
            tail += (
                f"[sandbox] killed: out of memory{f' (limit {memory} MB)' if memory else ''}\n"
                if oom
                else "[sandbox] killed by SIGKILL (exit 137), possibly by the memory limit\n"
            )
        if self.cancelled.is_set():
            return failed(-9, "the sandbox was closed while the command ran", tail)
        problem = pod.pull(self._workspace)
        if problem:
            return failed(125, problem, tail)
        if pod.refused:
            shown = ", ".join(repr(r) for r in pod.refused[:10])
            log.warning("%s: not copied back (unsafe): %s", pod.describe(), shown)
            tail += (
                f"[sandbox] not copied back from the pod ({len(pod.refused)}: a path under "
                f".git, through a symlink, or not asked for): {shown}\n"
            )
        return ExecResult.of(
            argv,
            outcome.exit_code,
            tail,
            started=started,
            timed_out=timed_out,
            timeout_s=timeout_s,
            oom_killed=oom,
        )

    # run_image (HostSandbox's): an image transformation runs on the Docker engine with the
    # host workspace mounted, as the local provider's does; the next command mirrors its result
    # into the pod.

    def kill_all(self) -> None:
        """Stop waiting for commands and delete the pod or claim (success, failure, cancel)."""
        with self._handle_lock:
            self.cancelled.set()
            handle, self.handle = self.handle, None
        super().kill_all()
        if handle:
            self._provider.release(handle)


class ClusterProvider(WorkspaceProvider):
    """Workspaces on the host whose commands run in cluster pods; subclasses say how a pod is
    had (`start`) and given back (`release`)."""

    provider_name = "cluster"
    image: str | None = None
    handle_kind = "pod"  # what a sandbox holds, as its name (cs-<target>-…) and messages say
    handle_type = "pod"  # its API kind, for messages

    def __init__(self, root: Path, settings: ClusterAccess, limits: ContainerLimits | None):
        super().__init__(root)
        self.access = self.settings = settings
        self.limits = limits or ContainerLimits()
        self.containers = EngineConnection(self.limits)
        self._api: Any = None
        self._api_lock = threading.Lock()

    @property
    def isolation(self) -> str:
        """How commands are isolated, for the change's record."""
        return self.provider_name

    def api(self) -> Any:
        """The ApiClient (credentials loaded on first use; raises KubernetesUnavailable)."""
        with self._api_lock:
            if self._api is None:
                self._api = api_client(self.access)
            return self._api

    def core(self) -> Any:
        """The core/v1 API."""
        from kubernetes import client

        return client.CoreV1Api(self.api())

    def _new_sandbox(self, workspace: Path, tags: dict[str, str]) -> PodSandbox:
        return PodSandbox(self, workspace, tags)

    def start(self, sandbox: PodSandbox) -> Pod:
        """A ready pod for `sandbox` (sets `sandbox.handle` as soon as something exists)."""
        raise NotImplementedError

    def release(self, handle: str) -> None:
        """Delete what `start` created."""
        raise NotImplementedError

    def create_for(
        self, sandbox: PodSandbox, create: Callable[[str], Any], detail: str
    ) -> tuple[str, dict]:
        """Create the sandbox's pod or claim under a fresh name with `create`, and record it as
        the sandbox's handle; one made after the sandbox was closed is deleted again. The name
        and the object as created (`detail` says what it was made from, for messages)."""
        kind, ns = self.handle_kind, self.access.namespace
        name, created = create_named(
            lambda: object_name(kind, sandbox.tags), create, self.handle_type, ns, detail
        )
        if not sandbox.claim_handle(name):
            self.release(name)
            raise SandboxNotReady(f"the sandbox was closed while its {kind} was being created")
        return name, created

    def read_pod(self, name: str) -> dict:
        """The pod as the API returns it (a dict)."""
        return json_body(
            call(
                self.core().read_namespaced_pod, name, self.access.namespace, _preload_content=False
            )
        )

    def wait_pod(self, name: str, first: Mapping[str, Any], timeout_s: float) -> None:
        """Wait until the pod `name` is ready (see `wait_for`)."""
        core = self.core()
        wait_for(
            core.list_namespaced_pod,
            [self.access.namespace],
            name,
            first,
            judge_pod,
            timeout_s,
            f"pod {self.access.namespace}/{name}",
            lambda: self.read_pod(name),
        )

    def oom_killed(self, pod: Pod) -> bool:
        """Whether the pod's container was killed for memory (the command's 137 says so)."""
        try:
            return oom_killed(self.read_pod(pod.name))
        except Exception:
            return False


class KubernetesSandboxProvider(ClusterProvider):
    """One pod per sandbox, from the profile's image, limits and `kubernetes:` settings."""

    provider_name = "kubernetes"

    settings: KubernetesSettings

    def __init__(
        self,
        root: Path,
        image: str,
        settings: KubernetesSettings,
        limits: ContainerLimits | None = None,
    ):
        super().__init__(root, settings, limits)
        self.image = image

    @property
    def isolation(self) -> str:
        """kubernetes, with the pod's runtime class when it names one (e.g. gvisor)."""
        runtime = self.settings.runtime_class
        return f"kubernetes:{runtime}" if runtime else "kubernetes"

    def pod_manifest(self, name: str, tags: Mapping[str, str]) -> dict:
        """The pod for one sandbox: a sleeping container commands exec in, with the profile's
        image, resources, placement and runtime class, the workspace and /tmp as emptyDirs on
        an otherwise read-only root, no capabilities and no service account token unless the
        profile names an account."""
        s = self.settings
        container: dict[str, Any] = {
            "name": CONTAINER,
            "image": self.image,
            # Sleeps until deleted; commands arrive through exec.
            "command": ["sleep", "2147483647"],
            "workingDir": WORKSPACE,
            "env": [{"name": k, "value": v} for k, v in BASE_ENV.items()],
            "resources": container_resources(self.limits.memory_mb, self.limits.cpus),
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": True,
            },
            "volumeMounts": [
                {"name": "workspace", "mountPath": WORKSPACE},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }
        if s.image_pull_policy:
            container["imagePullPolicy"] = s.image_pull_policy
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "activeDeadlineSeconds": s.active_deadline_s,
            "automountServiceAccountToken": bool(s.service_account),
            "enableServiceLinks": False,
            "containers": [container],
            "volumes": [{"name": "workspace", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        }
        if s.service_account:
            spec["serviceAccountName"] = s.service_account
        if s.runtime_class:
            spec["runtimeClassName"] = s.runtime_class
        if s.node_selector:
            spec["nodeSelector"] = dict(s.node_selector)
        if s.tolerations:
            spec["tolerations"] = [t.to_api() for t in s.tolerations]
        return object_manifest("v1", "Pod", name, s.namespace, self.provider_name, tags, spec)

    def start(self, sandbox: PodSandbox) -> Pod:
        """Create the sandbox's pod and wait until it is ready."""
        core = self.core()
        ns = self.settings.namespace
        name, created = self.create_for(
            sandbox,
            lambda name: core.create_namespaced_pod(
                ns, self.pod_manifest(name, sandbox.tags), _preload_content=False
            ),
            f"image {self.image}",
        )
        self.wait_pod(name, created, self.settings.ready_timeout_s)
        return Pod(core, ns, name, CONTAINER)

    def release(self, handle: str) -> None:
        """Delete the pod at once (404: already gone)."""
        ns = self.settings.namespace
        delete_quietly(
            lambda: call(
                self.core().delete_namespaced_pod,
                handle,
                ns,
                grace_period_seconds=0,
                _preload_content=False,
            ),
            f"pod {ns}/{handle}",
        )
