"""The kubernetes sandbox provider against the Kubernetes API contract (tests/fake_k8s.py).

Commands really run: the fake pod is a bubblewrap sandbox with the pod's emptyDirs mounted.
With K8S_TEST_KUBECONFIG set, the tests that need no fake-only control (error injection,
images that fail on purpose) run against that cluster instead (see the README), in the namespace
K8S_TEST_NAMESPACE (default `default`) with the image K8S_TEST_IMAGE (default
campaign-sandbox:latest, which has sh, tar, find, timeout, git and Python).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from orchestrator_assets.reports.metrics import STATS_TAG
from resources.sandboxes.docker import ContainerLimits
from resources.sandboxes.k8s_config import KubernetesSettings, Toleration
from resources.sandboxes.kubernetes import LABEL, KubernetesSandboxProvider
from tests.conftest import FLEET, Platform, require, statuses
from tests.fake_k8s import FakeKubernetes

ROOT = Path(__file__).resolve().parents[1]
REAL = os.environ.get("K8S_TEST_KUBECONFIG")
NAMESPACE = os.environ.get("K8S_TEST_NAMESPACE", "default")
IMAGE = os.environ.get("K8S_TEST_IMAGE", "campaign-sandbox:latest")
fake_only = pytest.mark.skipif(bool(REAL), reason="needs the fake API server's controls")


@dataclass
class Cluster:
    """Where the tests' pods go: the fake API server, or a real cluster's kubeconfig."""

    kubeconfig: Path
    fake: FakeKubernetes | None

    def settings(self, **fields) -> KubernetesSettings:
        return KubernetesSettings(
            kubeconfig=str(self.kubeconfig),
            namespace=NAMESPACE,
            **{"ready_timeout_s": 60, **fields},
        )

    def pods(self) -> list[dict]:
        """The platform's pods in the namespace."""
        from kubernetes import client

        from resources.sandboxes.k8s_api import json_body
        from resources.sandboxes.k8s_config import api_client

        core = client.CoreV1Api(api_client(self.settings()))
        listed = core.list_namespaced_pod(NAMESPACE, label_selector=LABEL, _preload_content=False)
        return json_body(listed)["items"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """The fake API server on a free port (or the real cluster K8S_TEST_KUBECONFIG names)."""
    if REAL:
        yield Cluster(Path(REAL), None)
        return
    require(
        subprocess.run(["which", "bwrap"], capture_output=True).returncode == 0,
        "bubblewrap (bwrap) is not installed: the fake pods run under it",
    )
    with FakeKubernetes(tmp_path / "k8s") as fake:
        yield Cluster(fake.write_kubeconfig(tmp_path / "kubeconfig"), fake)
        assert fake.running_processes() == 0, "a command outlived its pod"


def provider(tmp_path: Path, cluster: Cluster, limits=None, **fields) -> KubernetesSandboxProvider:
    return KubernetesSandboxProvider(
        tmp_path / "sandboxes", IMAGE, cluster.settings(**fields), limits
    )


TAGS = {"campaign": "rename", "target": "acme__alpha", "run_id": "0123abcd-run"}


# the pod ---------------------------------------------------------------------------------------


@fake_only
def test_the_pod_is_made_from_the_profile_and_deleted_when_the_sandbox_closes(tmp_path, cluster):
    assert cluster.fake is not None
    p = provider(
        tmp_path,
        cluster,
        ContainerLimits(memory_mb=512, cpus=1.5),
        node_selector={"kubernetes.io/os": "linux"},
        tolerations=[Toleration(key="sandbox", operator="Exists", effect="NoSchedule")],
        service_account="campaign-sandbox",
        runtime_class="gvisor",
    )
    with p.open("change", TAGS) as sandbox:
        assert sandbox.exec(["true"]).ok
        (pod,) = cluster.fake.list("pods")
        spec, meta = pod["spec"], pod["metadata"]
        container = spec["containers"][0]
        assert container["image"] == IMAGE
        assert container["resources"] == {
            "requests": {"memory": "512Mi", "cpu": "1500m"},
            "limits": {"memory": "512Mi", "cpu": "1500m"},
        }
        assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
        assert spec["tolerations"] == [
            {"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}
        ]
        assert spec["serviceAccountName"] == "campaign-sandbox"
        assert spec["automountServiceAccountToken"] is True
        assert spec["runtimeClassName"] == "gvisor"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        labels = meta["labels"]
        assert labels[LABEL] == "kubernetes"
        assert labels["org.campaign.campaign"] == "rename"
        assert labels["org.campaign.target"] == "acme__alpha"
        assert labels["org.campaign.run_id"] == "0123abcd-run"
        assert labels["org.campaign.pid"] == str(os.getpid())
        assert meta["annotations"]["org.campaign.host"] == socket.gethostname()
        assert sandbox.isolation == "kubernetes:gvisor"
    assert cluster.fake.list("pods") == []
    assert not list((tmp_path / "sandboxes").iterdir())


def test_exec_streams_output_and_reports_exit_codes(tmp_path, cluster):
    lines: list[str] = []
    with provider(tmp_path, cluster).open("verify", TAGS) as sandbox:
        result = sandbox.exec(
            ["sh", "-c", "echo one; echo two >&2; sleep 1; echo three; exit 3"],
            on_output=lines.append,
        )
        assert result.exit_code == 3 and not result.ok
        # stdout and stderr are separate channels: their order within a moment is not kept.
        assert set(lines[:2]) == {"one", "two"} and lines[2:] == ["three"]
        assert "three" in result.output_tail
        assert "exited with code 3" in result.describe_failure()
        missing = sandbox.exec(["no-such-command-here"])
        assert missing.exit_code == 127
        with_env = sandbox.exec(["sh", "-c", 'echo "$GREETING in $PWD"'], env={"GREETING": "a b"})
        assert with_env.ok and "a b in /workspace" in with_env.output_tail


def test_the_workspace_goes_in_and_the_change_comes_out_but_not_git(tmp_path, cluster):
    with provider(tmp_path, cluster).open("change", TAGS) as sandbox:
        ws = sandbox.workspace
        (ws / "app.py").write_text("GREETING = 'OLD'\n")
        (ws / "pkg").mkdir()
        (ws / "pkg" / "gone.py").write_text("x = 1\n")
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(ws)]
        subprocess.run(["git", "init", "-q", str(ws)], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", "base"], check=True)
        result = sandbox.exec(
            [
                "sh",
                "-c",
                "sed -i s/OLD/NEW/ app.py && rm pkg/gone.py && mkdir -p new && "
                "echo hi > new/file.txt && git log --oneline | wc -l && "
                "git config user.name intruder",
            ]
        )
        assert result.ok, result.output_tail
        assert "1" in result.output_tail  # git works in the pod (objects went in)
        assert (ws / "app.py").read_text() == "GREETING = 'NEW'\n"
        assert not (ws / "pkg" / "gone.py").exists()
        assert (ws / "new" / "file.txt").read_text() == "hi\n"
        # .git is never copied back: the pod cannot change what the platform's git sees.
        assert "intruder" not in (ws / ".git" / "config").read_text()
        # A change on the host between commands reaches the pod.
        (ws / "app.py").write_text("GREETING = 'HOST'\n")
        again = sandbox.exec(["cat", "app.py"])
        assert "HOST" in again.output_tail


SECRET = "sk-ant-0123456789-not/a real=key&x%20y"


def secret_travels_only_inside(sandbox, requests: list[tuple[str, str]] | None) -> None:
    """Run a command given SECRET in its environment: it sees the value, yet no exec request
    the API server received and no command line in the pod carries it. Shared with the
    agent-sandbox tests."""
    import hashlib
    from urllib.parse import quote, quote_plus, unquote_plus

    wanted = hashlib.sha256(SECRET.encode()).hexdigest()
    # The command prints the value's hash (not the value) and every command line in the pod.
    script = (
        'printf %s "$ANTHROPIC_API_KEY" | sha256sum; '
        'for p in /proc/[0-9]*; do tr "\\0" " " < "$p/cmdline"; echo; done'
    )
    result = sandbox.exec(["sh", "-c", script], env={"ANTHROPIC_API_KEY": SECRET, "OTHER": "1"})
    assert result.ok, result.output_tail
    assert wanted in result.output_tail  # the command saw the value
    assert "sha256sum" in result.output_tail  # the command lines were listed
    assert SECRET not in result.output_tail  # in no process's command line
    assert not list(sandbox.workspace.rglob("*ANTHROPIC*"))  # nor left in the workspace
    if requests is not None:
        execs = [unquote_plus(path) for _method, path in requests if "/exec" in path]
        assert execs, "no exec request was seen"
        raw = [path for _method, path in requests]
        for form in (SECRET, quote(SECRET, safe=""), quote_plus(SECRET)):
            assert not any(form in path for path in execs + raw), form


def test_secrets_reach_the_command_but_never_an_exec_url_or_command_line(tmp_path, cluster):
    with provider(tmp_path, cluster).open("agent", TAGS) as sandbox:
        secret_travels_only_inside(sandbox, cluster.fake.requests if cluster.fake else None)


@fake_only
def test_a_server_that_speaks_only_exec_v4_still_syncs_and_passes_the_environment(
    tmp_path, cluster
):
    """v4 cannot close stdin: every stdin the sandbox sends (workspace, environment, names to
    copy back) must end by itself."""
    assert cluster.fake is not None
    cluster.fake.subprotocols = ["v4.channel.k8s.io"]
    with provider(tmp_path, cluster).open("change", TAGS) as sandbox:
        ws = sandbox.workspace
        (ws / "a.txt").write_text("a\n")
        result = sandbox.exec(
            ["sh", "-c", 'mv a.txt b.txt && printf %s "$VALUE" > value.txt && mkdir empty'],
            env={"VALUE": "two\nlines\n"},
            timeout_s=60,
        )
        assert result.ok, result.output_tail
        assert not (ws / "a.txt").exists() and (ws / "b.txt").read_text() == "a\n"
        assert (ws / "value.txt").read_text() == "two\nlines\n"  # trailing newline kept
        assert (ws / "empty").is_dir()


def test_a_hostile_tar_from_the_pod_cannot_write_through_a_symlink_or_into_git(tmp_path):
    """What a pod could send instead of its changes: `x -> .git` then `x/config`, a member
    through a symlink the host already has, `.git/...` itself, `../` and a hard link."""
    import io
    import tarfile

    from resources.git import git_metadata_digest
    from resources.sandboxes.k8s_copy import extract

    ws = tmp_path / "ws"
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    (ws / "old_link").symlink_to(".git/hooks")
    before = git_metadata_digest(ws)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, data: bytes = b"", **fields) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for key, value in fields.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data))

        add("./x", type=tarfile.SYMTYPE, linkname=".git")
        add("./x/config", b"[core]\n\tfsmonitor = touch /tmp/pwned\n")
        add("./old_link/post-checkout", b"#!/bin/sh\n", mode=0o755)
        add("./.git/hooks/pre-commit", b"#!/bin/sh\n", mode=0o755)
        add("../outside", b"x")
        add("./hard", type=tarfile.LNKTYPE, linkname=".git/config")
        add("./fine.txt", b"fine\n", mode=0o755)
    wanted = {"x", "x/config", "old_link/post-checkout", ".git/hooks/pre-commit", "hard"}
    refused = extract(buffer.getvalue(), ws, wanted | {"fine.txt", "../outside"})
    assert git_metadata_digest(ws) == before
    assert not (tmp_path / "outside").exists()
    assert (ws / "x").is_symlink() and os.readlink(ws / "x") == ".git"
    assert (ws / "fine.txt").read_text() == "fine\n" and os.access(ws / "fine.txt", os.X_OK)
    assert not (ws / "hard").exists()
    joined = "\n".join(refused)
    for name in ("x/config", "old_link/post-checkout", ".git/hooks/pre-commit", "../outside"):
        assert name in joined
    assert "hard" in joined


