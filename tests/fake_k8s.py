"""A local server answering the Kubernetes API as documented, for what the cluster sandboxes use.

No cluster can be had where this is built, so the kubernetes and agent-sandbox providers are
tested against this contract:

- core/v1 pods: create (409 for a taken name, 422 for an invalid one, 403 for an unknown
  RuntimeClass), get, delete, list with `labelSelector`/`fieldSelector`, and watch from a
  `resourceVersion` (an ERROR event with a 410 Status when that version is too old);
- `pods/exec` over a websocket with the `v5.channel.k8s.io` or `v4.channel.k8s.io` subprotocol:
  stdin on channel 0 (v5: closed with the 255 control frame), stdout 1, stderr 2, and on channel
  3 the metav1.Status — `Success`, or `NonZeroExitCode` with `details.causes[{reason: ExitCode,
  message: "N"}]`. Commands REALLY run: under bubblewrap, with the host's root read-only as the
  image and each emptyDir volume a directory of the pod bound at its mount path;
- a kubelet that moves pods through Pending → Running/Ready, or into ErrImagePull →
  ImagePullBackOff (image names containing `pull-fails`), OOMKilled (`oom-on-start`), or
  Unschedulable (a node selector the one node does not match);
- agent-sandbox custom resources (`extensions.agents.x-k8s.io/v1beta1` SandboxTemplate,
  SandboxWarmPool, SandboxClaim; `agents.x-k8s.io/v1beta1` Sandbox) with a controller: a warm pool
  keeps `replicas` ready Sandboxes; a claim adopts a ready warm one at once (label
  `agents.x-k8s.io/launch-type: warm`, annotation `agents.x-k8s.io/pod-name`) or gets a cold one
  made from the template after `cold_delay_s`;
- injectable errors (`fail_next`): any status, e.g. 429 with Retry-After or 503.

Authentication is a bearer token, as a kubeconfig user's `token:` gives it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from resources.sandboxes.local import python_prefixes, read_only_root

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
EXT = "extensions.agents.x-k8s.io"
AGENTS = "agents.x-k8s.io"
KINDS = {
    "pods": ("", "v1", "Pod"),
    "sandboxclaims": (EXT, "v1beta1", "SandboxClaim"),
    "sandboxwarmpools": (EXT, "v1beta1", "SandboxWarmPool"),
    "sandboxtemplates": (EXT, "v1beta1", "SandboxTemplate"),
    "sandboxes": (AGENTS, "v1beta1", "Sandbox"),
}
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PATH = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])


def now_iso() -> str:
    """A timestamp as the API writes them."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def status_body(code: int, reason: str, message: str, **extra: Any) -> dict:
    """A metav1.Status failure."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
        **extra,
    }


def matches(obj: dict, label_selector: str | None, field_selector: str | None) -> bool:
    """Whether `obj` is selected (equality and existence label selectors, metadata.name)."""
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, (label_selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    for term in filter(None, (field_selector or "").split(",")):
        key, value = term.split("=", 1)
        if key == "metadata.name" and obj["metadata"]["name"] != value.lstrip("="):
            return False
        if key == "metadata.namespace" and obj["metadata"].get("namespace") != value:
            return False
    return True


@dataclass
class Injected:
    """An error answer to give instead of the real one."""

    method: str
    pattern: str
    status: int
    times: int = 1
    retry_after: float | None = None


@dataclass
class PodRuntime:
    """What the fake kubelet keeps for one pod: its volumes and running exec processes."""

    root: Path
    created: float
    procs: set[subprocess.Popen] = field(default_factory=set)


class FakeKubernetes:
    """The fake API server; start with `start()`, end with `stop()` (or use as a context)."""

    def __init__(self, root: Path, *, token: str = "fake-token", tls: bool = False):
        self.root = Path(root)
        self.token = token
        self.tls = tls
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.rv = 100
        self.compacted_rv = 0
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.events: list[tuple[int, str, str, dict]] = []  # rv, resource, type, object
        self.runtimes: dict[tuple[str, str], PodRuntime] = {}
        self.injected: list[Injected] = []
        self.requests: list[tuple[str, str]] = []
        self.node_labels = {"kubernetes.io/os": "linux", "kubernetes.io/hostname": "fake-node"}
        self.runtime_classes = {"gvisor"}
        self.start_delay_s = 0.2
        self.cold_delay_s = 1.0
        self.subprotocols = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        self.exec_count = 0
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self.cert: Path | None = None

    # lifecycle --------------------------------------------------------------------------------

    def start(self) -> FakeKubernetes:
        """Listen on a free loopback port and run the kubelet/controller loop."""
        self.root.mkdir(parents=True, exist_ok=True)
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls:
            import ssl

            self.cert = self.root / "ca.crt"
            key = self.root / "server.key"
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    "-keyout",
                    str(key),
                    "-out",
                    str(self.cert),
                ],
                check=True,
                capture_output=True,
            )
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert, key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        for target in (self._server.serve_forever, self._loop):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and kill every command still running in a fake pod."""
        self._stop.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        with self.lock:
            runtimes = list(self.runtimes.values())
            self.runtimes.clear()
            self.changed.notify_all()
        for runtime in runtimes:
            _kill(runtime)

    def __enter__(self) -> FakeKubernetes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The API server's URL."""
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig file whose current context is this server, with the bearer token."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.cert:
            cluster["certificate-authority"] = str(self.cert)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # test controls ------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        pattern: str,
        status: int,
        *,
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `times` requests of `method` whose path matches `pattern` with
        `status` (and a Retry-After header when given)."""
        with self.lock:
            self.injected.append(Injected(method, pattern, status, times, retry_after))

    def expire_watches(self) -> None:
        """Forget the event history, as etcd compaction does: open watches end with a 410 and
        watching from any version older than now is refused with one."""
        with self.lock:
            self.compacted_rv = self.rv
            self.events.clear()
            self.changed.notify_all()

    def list(self, resource: str, namespace: str | None = None) -> list[dict]:
        """The objects of a resource (copies)."""
        with self.lock:
            return [
                copy.deepcopy(o)
                for (r, ns, _n), o in self.objects.items()
                if r == resource and (namespace is None or ns == namespace)
            ]

    def get(self, resource: str, namespace: str, name: str) -> dict | None:
        """One object (a copy), or None."""
        with self.lock:
            obj = self.objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def pod_dir(self, namespace: str, name: str) -> Path:
        """Where a pod's volumes live on the host."""
        return self.root / "pods" / namespace / name

    def running_processes(self) -> int:
        """How many exec'd commands are still running in all fake pods."""
        with self.lock:
            return sum(1 for rt in self.runtimes.values() for p in rt.procs if p.poll() is None)

    # storage ----------------------------------------------------------------------------------

    def _emit(self, resource: str, kind: str, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, resource, kind, copy.deepcopy(obj)))
        del self.events[:-2000]
        self.changed.notify_all()

    def create(self, resource: str, namespace: str, obj: dict) -> dict:
        """Store a new object (the caller validated it) and tell the watchers."""
        with self.lock:
            group, version, kind = KINDS[resource]
            meta = obj.setdefault("metadata", {})
            meta.update(
                namespace=namespace,
                uid=secrets.token_hex(8),
                creationTimestamp=now_iso(),
                generation=1,
            )
            obj.setdefault("apiVersion", f"{group}/{version}" if group else version)
            obj.setdefault("kind", kind)
            obj.setdefault("status", {})
            self.objects[(resource, namespace, meta["name"])] = obj
            if resource == "pods":
                obj["status"] = {"phase": "Pending", "conditions": []}
                self.runtimes[(namespace, meta["name"])] = PodRuntime(
                    self.pod_dir(namespace, meta["name"]), time.monotonic()
                )
            self._emit(resource, "ADDED", obj)
            return copy.deepcopy(obj)

    def update(self, resource: str, namespace: str, name: str, mutate: Any) -> None:
        """Change an object in place and tell the watchers."""
        with self.lock:
            obj = self.objects.get((resource, namespace, name))
            if obj is None:
                return
            before = json.dumps(obj, sort_keys=True)
            mutate(obj)
            if json.dumps(obj, sort_keys=True) != before:
                self._emit(resource, "MODIFIED", obj)

    def delete(self, resource: str, namespace: str, name: str) -> dict | None:
        """Remove an object (and what it owns) and tell the watchers."""
        with self.lock:
            obj = self.objects.pop((resource, namespace, name), None)
            if obj is None:
                return None
            self._emit(resource, "DELETED", obj)
            runtime = None
            if resource == "pods":
                runtime = self.runtimes.pop((namespace, name), None)
            owned = [
                (r, ns, n)
                for (r, ns, n), o in self.objects.items()
                if ns == namespace
                and any(
                    ref.get("uid") == obj["metadata"]["uid"]
                    for ref in o["metadata"].get("ownerReferences") or []
                )
            ]
        if runtime:
            _kill(runtime)
            shutil.rmtree(runtime.root, ignore_errors=True)
        for key in owned:
            self.delete(*key)
        return obj

    # kubelet and controllers ----------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self._reconcile()
            except Exception as exc:  # keep the fake alive; the test will see the state
                print(f"fake kubernetes: reconcile failed: {exc!r}", file=sys.stderr)

    def _reconcile(self) -> None:
        with self.lock:
            for (resource, ns, name), obj in list(self.objects.items()):
                if resource == "pods":
                    self._kubelet(ns, name, obj)
            for (resource, ns, name), obj in list(self.objects.items()):
                if resource == "sandboxes":
                    self._sandbox(ns, name, obj)
            for (resource, ns, name), obj in list(self.objects.items()):
                if resource == "sandboxwarmpools":
                    self._warm_pool(ns, name, obj)
            for (resource, ns, name), obj in list(self.objects.items()):
                if resource == "sandboxclaims" and (resource, ns, name) in self.objects:
                    self._claim(ns, name, obj)

    def _kubelet(self, ns: str, name: str, pod: dict) -> None:
        runtime = self.runtimes.get((ns, name))
        if runtime is None or pod["status"].get("phase") in ("Running", "Failed", "Succeeded"):
            return
        spec = pod["spec"]
        age = time.monotonic() - runtime.created
        selector = spec.get("nodeSelector") or {}
        if any(self.node_labels.get(k) != v for k, v in selector.items()):
            message = (
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
            )

            def unschedulable(p: dict) -> None:
                p["status"]["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                    }
                ]

            self.update("pods", ns, name, unschedulable)
            return
        if age < self.start_delay_s:
            return
        container = spec["containers"][0]
        image = container.get("image", "")
        cname = container["name"]

        def scheduled(p: dict, **status: Any) -> None:
            p["status"].update(status)
            p["status"]["conditions"] = [
                {"type": "PodScheduled", "status": "True"},
                {
                    "type": "Ready",
                    "status": "True" if status.get("phase") == "Running" else "False",
                },
            ]

        if "pull-fails" in image:
            reason = "ErrImagePull" if age < self.start_delay_s + 0.5 else "ImagePullBackOff"
            waiting = {"reason": reason, "message": f'Back-off pulling image "{image}"'}
            self.update(
                "pods",
                ns,
                name,
                lambda p: scheduled(
                    p,
                    containerStatuses=[
                        {
                            "name": cname,
                            "image": image,
                            "imageID": "",
                            "restartCount": 0,
                            "ready": False,
                            "state": {"waiting": waiting},
                        }
                    ],
                ),
            )
            return
        if "oom-on-start" in image:
            terminated = {"reason": "OOMKilled", "exitCode": 137}
            self.update(
                "pods",
                ns,
                name,
                lambda p: scheduled(
                    p,
                    phase="Failed",
                    containerStatuses=[
                        {
                            "name": cname,
                            "image": image,
                            "imageID": "",
                            "restartCount": 0,
                            "ready": False,
                            "state": {"terminated": terminated},
                        }
                    ],
                ),
            )
            return
        for mount in container.get("volumeMounts") or []:
            (runtime.root / "volumes" / mount["name"]).mkdir(parents=True, exist_ok=True)
        running = {"running": {"startedAt": now_iso()}}
        self.update(
            "pods",
            ns,
            name,
            lambda p: scheduled(
                p,
                phase="Running",
                containerStatuses=[
                    {
                        "name": cname,
                        "image": image,
                        "imageID": f"fake://{image}",
                        "restartCount": 0,
                        "ready": True,
                        "state": running,
                    }
                ],
            ),
        )

    def _sandbox(self, ns: str, name: str, sandbox: dict) -> None:
        pod_name = (sandbox["metadata"].get("annotations") or {}).get(
            "agents.x-k8s.io/pod-name", name
        )
        pod = self.objects.get(("pods", ns, pod_name))
        ready = bool(pod) and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in pod["status"].get("conditions") or []
        )

        def mark(s: dict) -> None:
            s["status"]["conditions"] = [
                {
                    "type": "Ready",
                    "status": str(ready),
                    "reason": "DependenciesReady" if ready else "PodNotReady",
                    "message": "",
                    "lastTransitionTime": now_iso(),
                }
            ]

        if ready != _ready(sandbox):
            self.update("sandboxes", ns, name, mark)

    def _new_sandbox(
        self,
        ns: str,
        template_name: str,
        name: str,
        pod_name: str,
        labels: dict,
        owner: dict | None,
    ) -> None:
        template = self.objects.get(("sandboxtemplates", ns, template_name))
        pod_spec = copy.deepcopy(
            (template or {}).get("spec", {}).get("podTemplate", {}).get("spec", {})
        )
        sandbox_meta: dict[str, Any] = {
            "name": name,
            "labels": labels,
            "annotations": {"agents.x-k8s.io/pod-name": pod_name},
        }
        if owner:
            sandbox_meta["ownerReferences"] = [owner]
        sandbox = self.create(
            "sandboxes", ns, {"metadata": sandbox_meta, "spec": {"podTemplate": {"spec": pod_spec}}}
        )
        sandbox_owner = {"kind": "Sandbox", "name": name, "uid": sandbox["metadata"]["uid"]}
        self.create(
            "pods",
            ns,
            {
                "metadata": {
                    "name": pod_name,
                    "labels": dict(labels),
                    "ownerReferences": [sandbox_owner],
                },
                "spec": pod_spec,
            },
        )

    def _warm_pool(self, ns: str, name: str, pool: dict) -> None:
        template = pool["spec"]["sandboxTemplateRef"]["name"]
        members = [
            o
            for (r, n, _), o in self.objects.items()
            if r == "sandboxes"
            and n == ns
            and (o["metadata"].get("labels") or {}).get("agents.x-k8s.io/warm-pool-sandbox") == name
        ]
        for _ in range(int(pool["spec"].get("replicas", 1)) - len(members)):
            sandbox_name = f"{name}-{secrets.token_hex(3)}"
            labels = {
                "agents.x-k8s.io/warm-pool-sandbox": name,
                "agents.x-k8s.io/launch-type": "warm",
            }
            self._new_sandbox(
                ns,
                template,
                sandbox_name,
                f"{sandbox_name}-pod",
                labels,
                {"kind": "SandboxWarmPool", "name": name, "uid": pool["metadata"]["uid"]},
            )
        ready = sum(1 for m in members if _ready(m))

        def counts(p: dict) -> None:
            p["status"] = {
                "replicas": len(members),
                "readyReplicas": ready,
                "selector": f"agents.x-k8s.io/warm-pool-sandbox={name}",
            }

        self.update("sandboxwarmpools", ns, name, counts)

    def _claim(self, ns: str, name: str, claim: dict) -> None:
        status = claim.get("status") or {}
        bound = (status.get("sandbox") or {}).get("name")
        if bound:
            sandbox = self.objects.get(("sandboxes", ns, bound))
            ok = bool(sandbox) and _ready(sandbox)
            self.update(
                "sandboxclaims",
                ns,
                name,
                lambda c: _set_ready(c, ok, "SandboxReady" if ok else "SandboxNotReady"),
            )
            return
        pool_name = claim["spec"]["warmPoolRef"]["name"]
        pool = self.objects.get(("sandboxwarmpools", ns, pool_name))
        if pool is None:
            self.update(
                "sandboxclaims",
                ns,
                name,
                lambda c: _set_ready(
                    c, False, "WarmPoolNotFound", f'SandboxWarmPool "{pool_name}" not found'
                ),
            )
            return
        owner = {
            "kind": "SandboxClaim",
            "name": name,
            "uid": claim["metadata"]["uid"],
            "controller": True,
        }
        for (r, n, sandbox_name), sandbox in list(self.objects.items()):
            labels = sandbox["metadata"].get("labels") or {}
            if (
                r == "sandboxes"
                and n == ns
                and _ready(sandbox)
                and labels.get("agents.x-k8s.io/warm-pool-sandbox") == pool_name
            ):

                def adopt(s: dict) -> None:
                    s["metadata"]["labels"].pop("agents.x-k8s.io/warm-pool-sandbox", None)
                    s["metadata"]["ownerReferences"] = [owner]

                self.update("sandboxes", ns, sandbox_name, adopt)
                self.update("sandboxclaims", ns, name, lambda c, s=sandbox_name: _bind(c, s))
                return
        created = claim["metadata"].setdefault("_created", time.monotonic())
        if (
            time.monotonic() - created < self.cold_delay_s
            or ("sandboxes", ns, name) in self.objects
        ):
            if ("sandboxes", ns, name) in self.objects:
                self.update("sandboxclaims", ns, name, lambda c: _bind(c, name))
            return
        template = pool["spec"]["sandboxTemplateRef"]["name"]
        self._new_sandbox(ns, template, name, name, {"agents.x-k8s.io/launch-type": "cold"}, owner)


