"""Every sandbox provider leaves the same workspace behind, and none can touch the host's `.git`.

The same repository, the same command, on each provider: local (bubblewrap), docker (when a
Docker engine is up; under CI=true it must be), kubernetes pod and agent-sandbox claim (against
the fake Kubernetes API in tests/fake_k8s.py, whose pods really run the command). The tree the
command leaves on the host — every path, its type, its bytes, its executable bit, a link's
target, empty directories included — must equal the local provider's, and the `.git` metadata
(config, commondir, hooks, info/attributes, everything but objects, refs and the index) must be
byte-identical before and after.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from resources.git import git_metadata_digest
from tests.conftest import require
from tests.fake_k8s import FakeKubernetes

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "campaign-sandbox:latest"
PROVIDERS = ["local", "docker", "kubernetes", "agent-sandbox"]
CLUSTER = ["kubernetes", "agent-sandbox"]
TAGS = {"campaign": "parity", "target": "acme__parity", "run_id": "cafe-run"}
Opener = Callable[[], AbstractContextManager[Any]]


def have_bwrap() -> bool:
    return subprocess.run(["which", "bwrap"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def docker_image() -> None:
    """A running Docker engine with the sandbox image (started and built as tests/test_docker
    does; under CI=true a missing engine fails)."""
    engine = subprocess.run(
        [str(ROOT / "scripts/docker-engine.sh")], capture_output=True, text=True, timeout=300
    )
    require(engine.returncode == 0, f"no Docker engine: {engine.stderr.strip()[-400:]}")
    build = subprocess.run(
        [str(ROOT / "images/build.sh"), "sandbox"], capture_output=True, text=True, timeout=1800
    )
    assert build.returncode == 0, f"images/build.sh failed:\n{build.stderr[-3000:]}"


def _fake(stack: ExitStack, root: Path, agent_sandbox: bool) -> FakeKubernetes:
    require(have_bwrap(), "bubblewrap (bwrap) is not installed: the fake pods run under it")
    fake = stack.enter_context(FakeKubernetes(root))
    if agent_sandbox:
        deploy = ROOT / "deploy" / "agent-sandbox"
        names = yaml.safe_load((deploy / "kustomization.yaml").read_text())["resources"]
        for name in names:
            for doc in yaml.safe_load_all((deploy / name).read_text()):
                plural = {
                    "SandboxTemplate": "sandboxtemplates",
                    "SandboxWarmPool": "sandboxwarmpools",
                }.get((doc or {}).get("kind"))
                if plural:
                    fake.create(plural, "campaign-sandboxes", doc)
    return fake


def make_opener(kind: str, tmp_path: Path, stack: ExitStack, request: Any) -> Opener:
    """How to open a sandbox of `kind` (whatever it needs started first)."""
    root = tmp_path / kind
    if kind == "local":
        from resources.sandboxes.local import LocalSandboxProvider

        require(have_bwrap(), "bubblewrap (bwrap) is not installed")
        local = LocalSandboxProvider(root / "sandboxes", isolation="bwrap")
        return lambda: local.open("parity", TAGS)
    if kind == "docker":
        from resources.sandboxes.docker import DockerSandboxProvider

        request.getfixturevalue("docker_image")
        docker = DockerSandboxProvider(root / "sandboxes", IMAGE)
        return lambda: docker.open("parity", TAGS)
    fake = _fake(stack, root / "k8s", kind == "agent-sandbox")
    kubeconfig = fake.write_kubeconfig(root / "kubeconfig")
    if kind == "kubernetes":
        from resources.sandboxes.k8s_config import KubernetesSettings
        from resources.sandboxes.kubernetes import KubernetesSandboxProvider

        pods = KubernetesSandboxProvider(
            root / "sandboxes", IMAGE, KubernetesSettings(kubeconfig=str(kubeconfig))
        )
        opener: Opener = lambda: pods.open("parity", TAGS)  # noqa: E731
    else:
        from resources.sandboxes.agent_sandbox import AgentSandboxProvider
        from resources.sandboxes.k8s_config import AgentSandboxSettings

        settings = AgentSandboxSettings(
            kubeconfig=str(kubeconfig), namespace="campaign-sandboxes", template="python"
        )
        claims = AgentSandboxProvider(root / "sandboxes", settings, root / "claims.jsonl")
        opener = lambda: claims.open("parity", TAGS)  # noqa: E731
    stack.callback(lambda: _no_process_left(fake))
    return opener


def _no_process_left(fake: FakeKubernetes) -> None:
    deadline = time.monotonic() + 10
    while fake.running_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fake.running_processes() == 0, "a command outlived its pod"


@pytest.fixture
def open_sandbox(request: Any, tmp_path: Path) -> Iterator[Callable[[str], Opener]]:
    """`open_sandbox(kind)`: a function opening a sandbox of that provider."""
    with ExitStack() as stack:
        made: dict[str, Opener] = {}

        def get(kind: str) -> Opener:
            if kind not in made:
                made[kind] = make_opener(kind, tmp_path, stack, request)
            return made[kind]

        yield get


# the repository and the tree ------------------------------------------------------------------

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
FILES = {
    "a.py": "A = 1\n",
    "keep.txt": "same size\n",
    "old/name.txt": "moved with its directory\n",
    "old/deep/inner.txt": "deep\n",
    "pkg/gone.py": "x = 1\n",
    "pkg/run.sh": "#!/bin/sh\necho run\n",
    "pkg/was_exec.sh": "#!/bin/sh\n",
    "dir_to_file/f.txt": "f\n",
    "file_to_dir": "plain\n",
}


def seed(ws: Path) -> None:
    """The same small repository in every workspace: files, an executable, a symlink, hooks."""
    subprocess.run([*GIT, "init", "-q", str(ws)], check=True)
    for rel, text in FILES.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(text)
    (ws / "pkg" / "was_exec.sh").chmod(0o755)
    (ws / "link").symlink_to("a.py")
    hooks = ws / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "pre-commit").write_text("#!/bin/sh\nexit 0\n")
    (hooks / "pre-commit").chmod(0o755)
    (ws / ".git" / "info").mkdir(exist_ok=True)
    (ws / ".git" / "info" / "attributes").write_text("*.py text\n")
    subprocess.run([*GIT, "-C", str(ws), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(ws), "commit", "-qm", "base"], check=True)


def tree(ws: Path) -> dict[str, tuple]:
    """Everything under `ws` but `.git`: path -> ("d",) | ("l", target) | ("f", sha256, exec)."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(ws):
        if Path(dirpath) == ws:
            dirnames[:] = [d for d in dirnames if d != ".git"]
            filenames = [f for f in filenames if f != ".git"]
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(ws))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("l", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("d",)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = ("f", digest, bool(st.st_mode & stat.S_IXUSR))
    return found


def run_in(opener: Opener, script: str) -> tuple[dict[str, tuple], str, str, Any]:
    """Seed a workspace, run `sh -c script` in it, and return the tree it left, the `.git`
    metadata digest before and after, and the command's result."""
    with opener() as sandbox:
        ws = sandbox.workspace
        seed(ws)
        before = git_metadata_digest(ws)
        # A first command (the agent's setup, say) brings the workspace into the sandbox.
        assert sandbox.exec(["true"]).ok
        result = sandbox.exec(["sh", "-c", script])
        return tree(ws), before, git_metadata_digest(ws), result


# Renames (of a file and of a directory: neither changes what was moved), deletions, modes both
# ways, empty directories, type changes both ways, a symlink, a same-size edit whose mtime is put
# back, a new file back-dated, and names with a newline and a space.
CHANGES = r"""set -e
mv a.py renamed.py
mv old moved_dir
rm pkg/gone.py
chmod +x pkg/run.sh
chmod -x pkg/was_exec.sh
mkdir -p empty/nested
rm -r dir_to_file && printf 'now a file\n' > dir_to_file
rm file_to_dir && mkdir file_to_dir && printf 'inner\n' > file_to_dir/inner.txt
rm link && ln -s renamed.py link2
printf 'SAME size\n' > keep.txt && touch -d '2001-02-03 04:05:06' keep.txt
printf 'old news\n' > backdated.txt && touch -d '2001-02-03 04:05:06' backdated.txt
mkdir "$(printf 'dir\nwith newline')" && printf 'nl\n' > "$(printf 'dir\nwith newline')/f"
printf 'spaced\n' > 'a name with spaces.txt'
"""


def test_the_local_provider_does_what_the_command_says(open_sandbox):
    """The reference the others are held to: the local result is the command's own."""
    after, before_git, after_git, result = run_in(open_sandbox("local"), CHANGES)
    assert result.ok, result.output_tail
    assert before_git == after_git
    assert "a.py" not in after and after["renamed.py"][0] == "f"
    assert "old" not in after and after["moved_dir/deep/inner.txt"][0] == "f"
    assert "pkg/gone.py" not in after
    assert after["pkg/run.sh"][2] is True and after["pkg/was_exec.sh"][2] is False
    assert after["empty/nested"] == ("d",)
    assert after["dir_to_file"][0] == "f" and after["file_to_dir"] == ("d",)
    assert after["link2"] == ("l", "renamed.py") and "link" not in after
    assert after["dir\nwith newline/f"][0] == "f"
    assert after["backdated.txt"][0] == "f"


@pytest.mark.parametrize("kind", [k for k in PROVIDERS if k != "local"])
def test_every_provider_leaves_the_tree_the_local_provider_leaves(open_sandbox, kind):
    expected, *_ = run_in(open_sandbox("local"), CHANGES)
    after, before_git, after_git, result = run_in(open_sandbox(kind), CHANGES)
    assert result.ok, result.output_tail
    assert before_git == after_git, f"{kind}: the host's .git metadata changed"
    missing = sorted(set(expected) - set(after))
    extra = sorted(set(after) - set(expected))
    differ = sorted(p for p in set(expected) & set(after) if expected[p] != after[p])
    assert (missing, extra, differ) == ([], [], []), kind


# Writing the host's .git from a sandbox: directly, through a symlink the command made, and
# through a listing that a name with a newline forges (`d<newline>/workspace/x/config` prints as
# two lines, the second naming x/config, that is .git/config through the link).
ATTACK = r"""nl=$(printf '\nx'); nl=${nl%x}
ln -s .git x
ln -s .git/hooks hooks_link
printf '[core]\n\tfsmonitor = touch /tmp/pwned\n' > x/config
printf '#!/bin/sh\ntouch /tmp/pwned\n' > x/hooks/post-checkout
printf '#!/bin/sh\ntouch /tmp/pwned\n' > hooks_link/pre-commit
printf '* filter=evil\n' > x/info/attributes
printf '/tmp/elsewhere\n' > x/commondir
printf '[core]\n\thooksPath = /tmp\n' > .git/config
touch d
for f in config hooks/post-checkout hooks/pre-commit info/attributes commondir; do
  p="d$nl/workspace/x/$f" && mkdir -p "${p%/*}" && touch "$p"
done
exit 0
"""


@pytest.mark.parametrize("kind", PROVIDERS)
def test_no_sandbox_writes_the_hosts_git_metadata(open_sandbox, kind):
    after, before_git, after_git, result = run_in(open_sandbox(kind), ATTACK)
    assert result.ok, result.output_tail
    assert before_git == after_git, f"{kind}: the command wrote the host's .git"
    # The links themselves are the command's result, as they are on the local provider.
    assert after["x"] == ("l", ".git")
    assert after["d\n/workspace/x/config"][0] == "f"
    if kind != "local":
        expected, *_ = run_in(open_sandbox("local"), ATTACK)
        assert after == expected


@pytest.mark.parametrize("kind", CLUSTER)
def test_a_git_mv_in_the_pod_reaches_the_host(open_sandbox, kind):
    """In a pod the command's `git mv` works (its .git is a copy); the host gets the new path."""
    with open_sandbox(kind)() as sandbox:
        ws = sandbox.workspace
        seed(ws)
        before = git_metadata_digest(ws)
        result = sandbox.exec(
            ["sh", "-c", "git mv a.py pkg/b.py && git mv old renamed_old && git status --short"]
        )
        assert result.ok, result.output_tail
        assert not (ws / "a.py").exists()
        assert (ws / "pkg" / "b.py").read_text() == FILES["a.py"]
        assert (ws / "renamed_old" / "deep" / "inner.txt").read_text() == "deep\n"
        assert not (ws / "old").exists()
        assert git_metadata_digest(ws) == before
        # Back again: the pod follows the host's rename the other way as well.
        (ws / "pkg" / "b.py").rename(ws / "a.py")
        check = sandbox.exec(["sh", "-c", "test -f a.py && test ! -e pkg/b.py"])
        assert check.ok, check.output_tail
