"""The docker sandbox and image transformations on a real Docker engine.

`make test` starts the engine (scripts/docker-engine.sh) and builds the images offline
(images/build.sh); run alone, these tests do both themselves. Under CI=true a missing engine fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from orchestrator_assets.demo_fleet import RepoSpec, create_repo
from resources.sandboxes.docker import (
    INSTALLATION_TAG,
    ContainerLimits,
    DockerSandboxProvider,
    container_tags,
    docker_client,
    labelled_containers,
)
from tests.conftest import ORCHESTRATOR, Platform, require, statuses

ROOT = Path(__file__).resolve().parents[1]
SANDBOX_IMAGE = "campaign-sandbox:latest"
REWRITE_IMAGE = "campaign-example-rewrite:latest"


@pytest.fixture(scope="session")
def images() -> None:
    """A running Docker engine with the sandbox and example images built."""
    engine = subprocess.run(
        [str(ROOT / "scripts/docker-engine.sh")], capture_output=True, text=True, timeout=300
    )
    require(engine.returncode == 0, f"no Docker engine: {engine.stderr.strip()[-400:]}")
    build = subprocess.run(
        [str(ROOT / "images/build.sh"), "sandbox", "transform-example"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert build.returncode == 0, f"images/build.sh failed:\n{build.stderr[-3000:]}"


@pytest.fixture
def provider(tmp_path: Path, images) -> DockerSandboxProvider:
    return DockerSandboxProvider(tmp_path / "sandboxes", SANDBOX_IMAGE)


def containers() -> list:
    return labelled_containers(docker_client())


def containers_of(workspaces: Path) -> list:
    """The containers of the installation whose workspaces folder this is (not another test's
    the engine may still be removing)."""
    ours = str(workspaces.resolve())
    return [c for c in containers() if container_tags(c).get(INSTALLATION_TAG) == ours]


@pytest.fixture(autouse=True)
def no_containers_left(request):
    """Every docker test ends with no platform container left (unless it leaves one on purpose)."""
    yield
    if "images" in request.fixturenames and "leaves_orphans" not in request.keywords:
        # A removal the engine is still finishing (under load) is given a few seconds.
        deadline = time.monotonic() + 15
        while (left := containers()) and time.monotonic() < deadline:
            time.sleep(0.5)
        described = [(c.name, c.status, container_tags(c)) for c in left]
        assert not left, f"containers left behind: {described}"


def docker_profile(platform: Platform, **fields) -> None:
    profile = {"provider": "docker", "image": SANDBOX_IMAGE, **fields}
    (platform.campaigns / "profiles.yaml").parent.mkdir(parents=True, exist_ok=True)
    (platform.campaigns / "profiles.yaml").write_text(
        yaml.safe_dump({"default": "docker", "profiles": {"docker": profile}})
    )


APP = "VALUE = 1\n\n\ndef old_name():\n    return VALUE\n"
TEST = "from app import old_name\n\n\ndef test_value():\n    assert old_name() == 1\n"
# The rename breaks this one: it asks for the old name by string.
STRICT = "import app\n\n\ndef test_kept():\n    assert hasattr(app, 'old' + '_name')\n"


def repo(platform: Platform, name: str, app: str = APP, test: str = TEST) -> Path:
    files = {"app.py": app, "tests/test_app.py": test, "README": name}
    return create_repo(platform.fleet, RepoSpec(name, files))


# end to end ------------------------------------------------------------------------------------


def test_an_image_transformation_runs_to_a_pr_with_the_verifier_gate_inside_docker(
    platform: Platform, images
):
    docker_profile(platform)
    repos = [
        repo(platform, "alpha"),
        repo(platform, "gamma", app="VALUE = 2\n", test="def test_x():\n    assert True\n"),
        repo(platform, "epsilon", test=STRICT),
    ]
    path = platform.write_campaign(
        "rewrite",
        targets=[str(r) for r in repos],
        transformation={"kind": "deterministic", "image": REWRITE_IMAGE,
                        "args": ["--from", "old_name", "--to", "new_name"]},
    )  # fmt: skip
    outcome = platform.run(path)
    assert statuses(outcome.report) == {
        "acme__alpha": "pr_open",
        "acme__gamma": "no_change",
        "acme__epsilon": "verification_failed",
    }
    pr = json.loads((repos[0] / "pulls" / "1.json").read_text())
    assert pr["head"] == "campaign/rewrite"
    # The change is the image's work: both files renamed, nothing else touched.
    diff = subprocess.run(
        ["git", "-C", str(repos[0]), "diff", "main", "campaign/rewrite", "--stat"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "app.py" in diff and "tests/test_app.py" in diff
    shown = subprocess.run(
        ["git", "-C", str(repos[0]), "show", "campaign/rewrite:app.py"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "def new_name()" in shown
    assert not (repos[1] / "pulls").exists() or not list((repos[1] / "pulls").glob("*.json"))
    assert not (repos[2] / "pulls").exists() or not list((repos[2] / "pulls").glob("*.json"))
    row = outcome.report.set_index("target").loc["acme__epsilon"]
    assert "test" in row["verifiers"] and "fail" in row["verifiers"]


def test_out_of_memory_and_timeout_are_clear_per_target_failures(platform: Platform, images):
    docker_profile(platform, resources={"memory_mb": 64})
    repos = [repo(platform, "hungry"), repo(platform, "slow"), repo(platform, "fine")]
    grab = 'python3 -c "import os; b = bytearray(400 * 1024 * 1024); print(len(b))"'
    path = platform.write_campaign(
        "limits",
        targets=[str(r) for r in repos],
        transformation={"kind": "deterministic", "command": [
            "bash", "-c",
            f"if grep -q hungry README 2>/dev/null; then exec {grab}; fi; "
            "if grep -q slow README 2>/dev/null; then exec sleep 60; fi; "
            "sed -i s/old_name/new_name/ app.py tests/test_app.py",
        ], "timeout_s": 5},
    )  # fmt: skip
    outcome = platform.run(path)
    report = outcome.report.set_index("target")
    assert report.loc["acme__fine", "status"] == "pr_open"
    assert report.loc["acme__hungry", "status"] == "change_failed"
    assert "out of memory" in report.loc["acme__hungry", "reason"]
    assert report.loc["acme__slow", "status"] == "change_failed"
    assert "timed out after 5s" in report.loc["acme__slow", "reason"]


def test_cli_ad_hoc_image_run_splits_args_and_passes_env(platform: Platform, images):
    docker_profile(platform)
    target = repo(platform, "alpha")
    proc = platform.cli(
        "run", "--name", "adhoc-image", "--repo", str(target), "--image", REWRITE_IMAGE,
        "--args", "--from old_name --to 'new_name'", "--env", "LANG=C.UTF-8",
        "--verifier", "test:python3 -m pytest -q -p no:cacheprovider",
    )  # fmt: skip
    assert "pr_open" in proc.stdout, proc.stdout
    written = yaml.safe_load((platform.campaigns / "adhoc-image.yaml").read_text())
    assert written["transformation"] == {
        "kind": "deterministic", "image": REWRITE_IMAGE,
        "args": ["--from", "old_name", "--to", "new_name"], "env": {"LANG": "C.UTF-8"},
    }  # fmt: skip
    bad = platform.cli("run", "--repo", str(target), "--args", "x", "--command", "true",
                       check=False)  # fmt: skip
    assert bad.returncode == 2 and "--args goes with --image" in bad.stderr


# the sandbox itself ----------------------------------------------------------------------------


def test_commands_run_in_the_image_with_the_workspace_mounted_and_output_streamed(provider):
    lines: list[str] = []
    with provider.open("t", {"campaign": "c", "target": "t", "run_id": "r"}) as sandbox:
        (sandbox.workspace / "in.txt").write_text("from the host\n")
        result = sandbox.exec(
            ["bash", "-c", "pwd; cat in.txt; echo made > out.txt; git --version >/dev/null; "
             "echo $HOME; touch /etc/x 2>&1 || echo read-only root"],
            on_output=lines.append,
        )  # fmt: skip
        assert result.ok, result.output_tail
        assert (sandbox.workspace / "out.txt").read_text() == "made\n"
    assert lines[:3] == ["/workspace", "from the host", "/tmp"]
    assert lines[-1] == "read-only root"
    assert not sandbox.workspace.parent.exists()


def test_memory_limit_and_timeout(tmp_path: Path, images):
    provider = DockerSandboxProvider(tmp_path, SANDBOX_IMAGE, ContainerLimits(memory_mb=64))
    with provider.open("limits") as sandbox:
        oom = sandbox.exec(["python3", "-c", "b = bytearray(400 * 1024 * 1024)"])
        assert oom.oom_killed and not oom.ok
        assert oom.describe_failure().endswith("was killed: out of memory")
        assert "limit 64 MB" in oom.output_tail
        small = sandbox.exec(["python3", "-c", "b = bytearray(8 * 1024 * 1024); print('ok')"])
        assert small.ok and "ok" in small.output_tail
        slow = sandbox.exec(["sleep", "60"], timeout_s=2)
        assert slow.timed_out and "timed out after 2s" in slow.describe_failure()
        assert slow.duration_s < 30


def test_network_none_blocks_egress_and_full_allows_it(provider):
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen(8)
    port = server.getsockname()[1]
    host_ip = socket.gethostbyname(socket.gethostname())

    def serve() -> None:
        with contextlib.suppress(OSError):  # the socket is closed when the test is done
            while True:
                server.accept()[0].close()

    threading.Thread(target=serve, daemon=True).start()
    probe = (
        "import socket, sys\n"
        "for host in sys.argv[2:]:\n"
        "    try:\n"
        "        socket.create_connection((host, int(sys.argv[1])), timeout=3).close()\n"
        "        print(host, 'reached')\n"
        "    except OSError as e:\n"
        "        print(host, 'blocked', e)\n"
    )
    with provider.open("net") as sandbox:
        (sandbox.workspace / "probe.py").write_text(probe)
        argv = ["python3", "probe.py", str(port), "127.0.0.1", host_ip]
        closed = sandbox.exec(argv, network=False)
        opened = sandbox.exec(argv, network=True)
    server.close()
    assert "127.0.0.1 blocked" in closed.output_tail and f"{host_ip} blocked" in closed.output_tail
    assert "127.0.0.1 reached" in opened.output_tail


def test_model_only_reaches_the_model_endpoint_and_nothing_else(provider):
    servers = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        servers.append(s)

        def serve(sock=s):
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                conn.sendall(b"hello from the model\n")
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
    model_port, other_port = (s.getsockname()[1] for s in servers)
    probe = (
        "import socket, sys\n"
        "for port in sys.argv[1:]:\n"
        "    try:\n"
        "        c = socket.create_connection(('127.0.0.1', int(port)), timeout=3)\n"
        "        print(port, 'reached', c.recv(100).decode().strip())\n"
        "    except OSError as e:\n"
        "        print(port, 'blocked', e)\n"
    )
    with provider.open("model") as sandbox:
        (sandbox.workspace / "probe.py").write_text(probe)
        result = sandbox.exec(
            ["python3", "probe.py", str(model_port), str(other_port)],
            model_endpoint=f"http://127.0.0.1:{model_port}",
        )
    for s in servers:
        s.close()
    assert f"{model_port} reached hello from the model" in result.output_tail, result.output_tail
    assert f"{other_port} blocked" in result.output_tail


# cleanup ---------------------------------------------------------------------------------------


def test_closing_the_provider_kills_running_containers(provider):
    results = []
    opened = threading.Event()

    def work():
        with provider.open("cancel", {"campaign": "c", "target": "t"}) as sandbox:
            opened.set()
            results.append(sandbox.exec(["sleep", "120"], timeout_s=300))

    worker = threading.Thread(target=work)
    worker.start()
    opened.wait(30)
    deadline = time.monotonic() + 30
    while not containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert containers(), "the command's container never started"
    provider.close_all()  # what a cancelled run does
    worker.join(60)
    assert results and not results[0].ok and results[0].duration_s < 60
    assert not list((provider.root).iterdir())


@pytest.mark.leaves_orphans
def test_a_killed_run_leaves_orphans_that_prune_removes(platform: Platform, images):
    docker_profile(platform)
    target = repo(platform, "alpha")
    path = platform.write_campaign(
        "stuck", targets=[str(target)],
        transformation={"kind": "deterministic", "command": "sleep 600", "timeout_s": 900},
    )  # fmt: skip
    proc = subprocess.Popen(
        [ORCHESTRATOR, "run", "--file", str(path)], env=platform.env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    workspaces = Path(platform.env["ORCHESTRATOR_DATA_DIR"]) / "workspaces"
    while not containers_of(workspaces) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert containers_of(workspaces), "the campaign's container never started"
    os.killpg(proc.pid, signal.SIGKILL)  # no cleanup runs: the process is gone at once
    proc.wait(30)
    # The engine still finishes what the dead process asked just before (a container create
    # in flight): look once the engine's containers have stayed the same for a few seconds.
    seen, settled = None, time.monotonic()
    while time.monotonic() - settled < 3 and time.monotonic() < deadline + 60:
        now = sorted(c.id for c in containers())
        if now != seen:
            seen, settled = now, time.monotonic()
        time.sleep(0.5)
    assert containers() and list(workspaces.iterdir())

    listed = platform.cli("sandboxes", "list", "--output", "json")
    rows = json.loads(listed.stdout)
    assert {r["kind"] for r in rows} == {"workspace", "container"}
    assert all(r["orphan"] and r["campaign"] == "stuck" for r in rows), rows
    assert all(r["target"] == "acme__alpha" for r in rows)
    left = len(rows)  # its workspace and its container (two, if a create was in flight)
    dry = platform.cli("sandboxes", "prune", "--dry-run")
    assert f"{left} orphaned sandbox resource(s) would be removed" in dry.stdout
    assert containers()
    pruned = platform.cli("sandboxes", "prune")
    assert f"{left} orphaned sandbox resource(s) removed" in pruned.stdout
    # (another module's container the engine is still removing is not this run's)
    stayed = [(c.short_id, c.status, container_tags(c)) for c in containers_of(workspaces)]
    assert not stayed and not list(workspaces.iterdir()), (pruned.stdout, stayed)


def test_prune_leaves_a_live_sandbox_alone(provider, platform: Platform):
    from orchestrator_assets.assets.sweep import find_leftovers

    with platform.instance() as instance, provider.open("live", {"campaign": "c"}) as sandbox:
        done = threading.Event()
        worker = threading.Thread(
            target=lambda: (sandbox.exec(["sleep", "30"], timeout_s=60), done.set())
        )
        worker.start()
        deadline = time.monotonic() + 30
        while not containers_of(provider.root) and time.monotonic() < deadline:
            time.sleep(0.2)
        found, problem = find_leftovers(provider.root, instance)
        assert problem is None
        assert {x.kind for x in found} == {"workspace", "container"}
        assert not any(x.orphan for x in found), [(x.kind, x.why) for x in found]
        sandbox.kill_all()
        worker.join(30)


def test_prune_never_judges_another_installations_containers(provider, tmp_path: Path, images):
    """Two installations on one engine (a developer's and CI's, or two data folders): a live
    container of one looks orphaned to the other (its run is in another instance), so the other
    must not list or prune it."""
    from orchestrator_assets.assets.sweep import find_leftovers

    other_home = tmp_path / "other"
    with (
        dg.DagsterInstance.ephemeral() as instance,
        provider.open("live", {"campaign": "c", "run_id": "a" * 36}) as sandbox,
    ):
        worker = threading.Thread(target=lambda: sandbox.exec(["sleep", "30"], timeout_s=60))
        worker.start()
        deadline = time.monotonic() + 60
        while not containers() and time.monotonic() < deadline:
            time.sleep(0.2)
        [container] = containers()
        assert container_tags(container)[INSTALLATION_TAG] == str(provider.root.resolve())
        # Its own installation sees it (an orphan here: the run id is in no instance)...
        mine, _ = find_leftovers(provider.root, instance)
        assert [x.kind for x in mine if x.orphan] == ["workspace", "container"]
        # ...another installation does not, so its prune cannot remove it.
        theirs, problem = find_leftovers(other_home / "workspaces", instance)
        assert problem is None and theirs == []
        sandbox.kill_all()
        worker.join(30)


# the agent in the sandbox image ---------------------------------------------------------------


def test_the_agent_runs_in_the_image_and_reaches_only_the_model(
    platform: Platform, images, monkeypatch
):
    """The Claude Code CLI of the sandbox image, with network model-only: its requests reach the
    scripted model through the proxy; its Bash tool cannot reach another port on the host."""
    from tests.fake_model import ScriptedModel, text, tool

    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(4)
    probe = (
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', "
        f"{other.getsockname()[1]}), timeout=3); print('REACHED')\" || echo UNREACHABLE"
    )
    docker_profile(platform, network="model-only")
    target = repo(platform, "alpha")
    with ScriptedModel() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-docker")
        monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "0")
        model.script = [
            tool("Bash", {"command": "sed -i s/old_name/new_name/g app.py tests/test_app.py",
                          "description": "rename"}),
            tool("Bash", {"command": probe, "description": "probe"}),
            tool("Bash", {"command": "command -v claude; pwd", "description": "where"}),
            text("Renamed old_name to new_name."),
        ]  # fmt: skip
        path = platform.write_campaign(
            "agent-in-docker", targets=[str(target)],
            transformation={"kind": "agentic", "prompt": "Rename old_name to new_name.",
                            "max_turns": 6},
        )  # fmt: skip
        outcome = platform.run(path)
    other.close()
    assert statuses(outcome.report) == {"acme__alpha": "pr_open"}, outcome.report.to_dict()
    results = "\n".join(
        json.dumps(block.get("content"))
        for message in model.conversation_requests[-1]["json"]["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    )
    assert "UNREACHABLE" in results and "REACHED" not in results.replace("UNREACHABLE", "")
    assert "/usr/local/bin/claude" in results  # the image's CLI ...
    assert "/workspace" in results  # ... working in the mounted workspace


class BusyEngineContainer:
    """A container whose engine refuses to remove it `refusals` times (as a loaded engine does:
    409 "removal already in progress", 500, a timed-out request), then removes it."""

    short_id = "0123456789ab"

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.removed = False
        self.calls = 0

    def remove(self, force: bool) -> None:
        from docker.errors import APIError

        self.calls += 1
        if self.calls <= self.refusals:
            raise APIError("500 Server Error: Internal Server Error (device or resource busy)")
        self.removed = True


def test_a_container_the_engine_is_slow_to_remove_is_asked_again(caplog):
    from resources.sandboxes.docker import _remove

    busy = BusyEngineContainer(refusals=2)
    _remove(busy)
    assert busy.removed and busy.calls == 3
    stuck = BusyEngineContainer(refusals=10)
    _remove(stuck)  # never raises: the command's result stands; the leftover is named
    assert not stuck.removed and stuck.calls == 3
    assert "0123456789ab" in caplog.text and "sandboxes prune" in caplog.text