def _ready(obj: dict) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def _set_ready(claim: dict, ok: bool, reason: str, message: str = "") -> None:
    claim.setdefault("status", {})["conditions"] = [
        {
            "type": "Ready",
            "status": str(ok),
            "reason": reason,
            "message": message,
            "lastTransitionTime": now_iso(),
        }
    ]


def _bind(claim: dict, sandbox: str) -> None:
    claim.setdefault("status", {})["sandbox"] = {"name": sandbox}


def _kill(runtime: PodRuntime) -> None:
    for proc in list(runtime.procs):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _public(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    out["metadata"].pop("_created", None)
    return out


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a closed watch, a cancelled exec) is not an error here.
        if not isinstance(sys.exc_info()[1], ConnectionError | OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeKubernetes
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        return None

    # plumbing -------------------------------------------------------------------------------

    def _send(self, code: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, code: int, reason: str, message: str, **extra: Any) -> None:
        self._send(code, status_body(code, reason, message, **extra))

    def _route(self) -> tuple[str, str | None, str | None, str | None, dict]:
        parsed = urlparse(self.path)
        query = {k: v for k, v in parse_qs(parsed.query).items()}
        parts = parsed.path.strip("/").split("/")
        # /api/v1/namespaces/NS/RES[/NAME[/SUB]] or /apis/G/V/namespaces/NS/RES[/NAME[/SUB]]
        # (and the all-namespaces lists /api/v1/RES, /apis/G/V/RES)
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        ns = None
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        resource = rest[0] if rest else ""
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return resource, ns, name, sub, query

    def _check(self, method: str) -> bool:
        fake = self.server_fake
        # Read the body first: an early answer must not leave it in a kept-alive connection.
        length = int(self.headers.get("Content-Length") or 0)
        self._raw_body = self.rfile.read(length) if length else b""
        with fake.lock:
            fake.requests.append((method, self.path))
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token != fake.token:
            self._fail(401, "Unauthorized", "Unauthorized")
            return False
        with fake.lock:
            for inj in fake.injected:
                if inj.times > 0 and inj.method == method and re.search(inj.pattern, self.path):
                    inj.times -= 1
                    headers = {"Retry-After": str(inj.retry_after)} if inj.retry_after else {}
                    reason = {
                        429: "TooManyRequests",
                        404: "NotFound",
                        409: "AlreadyExists",
                        410: "Gone",
                        422: "Invalid",
                    }.get(inj.status, "InternalError")
                    self._send(inj.status, status_body(inj.status, reason, "injected"), headers)
                    return False
        return True

    def _body(self) -> dict:
        return json.loads(self._raw_body or b"{}")

    # verbs ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._check("GET"):
            return
        fake = self.server_fake
        resource, ns, name, sub, query = self._route()
        if resource not in KINDS:
            return self._fail(404, "NotFound", f"the server could not find resource {resource}")
        if sub == "exec":
            return self._exec(ns or "default", name or "", query)
        if name:
            obj = fake.get(resource, ns or "default", name)
            if obj is None:
                return self._fail(
                    404,
                    "NotFound",
                    f'{resource} "{name}" not found',
                    details={"name": name, "kind": resource},
                )
            return self._send(200, _public(obj))
        labels = (query.get("labelSelector") or [None])[0]
        fields = (query.get("fieldSelector") or [None])[0]
        if (query.get("watch") or ["false"])[0].lower() in ("true", "1"):
            return self._watch(resource, ns, labels, fields, query)
        group, version, kind = KINDS[resource]
        with fake.lock:
            items = [
                _public(o)
                for (r, n, _), o in fake.objects.items()
                if r == resource and (ns is None or n == ns) and matches(o, labels, fields)
            ]
            rv = fake.rv
        self._send(
            200,
            {
                "kind": f"{kind}List",
                "apiVersion": f"{group}/{version}".strip("/"),
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            },
        )

    def do_POST(self) -> None:
        if not self._check("POST"):
            return
        fake = self.server_fake
        resource, ns, _name, _sub, _query = self._route()
        if resource not in KINDS or ns is None:
            return self._fail(404, "NotFound", "not found")
        obj = self._body()
        name = (obj.get("metadata") or {}).get("name", "")
        _, _, kind = KINDS[resource]
        problems = []
        if not NAME.match(name) or len(name) > 63:
            problems.append(
                ("metadata.name", f"Invalid value: {name!r}: a lowercase RFC 1123 label")
            )
        for key, value in ((obj.get("metadata") or {}).get("labels") or {}).items():
            if len(value) > 63 or not LABEL_VALUE.match(value):
                problems.append((f"metadata.labels.{key}", f"Invalid value: {value!r}"))
        if resource == "pods" and not (obj.get("spec") or {}).get("containers"):
            problems.append(("spec.containers", "Required value"))
        if resource == "sandboxclaims" and not (obj.get("spec") or {}).get("warmPoolRef"):
            problems.append(("spec.warmPoolRef", "Required value"))
        if problems:
            return self._fail(
                422,
                "Invalid",
                f'{kind} "{name}" is invalid: ' + "; ".join(f"{f}: {m}" for f, m in problems),
                details={
                    "name": name,
                    "kind": resource,
                    "causes": [
                        {"reason": "FieldValueInvalid", "field": f, "message": m}
                        for f, m in problems
                    ],
                },
            )
        runtime_class = (obj.get("spec") or {}).get("runtimeClassName")
        if resource == "pods" and runtime_class and runtime_class not in fake.runtime_classes:
            return self._fail(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: pod rejected: '
                f'RuntimeClass "{runtime_class}" not found',
            )
        with fake.lock:
            if fake.get(resource, ns, name) is not None:
                return self._fail(
                    409,
                    "AlreadyExists",
                    f'{resource} "{name}" already exists',
                    details={"name": name, "kind": resource},
                )
            created = fake.create(resource, ns, obj)
        self._send(201, _public(created))

    def do_DELETE(self) -> None:
        if not self._check("DELETE"):
            return
        resource, ns, name, _sub, _query = self._route()
        obj = self.server_fake.delete(resource, ns or "default", name or "")
        if obj is None:
            return self._fail(
                404,
                "NotFound",
                f'{resource} "{name}" not found',
                details={"name": name, "kind": resource},
            )
        self._send(200, _public(obj))

    # watch ----------------------------------------------------------------------------------

    def _watch(
        self, resource: str, ns: str | None, labels: str | None, fields: str | None, query: dict
    ) -> None:
        fake = self.server_fake
        timeout = float((query.get("timeoutSeconds") or ["30"])[0])
        since = (query.get("resourceVersion") or [""])[0]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(kind: str, obj: dict) -> None:
            line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()

        def gone() -> None:
            send(
                "ERROR",
                status_body(
                    410, "Expired", f"too old resource version: {since} ({fake.compacted_rv})"
                ),
            )

        deadline = time.monotonic() + timeout
        try:
            with fake.lock:
                if since in ("", "0"):
                    cursor = fake.rv
                    initial = [
                        _public(o)
                        for (r, n, _), o in fake.objects.items()
                        if r == resource and (ns is None or n == ns) and matches(o, labels, fields)
                    ]
                else:
                    cursor = int(since)
                    initial = []
                    if cursor < fake.compacted_rv:
                        gone()
                        return self._end_chunks()
            for obj in initial:
                send("ADDED", obj)
            compacted_at_start = fake.compacted_rv
            while time.monotonic() < deadline and not fake._stop.is_set():
                with fake.lock:
                    if fake.compacted_rv != compacted_at_start:
                        gone()
                        break
                    batch = [
                        (rv, kind, o)
                        for rv, r, kind, o in fake.events
                        if rv > cursor
                        and r == resource
                        and (ns is None or o["metadata"].get("namespace") == ns)
                        and matches(o, labels, fields)
                    ]
                    cursor = fake.rv
                    if not batch:
                        fake.changed.wait(min(0.5, max(deadline - time.monotonic(), 0.01)))
                for _rv, kind, obj in batch:
                    send(kind, _public(obj))
            self._end_chunks()
        except (BrokenPipeError, ConnectionResetError):
            return

    def _end_chunks(self) -> None:
        with suppress(OSError):
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        self.close_connection = True

    # exec -----------------------------------------------------------------------------------

    def _exec(self, ns: str, name: str, query: dict) -> None:
        fake = self.server_fake
        pod = fake.get("pods", ns, name)
        if pod is None:
            return self._fail(404, "NotFound", f'pods "{name}" not found')
        if pod["status"].get("phase") != "Running":
            return self._fail(400, "BadRequest", f"pod {name} is not running")
        container = pod["spec"]["containers"][0]
        wanted = (query.get("container") or [container["name"]])[0]
        if wanted != container["name"]:
            return self._fail(400, "BadRequest", f"container {wanted} is not valid for pod {name}")
        offered = [p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
        protocol = next((p for p in fake.subprotocols if p in offered), None)
        if self.headers.get("Upgrade", "").lower() != "websocket" or protocol is None:
            return self._fail(400, "BadRequest", "exec needs a websocket with a channel protocol")
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.wfile.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
            ).encode()
        )
        self.wfile.flush()
        self.close_connection = True
        runtime = fake.runtimes.get((ns, name))
        if runtime is None:
            return
        with fake.lock:
            fake.exec_count += 1
        Exec(self.connection, self.rfile, runtime, pod, query, protocol, fake).run()