def test_a_command_that_runs_too_long_is_stopped_at_its_timeout(tmp_path, cluster):
    with provider(tmp_path, cluster).open("verify", TAGS) as sandbox:
        started = time.monotonic()
        result = sandbox.exec(["sleep", "60"], timeout_s=2)
        assert result.timed_out and not result.ok
        assert time.monotonic() - started < 20
        assert "timed out after 2s" in result.describe_failure()
        assert sandbox.exec(["true"]).ok  # the pod is still usable


@fake_only
@pytest.mark.parametrize(
    ("fields", "image", "reason"),
    [
        ({}, "registry.invalid/pull-fails:1", "ImagePullBackOff"),
        (
            {"node_selector": {"disktype": "ssd"}, "ready_timeout_s": 2},
            None,
            "was not ready after 2s: Unschedulable: 0/1 nodes are available",
        ),
        ({}, "registry.invalid/oom-on-start:1", "OOMKilled"),
    ],
    ids=["image-pull", "unschedulable", "oom"],
)
def test_a_pod_that_never_gets_ready_fails_its_command_with_the_reason(
    tmp_path, cluster, fields, image, reason
):
    assert cluster.fake is not None
    p = provider(tmp_path, cluster, **fields)
    if image:
        p.image = image
    with p.open("change", TAGS) as sandbox:
        started = time.monotonic()
        result = sandbox.exec(["true"])
        assert result.exit_code == 125
        assert reason in result.output_tail, result.output_tail
        assert "pod default/cs-acme-alpha-" in result.output_tail
        assert time.monotonic() - started < 15
        # The sandbox stays failed without asking the cluster again.
        assert sandbox.exec(["true"]).exit_code == 125
    assert cluster.fake.list("pods") == []


