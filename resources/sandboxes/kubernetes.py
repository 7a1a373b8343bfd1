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
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from resources.sandboxes.base import BASE_ENV, WORKSPACE, ExecResult, OutputCallback
from resources.sandboxes.docker import ContainerLimits, EngineConnection, run_in_container
from resources.sandboxes.k8s_config import (
    ClusterAccess,
    KubernetesSettings,
    KubernetesUnavailable,
    api_client,
)
from resources.sandboxes.k8s_pod import (
    FATAL_WAITING,
    RETRIED,
    Pod,
    SandboxNotReady,
    api_error,
    call,
)
from resources.sandboxes.workspaces import WorkspaceProvider

log = logging.getLogger(__name__)

LABEL = "org.campaign.sandbox"  # on every pod and claim the platform creates: the provider
LABEL_PREFIX = "org.campaign."
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


def label_value(value: str) -> str:
    """`value` as a valid label value (at most 63 of [A-Za-z0-9-_.], alphanumeric at both
    ends); the full value is kept in an annotation of the same key."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def object_metadata(provider: str, tags: Mapping[str, str]) -> tuple[dict, dict]:
    """Labels (to select by) and annotations (the exact values) for a sandbox's objects."""
    labels = {LABEL: provider}
    annotations = {}
    for key, value in tags.items():
        labels[LABEL_PREFIX + key] = label_value(str(value))
        annotations[LABEL_PREFIX + key] = str(value)
    return labels, annotations


def object_tags(obj: Mapping[str, Any]) -> dict[str, str]:
    """The campaign, target, run, host and pid an object's annotations (else labels) name."""
    meta = obj.get("metadata") or {}
    found = {}
    for source in (meta.get("labels") or {}, meta.get("annotations") or {}):
        for key, value in source.items():
            if key.startswith(LABEL_PREFIX) and key != LABEL:
                found[key[len(LABEL_PREFIX) :]] = value
    return found


def object_name(kind: str, tags: Mapping[str, str]) -> str:
    """A fresh DNS-1123 name naming the target: `cs-<target>-<random>`."""
    stem = re.sub(r"[^a-z0-9-]", "-", str(tags.get("target", kind)).lower())
    stem = re.sub(r"-+", "-", stem).strip("-")[:40] or kind
    return f"cs-{stem}-{secrets.token_hex(3)}"


def quantity_memory(mb: int) -> str:
    """Megabytes as a Kubernetes quantity."""
    return f"{mb}Mi"


def quantity_cpu(cpus: float) -> str:
    """CPUs as a Kubernetes quantity (millicores)."""
    return f"{max(1, round(cpus * 1000))}m"