class Exec:
    """One exec stream: a real process under bubblewrap, its pipes as websocket channels."""

    def __init__(
        self,
        sock: socket.socket,
        rfile: Any,
        runtime: PodRuntime,
        pod: dict,
        query: dict,
        protocol: str,
        fake: FakeKubernetes,
    ):
        self.sock, self.rfile, self.runtime, self.pod = sock, rfile, runtime, pod
        self.query, self.v5, self.fake = query, protocol.startswith("v5"), fake
        self.send_lock = threading.Lock()

    def send(self, opcode: int, payload: bytes) -> None:
        """One unmasked frame to the client."""
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([n])
        elif n < 65536:
            header += bytes([126]) + n.to_bytes(2, "big")
        else:
            header += bytes([127]) + n.to_bytes(8, "big")
        with self.send_lock, suppress(OSError):
            self.sock.sendall(header + payload)

    def recv(self) -> tuple[int, bytes] | None:
        """One (unfragmented or reassembled) frame from the client, or None at the end."""
        message, first_op = b"", None
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return None
            fin, opcode = head[0] & 0x80, head[0] & 0x0F
            n = head[1] & 0x7F
            if n == 126:
                n = int.from_bytes(self.rfile.read(2), "big")
            elif n == 127:
                n = int.from_bytes(self.rfile.read(8), "big")
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytearray(self.rfile.read(n))
            for i in range(len(data)):
                data[i] ^= mask[i % 4]
            if opcode in (8, 9, 10):
                return opcode, bytes(data)
            first_op = first_op if first_op is not None else opcode
            message += bytes(data)
            if fin:
                return first_op, message

    def argv(self) -> list[str]:
        """The command, under bubblewrap: the host's root read-only stands for the image, the
        pod's emptyDir volumes at their mount paths, the container's env and working dir."""
        container = self.pod["spec"]["containers"][0]
        # The host's root read-only on a tmpfs of its own, as the local sandbox has it, so a
        # mount path the host lacks (/workspace) can be made in it.
        cmd = ["bwrap", "--die-with-parent", "--unshare-pid", *read_only_root()]
        cmd += ["--dev", "/dev", "--proc", "/proc"]
        for mount in container.get("volumeMounts") or []:
            source = self.runtime.root / "volumes" / mount["name"]
            source.mkdir(parents=True, exist_ok=True)
            cmd += ["--bind", str(source), mount["mountPath"]]
        # The image's Python is this one: mounted back read-only where a pod volume (the
        # emptyDir on /tmp) covers it, as in a checkout under /tmp.
        for prefix in python_prefixes():
            cmd += ["--ro-bind", str(prefix), str(prefix)]
        cmd += [
            "--chdir",
            container.get("workingDir") or "/",
            "--clearenv",
            "--setenv",
            "PATH",
            PATH,
        ]
        for item in container.get("env") or []:
            cmd += ["--setenv", item["name"], item.get("value", "")]
        return [*cmd, "--", *self.query.get("command", [])]

    def run(self) -> None:
        """Run the command to its end, then send its exit status and close."""
        want_stdin = (self.query.get("stdin") or ["false"])[0].lower() in ("true", "1")
        try:
            proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.PIPE if want_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            self._finish(status_body(500, "InternalError", f"exec failed: {exc}"))
            return
        with self.fake.lock:
            self.runtime.procs.add(proc)
        pumps = [
            threading.Thread(target=self._pump, args=(pipe, ch), daemon=True)
            for pipe, ch in ((proc.stdout, 1), (proc.stderr, 2))
        ]
        for pump in pumps:
            pump.start()
        reader = threading.Thread(target=self._read_stdin, args=(proc,), daemon=True)
        reader.start()
        code = proc.wait()
        for pump in pumps:
            pump.join(10)
        with self.fake.lock:
            self.runtime.procs.discard(proc)
        if code == 0:
            self._finish({"metadata": {}, "status": "Success"})
        else:
            if code < 0:  # killed by a signal: the runtime reports 128 + signal
                code = 128 - code
            self._finish(
                status_body(
                    500,
                    "NonZeroExitCode",
                    f"command terminated with non-zero exit code: {code}",
                    details={"causes": [{"reason": "ExitCode", "message": str(code)}]},
                )
            )

    def _pump(self, pipe: Any, channel: int) -> None:
        for chunk in iter(lambda: pipe.read1(32768), b""):
            self.send(2, bytes([channel]) + chunk)

    def _read_stdin(self, proc: subprocess.Popen) -> None:
        while True:
            try:
                frame = self.recv()
            except (OSError, ValueError):  # ValueError: the connection's file was closed
                frame = None
            if frame is None or frame[0] == 8:
                break
            _opcode, data = frame
            if not data:
                continue
            if self.v5 and data[0] == 255:  # CLOSE control: data[1] is the channel
                if len(data) > 1 and data[1] == 0 and proc.stdin:
                    with suppress(OSError):
                        proc.stdin.close()
                continue
            if data[0] == 0 and proc.stdin:
                try:
                    proc.stdin.write(data[1:])
                    proc.stdin.flush()
                except OSError:  # the command stopped reading (tar at its end marker)
                    continue
        if proc.stdin:
            with suppress(OSError):
                proc.stdin.close()

    def _finish(self, status: dict) -> None:
        self.send(2, bytes([3]) + json.dumps(status).encode())
        self.send(8, (1000).to_bytes(2, "big"))
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