def test_cancelling_a_run_kills_its_command_and_deletes_the_pod(tmp_path, cluster):
    p = provider(tmp_path, cluster)
    results = []
    with p.open("change", TAGS) as sandbox:
        worker = threading.Thread(target=lambda: results.append(sandbox.exec(["sleep", "120"])))
        worker.start()
        deadline = time.monotonic() + 30
        while not cluster.pods() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # the command is running in the pod
        started = time.monotonic()
        p.close_all()  # what a cancelled run does
        worker.join(30)
        assert not worker.is_alive() and time.monotonic() - started < 10
    assert results and not results[0].ok
    deadline = time.monotonic() + 30
    while cluster.pods() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster.pods() == []


# the API's answers ---------------------------------------------------------------------------


@fake_only
def test_throttling_and_server_errors_are_retried_and_the_rest_explained(tmp_path, cluster):
    fake = cluster.fake
    assert fake is not None
    fake.fail_next("POST", r"/pods$", 429, retry_after=1)
    fake.fail_next("GET", r"/pods/cs-[^/?]*$", 503, times=1)
    fake.fail_next("POST", r"/pods$", 409)  # a name that is taken: another is drawn
    with provider(tmp_path, cluster).open("change", TAGS) as sandbox:
        started = time.monotonic()
        assert sandbox.exec(["true"]).ok
        assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    posts = [path for method, path in fake.requests if method == "POST"]
    assert len(posts) == 3
    fake.fail_next("POST", r"/pods$", 422)
    with provider(tmp_path, cluster).open("change", TAGS) as sandbox:
        result = sandbox.exec(["true"])
        assert result.exit_code == 125
        assert "cannot create pod default/cs-acme-alpha-" in result.output_tail
        assert "422 Invalid: injected" in result.output_tail
    with provider(tmp_path, cluster, runtime_class="kata").open("change", TAGS) as sandbox:
        result = sandbox.exec(["true"])
        assert 'RuntimeClass "kata" not found' in result.output_tail