def judge_pod(pod: Mapping[str, Any]) -> tuple[bool, str | None, str]:
    """Whether a pod is ready; if it never will be, why; and what it is doing now."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    doing = phase
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            doing = f"{cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}".strip()
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if terminated:
            why = terminated.get("reason") or "Terminated"
            code = terminated.get("exitCode")
            return False, f"{why} (exit code {code}) {terminated.get('message', '')}".strip(), why
        if waiting.get("reason"):
            doing = f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
            if waiting["reason"] in FATAL_WAITING:
                return False, doing, doing
    if phase in ("Failed", "Succeeded"):
        return False, f"{phase}: {status.get('reason', '')} {status.get('message', '')}", phase
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return phase == "Running" and ready, None, doing


def wait_for(
    list_fn: Any,
    list_args: Sequence[Any],
    name: str,
    first: Mapping[str, Any],
    judge: Any,
    timeout_s: float,
    what: str,
    read: Any,
) -> Mapping[str, Any]:
    """Watch one object (by name, from `first`'s resourceVersion) until `judge` says it is
    ready; raise SandboxNotReady when it never will be or `timeout_s` passes. A watch whose
    resourceVersion is too old (410 Gone) starts again from a fresh read."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + timeout_s
    obj = first
    ready, fatal, doing = judge(obj)
    while not ready:
        if fatal:
            raise SandboxNotReady(f"{what} will not become ready: {fatal}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SandboxNotReady(f"{what} was not ready after {timeout_s:.0f}s: {doing}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        try:
            # return_type "object": events stay dicts, never strict client models.
            for event in watch.Watch(return_type="object").stream(
                list_fn,
                *list_args,
                field_selector=f"metadata.name={name}",
                resource_version=rv,
                timeout_seconds=max(1, int(min(remaining, 60))),
                _request_timeout=min(remaining, 60) + 15,
            ):
                # (deserialize=False would break the client's own handling of ERROR events.)
                kind, current = event.get("type"), event.get("raw_object") or {}
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    raise SandboxNotReady(f"{what} was deleted while it was starting")
                obj = current
                ready, fatal, doing = judge(obj)
                if ready or fatal or time.monotonic() > deadline:
                    break
        except ApiException as exc:
            if exc.status == 410:  # our resourceVersion is gone: start again from now
                obj = read()
                ready, fatal, doing = judge(obj)
            elif exc.status in RETRIED:
                time.sleep(0.5)
            else:
                raise
    return obj


class PodSandbox:
    """A workspace on the host whose commands run in a pod (made when first needed)."""

    def __init__(self, provider: ClusterProvider, workspace: Path, tags: dict[str, str]):
        self._provider = provider
        self._workspace = workspace
        self.tags = tags
        self.image: str | None = provider.image
        self.isolation = provider.isolation
        self.readable_paths: list[Path] = []
        self.writable_paths: list[Path] = []
        self.pod: Pod | None = None
        self.handle: str | None = None  # the pod or claim name, once created
        self.cancelled = threading.Event()
        self.ready_s: float | None = None  # how long its pod took to be ready, once started
        self._lock = threading.Lock()  # one start at a time
        self._handle_lock = threading.Lock()  # never held while waiting on the cluster
        self._failure: str | None = None

    @property
    def workspace(self) -> Path:
        """The workspace as a host path (mirrored into the pod's /workspace)."""
        return self._workspace

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

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        timeout_s: float = 600,
        network: bool = False,
        on_output: OutputCallback | None = None,
        model_endpoint: str | None = None,
    ) -> ExecResult:
        """Run `argv` (no shell) in the pod's /workspace after mirroring the host workspace in,
        and mirror what it changed back out. `network` and `model_endpoint` are the namespace's
        NetworkPolicy's business, not this call's."""
        started = time.monotonic()

        def failed(code: int, message: str, tail: str = "") -> ExecResult:
            return ExecResult(
                argv=list(argv),
                exit_code=code,
                duration_s=round(time.monotonic() - started, 3),
                output_tail=(tail + f"[sandbox] {message}\n")[-8000:],
                timeout_s=timeout_s,
            )

        pod = self._ready_pod()
        if isinstance(pod, str):
            return failed(125, pod)
        problem = pod.push(self._workspace)
        if problem:
            return failed(125, problem)
        # The environment travels as files, never as `env K=V` arguments: an exec's command is
        # part of its URL (API server and proxy logs) and of the process's command line.
        env_folder, problem = pod.prepare({**BASE_ENV, **(env or {})})
        if problem:
            return failed(125, problem)
        limit = max(1, math.ceil(timeout_s))
        command = ["sh", "-c", RUN, WORKSPACE, env_folder, "timeout", "-k", "5", str(limit), *argv]
        outcome = pod.run(
            command, on_output=on_output, timeout_s=limit + 30, cancelled=self.cancelled
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
        return ExecResult(
            argv=list(argv),
            exit_code=outcome.exit_code,
            duration_s=round(time.monotonic() - started, 3),
            output_tail=tail[-8000:],
            timed_out=timed_out,
            timeout_s=timeout_s,
            oom_killed=oom,
        )

    def run_image(self, image: str, args: Sequence[str], **kwargs: Any) -> ExecResult:
        """Run an image transformation on the Docker engine with the host workspace mounted (as
        the local provider does); the next command mirrors its result into the pod."""
        return run_in_container(self._provider, self, image, args, **kwargs)

    def kill_all(self) -> None:
        """Stop waiting for commands and delete the pod or claim (success, failure, cancel)."""
        with self._handle_lock:
            self.cancelled.set()
            handle, self.handle = self.handle, None
        self._provider.containers.kill_owned_by(self)
        if handle:
            self._provider.release(handle)


class ClusterProvider(WorkspaceProvider):
    """Workspaces on the host whose commands run in cluster pods; subclasses say how a pod is
    had (`start`) and given back (`release`)."""

    provider_name = "cluster"
    image: str | None = None

    def __init__(self, root: Path, access: ClusterAccess, limits: ContainerLimits | None):
        super().__init__(root)
        self.access = access
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

    def read_pod(self, name: str) -> dict:
        """The pod as the API returns it (a dict)."""
        return _json(
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
            status = self.read_pod(pod.name).get("status") or {}
        except Exception:
            return False
        for cs in status.get("containerStatuses") or []:
            for state in (cs.get("state") or {}, cs.get("lastState") or {}):
                if (state.get("terminated") or {}).get("reason") == "OOMKilled":
                    return True
        return False


def _json(response: Any) -> dict:
    """The JSON body of a raw (not preloaded) API response."""
    import json

    data = response.data if hasattr(response, "data") else response
    return json.loads(data) if isinstance(data, bytes | str) else dict(data)


class KubernetesSandboxProvider(ClusterProvider):
    """One pod per sandbox, from the profile's image, limits and `kubernetes:` settings."""

    provider_name = "kubernetes"

    def __init__(
        self,
        root: Path,
        image: str,
        settings: KubernetesSettings,
        limits: ContainerLimits | None = None,
    ):
        super().__init__(root, settings, limits)
        self.settings = settings
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
        labels, annotations = object_metadata(self.provider_name, tags)
        resources: dict[str, str] = {}
        if self.limits.memory_mb:
            resources["memory"] = quantity_memory(self.limits.memory_mb)
        if self.limits.cpus:
            resources["cpu"] = quantity_cpu(self.limits.cpus)
        container: dict[str, Any] = {
            "name": CONTAINER,
            "image": self.image,
            # Sleeps until deleted; commands arrive through exec.
            "command": ["sleep", "2147483647"],
            "workingDir": WORKSPACE,
            "env": [{"name": k, "value": v} for k, v in BASE_ENV.items()],
            "resources": {"requests": resources, "limits": resources} if resources else {},
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
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": s.namespace,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": spec,
        }

    def start(self, sandbox: PodSandbox) -> Pod:
        """Create the sandbox's pod and wait until it is ready."""
        from kubernetes.client.exceptions import ApiException

        core = self.core()
        ns = self.settings.namespace
        for _attempt in range(3):
            name = object_name("pod", sandbox.tags)
            try:
                created = _json(
                    call(
                        core.create_namespaced_pod,
                        ns,
                        self.pod_manifest(name, sandbox.tags),
                        _preload_content=False,
                    )
                )
            except ApiException as exc:
                if exc.status == 409:  # the name is taken: draw another
                    continue
                raise SandboxNotReady(
                    f"cannot create pod {ns}/{name} (image {self.image}): {api_error(exc)}"
                ) from None
            break
        else:
            raise SandboxNotReady(f"cannot create a pod in {ns}: every name drawn was taken")
        if not sandbox.claim_handle(name):
            self.release(name)
            raise SandboxNotReady("the sandbox was closed while its pod was being created")
        self.wait_pod(name, created, self.settings.ready_timeout_s)
        return Pod(core, ns, name, CONTAINER)

    def release(self, handle: str) -> None:
        """Delete the pod at once (404: already gone)."""
        from kubernetes.client.exceptions import ApiException

        try:
            call(
                self.core().delete_namespaced_pod,
                handle,
                self.settings.namespace,
                grace_period_seconds=0,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning(
                    "cannot delete pod %s/%s: %s", self.settings.namespace, handle, api_error(exc)
                )
        except Exception as exc:
            log.warning("cannot delete pod %s/%s: %s", self.settings.namespace, handle, exc)