@fake_only
def test_a_watch_whose_resource_version_expired_starts_again(tmp_path, cluster):
    fake = cluster.fake
    assert fake is not None
    fake.start_delay_s = 2.0
    threading.Timer(0.8, fake.expire_watches).start()
    with provider(tmp_path, cluster).open("change", TAGS) as sandbox:
        assert sandbox.exec(["true"]).ok
    watches = [p for m, p in fake.requests if m == "GET" and "watch=" in p]
    reads = [p for m, p in fake.requests if m == "GET" and "watch=" not in p and "exec" not in p]
    assert len(watches) >= 2 and reads, fake.requests


@fake_only
def test_credentials_come_from_kubeconfig_or_the_pods_service_account(tmp_path, monkeypatch):
    from kubernetes.config import incluster_config

    require(
        subprocess.run(["which", "bwrap"], capture_output=True).returncode == 0,
        "bubblewrap (bwrap) is not installed",
    )
    with FakeKubernetes(tmp_path / "tls", tls=True, token="sa-token") as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kc")
        # KUBECONFIG is used when the profile names none.
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        p = KubernetesSandboxProvider(tmp_path / "a", IMAGE, KubernetesSettings())
        with p.open("x", TAGS) as sandbox:
            assert sandbox.exec(["true"]).ok
        # In a pod: the service account's token and CA, and the service host and port.
        token, ca = tmp_path / "token", tmp_path / "ca.crt"
        token.write_text("sa-token")
        assert fake.cert is not None
        ca.write_bytes(fake.cert.read_bytes())
        monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
        monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", fake.url.rsplit(":", 1)[1])
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
        p = KubernetesSandboxProvider(tmp_path / "b", IMAGE, KubernetesSettings())
        with p.open("x", TAGS) as sandbox:
            assert sandbox.exec(["true"]).ok
        assert fake.list("pods") == []
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    p = KubernetesSandboxProvider(
        tmp_path / "c", IMAGE, KubernetesSettings(kubeconfig=str(tmp_path / "nowhere"))
    )
    with p.open("x", TAGS) as sandbox:
        result = sandbox.exec(["true"])
        assert result.exit_code == 125 and "cannot load kubeconfig" in result.output_tail


# orphans ---------------------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def profiles_file(platform: Platform, cluster: Cluster, **profile) -> None:
    data = {
        "default": "k8s",
        "profiles": {
            "k8s": {
                "provider": "kubernetes",
                "image": IMAGE,
                "kubernetes": {
                    "kubeconfig": str(cluster.kubeconfig),
                    "namespace": NAMESPACE,
                    "ready_timeout_s": 60,
                },
                **profile,
            }
        },
    }
    path = platform.root / "profiles.yaml"
    path.write_text(yaml.safe_dump(data))
    platform.set_env("ORCHESTRATOR_PROFILES_FILE", str(path))


@fake_only
def test_prune_deletes_the_pods_a_crashed_run_left_and_spares_live_ones(
    tmp_path, cluster, platform: Platform, monkeypatch
):
    fake = cluster.fake
    assert fake is not None
    profiles_file(platform, cluster)
    p = provider(tmp_path, cluster)
    host = socket.gethostname()
    for name, pid in (("cs-crashed-1", dead_pid()), ("cs-live-1", os.getpid())):
        manifest = p.pod_manifest(
            name, {"campaign": "c", "target": name, "host": host, "pid": str(pid)}
        )
        fake.create("pods", NAMESPACE, manifest)
    rows = json.loads(platform.cli("sandboxes", "list", "--output", "json").stdout)
    by_id = {r["ident"]: r for r in rows if r["kind"] == "pod"}
    assert by_id[f"{NAMESPACE}/cs-crashed-1"]["orphan"] is True
    assert "is gone" in by_id[f"{NAMESPACE}/cs-crashed-1"]["why"]
    assert by_id[f"{NAMESPACE}/cs-live-1"]["orphan"] is False
    dry = platform.cli("sandboxes", "prune", "--dry-run")
    assert "would remove pod default/cs-crashed-1" in dry.stdout
    assert len(fake.list("pods")) == 2
    platform.cli("sandboxes", "prune")
    assert [p["metadata"]["name"] for p in fake.list("pods")] == ["cs-live-1"]


# a campaign ------------------------------------------------------------------------------------


def test_a_campaign_runs_end_to_end_in_kubernetes_pods(platform: Platform, cluster):
    from orchestrator_assets.assets.history import latest_changes
    from orchestrator_assets.spec.catalog import load_one

    profiles_file(platform, cluster)
    fleet = platform.make_fleet([r for r in FLEET if r.name in ("alpha", "gamma", "epsilon")])
    path = platform.write_campaign("rename", targets=[str(p) for p in fleet])
    outcome = platform.run(path)
    spec = load_one(path, platform.settings()).spec
    with platform.instance() as instance:
        changes = latest_changes(instance, spec)
    # why, if a run fails here: the sandbox's own words
    tails = {k: c.output_tail for k, c in changes.items()}
    assert statuses(outcome.report) == {
        "acme__alpha": "pr_open",
        "acme__gamma": "no_change",
        "acme__epsilon": "verification_failed",
    }, f"{outcome.report[['target', 'status', 'reason']].to_string()}\n{tails}"
    shown = subprocess.run(
        ["git", "-C", str(fleet[0]), "show", "campaign/rename:app.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "NEW" in shown
    assert {c.isolation for c in changes.values()} == {"kubernetes"}
    assert cluster.pods() == []  # every pod deleted
    if cluster.fake is not None:
        assert cluster.fake.exec_count > 10  # the commands really ran in the pods
    # time to ready counts the wait for each pod (3 changes, 2 verifications: gamma has none)
    with platform.instance() as instance:
        (stats,) = [r.tags[STATS_TAG] for r in instance.get_runs() if STATS_TAG in r.tags]
    ready = json.loads(stats)["sandbox_ready"]
    assert len(ready) == 5 and {provider for provider, _ in ready} == {"kubernetes"}
    floor = cluster.fake.start_delay_s if cluster.fake is not None else 0.0
    assert all(seconds > floor for _, seconds in ready)


# the client's floor ----------------------------------------------------------------------------

FLOOR_SCRIPT = """
import sys
from pathlib import Path

import kubernetes

from resources.sandboxes.k8s_config import KubernetesSettings
from resources.sandboxes.kubernetes import KubernetesSandboxProvider

root, kubeconfig, namespace, image = sys.argv[1:5]
settings = KubernetesSettings(kubeconfig=kubeconfig, namespace=namespace, ready_timeout_s=60)
provider = KubernetesSandboxProvider(Path(root), image, settings)
with provider.open("floor", {"target": "floor"}) as sandbox:
    (sandbox.workspace / "in.txt").write_text("in\\n")
    result = sandbox.exec(
        ["sh", "-c", 'cat in.txt > out.txt && test "$FLOOR_SECRET" = s3cr3t-value && echo ok'],
        env={"FLOOR_SECRET": "s3cr3t-value"},
    )
    assert result.ok and "ok" in result.output_tail, result.output_tail
    assert (sandbox.workspace / "out.txt").read_text() == "in\\n"
print("kubernetes", kubernetes.__version__, "from", Path(kubernetes.__file__).parent)
"""


def client_floor() -> str:
    """The lowest kubernetes client pyproject.toml allows."""
    text = (ROOT / "pyproject.toml").read_text()
    found = re.search(r'"kubernetes>=([0-9][0-9.]*)"', text)
    assert found, "pyproject.toml names no kubernetes>= floor"
    return found.group(1)


def floor_client(floor: str) -> Path:
    """kubernetes==floor installed once (without its dependencies: the environment's serve)
    under .tools/, from the package registry."""
    target = ROOT / ".tools" / f"kubernetes-{floor}"
    if (target / "kubernetes").is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".kubernetes-{floor}-", dir=target.parent))
    try:
        install = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
             str(staging), f"kubernetes=={floor}"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        require(
            install.returncode == 0,
            f"cannot install kubernetes=={floor} from the registry: {install.stderr[-400:]}",
        )
        with __import__("contextlib").suppress(OSError):  # another run may have won the race
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@fake_only
def test_the_kubernetes_client_floor_in_pyproject_runs_a_sandbox(tmp_path, cluster):
    """The oldest client pyproject.toml allows does everything the sandbox calls: a pod made
    and awaited, the workspace in over stdin (closed with v5's close_channel), an env var, the
    change out. Runs with that client first on sys.path, in a process of its own."""
    floor = client_floor()
    target = floor_client(floor)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    run = subprocess.run(
        [sys.executable, "-c", FLOOR_SCRIPT, str(tmp_path / "floor"), str(cluster.kubeconfig),
         NAMESPACE, IMAGE],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    from packaging.version import Version

    assert Version(run.stdout.split()[1]) == Version(floor), run.stdout
    assert str(target) in run.stdout  # the floor's copy, not the environment's
