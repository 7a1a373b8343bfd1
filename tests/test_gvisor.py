"""gVisor isolation: the local sandbox under a real `runsc`, and the Docker provider's runtime.

`make system-deps` installs runsc from Debian's packages (as root); without it these tests are
skipped locally and fail under CI=true.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from resources.sandboxes.docker import ContainerLimits, ContainerRequest, DockerEngine
from resources.sandboxes.local import LocalSandboxProvider
from tests.conftest import FLEET, Platform, require, statuses
from tests.test_docker import images  # noqa: F401 (the engine and images fixture)

PROBE = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(3)\n"
    "try:\n"
    "    s.connect(('127.0.0.1', int(sys.argv[1]))); print('reached', s.recv(10).decode())\n"
    "except OSError as exc:\n"
    "    print('unreachable', exc); sys.exit(7)\n"
)


@pytest.fixture
def runsc() -> None:
    """A working runsc (it needs root here)."""
    require(shutil.which("runsc") is not None, "gVisor's runsc is not installed")
    require(os.geteuid() == 0, "runsc needs root on this machine")


@pytest.fixture
def loopback_service():
    """A TCP service on the host's loopback that answers 'secret' to whoever connects."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"secret")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


def test_a_verifier_under_runsc_without_network_cannot_reach_a_loopback_service(
    tmp_path, runsc, loopback_service
):
    provider = LocalSandboxProvider(tmp_path / "sandboxes", isolation="gvisor")
    with provider.open("verify", {"campaign": "c", "target": "t"}) as sandbox:
        (sandbox.workspace / "probe.py").write_text(PROBE)
        blocked = sandbox.exec(["python", "probe.py", str(loopback_service)], network=False)
        assert blocked.exit_code == 7, blocked.output_tail
        assert "unreachable" in blocked.output_tail
        # The same verifier with the network reaches it: the service was there all along.
        allowed = sandbox.exec(["python", "probe.py", str(loopback_service)], network=True)
        assert allowed.ok and "reached secret" in allowed.output_tail, allowed.output_tail
        assert sandbox.isolation == "local:gvisor"
        # Really gVisor: its kernel says so in dmesg, a host kernel's would not.
        kernel = sandbox.exec(["dmesg"])
        assert "gVisor" in kernel.output_tail or "Starting gVisor" in kernel.output_tail


def test_gvisor_commands_write_only_their_workspace(tmp_path, runsc):
    hidden = tmp_path / "platform-data"
    hidden.mkdir()
    (hidden / "token").write_text("do-not-read")
    provider = LocalSandboxProvider(
        tmp_path / "sandboxes", isolation="gvisor", hidden_paths=[hidden]
    )
    with provider.open("change", {"campaign": "c"}) as sandbox:
        ws = sandbox.workspace
        (ws / ".git").mkdir()
        (ws / ".git" / "config").write_text("[core]\n")
        script = (
            "import pathlib, sys\n"
            "pathlib.Path('out.txt').write_text('made in gvisor')\n"
            # The platform's own Python environment is mounted read-only, like the rest.
            f"for p in ['/usr/evil', '.git/hooks-evil', '{sys.prefix}/evil']:\n"
            "    try:\n"
            "        pathlib.Path(p).write_text('x'); print('WROTE', p)\n"
            "    except OSError as exc:\n"
            "        print('refused', p, exc.errno)\n"
            f"print('token:', list(pathlib.Path('{hidden}').iterdir()))\n"
        )
        result = sandbox.exec(["python", "-c", script])
        assert result.ok, result.output_tail
        assert "WROTE" not in result.output_tail
        assert "token: []" in result.output_tail
        assert (ws / "out.txt").read_text() == "made in gvisor"
        assert not Path(sys.prefix, "evil").exists() and not (ws / ".git" / "hooks-evil").exists()
        timed = sandbox.exec(["sleep", "30"], timeout_s=1)
        assert timed.timed_out


def test_a_campaign_on_a_gvisor_profile_runs_there_and_records_it(platform: Platform, runsc):
    from orchestrator_assets.assets.history import latest_changes
    from orchestrator_assets.spec.catalog import load_one

    path = platform.root / "profiles.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "default": "isolated",
                "profiles": {"isolated": {"provider": "local", "isolation": "gvisor"}},
            }
        )
    )
    platform.set_env("ORCHESTRATOR_PROFILES_FILE", str(path))
    fleet = platform.make_fleet([r for r in FLEET if r.name in ("alpha", "epsilon")])
    campaign = platform.write_campaign("rename", targets=[str(p) for p in fleet])
    outcome = platform.run(campaign)
    assert statuses(outcome.report) == {
        "acme__alpha": "pr_open",
        "acme__epsilon": "verification_failed",
    }
    spec = load_one(campaign, platform.settings()).spec
    with platform.instance() as instance:
        changes = latest_changes(instance, spec)
    assert {c.isolation for c in changes.values()} == {"local:gvisor"}


class _Engine:
    """A Docker client stand-in that only answers `info()` (the runtimes it has)."""

    def __init__(self, runtimes: dict):
        self.runtimes = runtimes
        self.created: list[dict] = []
        self.containers = self

    def info(self) -> dict:
        return {"Runtimes": self.runtimes}

    def create(self, image, **kwargs):
        self.created.append(kwargs)
        from docker.errors import APIError

        raise APIError("stop here")


def test_the_docker_provider_uses_runsc_only_when_the_engine_has_it(tmp_path):
    request = ContainerRequest(
        image="campaign-sandbox:latest", command=["true"], workspace=tmp_path
    )
    limits = ContainerLimits(isolation="gvisor")
    without = DockerEngine(client=_Engine({"runc": {}}), limits=limits).run(request)
    assert without.exit_code == 125
    assert "no runsc runtime" in without.output_tail
    engine = _Engine({"runc": {}, "runsc": {}, "runsc-host": {}})
    DockerEngine(client=engine, limits=limits).run(request)
    assert engine.created[0]["runtime"] == "runsc"
    DockerEngine(client=engine, limits=limits).run(replace(request, network=True))
    assert engine.created[1]["runtime"] == "runsc-host"  # runsc told it runs on the host's
    missing = DockerEngine(client=_Engine({"runsc": {}}), limits=limits).run(
        replace(request, network=True)
    )
    assert missing.exit_code == 125 and "no runsc-host runtime" in missing.output_tail
    plain = _Engine({"runc": {}})
    DockerEngine(client=plain, limits=ContainerLimits()).run(request)
    assert "runtime" not in plain.created[0]


def test_real_docker_containers_run_under_runsc_with_and_without_a_network(
    tmp_path,
    runsc,
    images,  # noqa: F811
):
    from resources.sandboxes.docker import docker_client

    client = docker_client()
    runtimes = client.info().get("Runtimes") or {}
    require(
        {"runsc", "runsc-host"} <= set(runtimes),
        "the running Docker engine has no runsc runtimes (it was started before runsc was "
        "installed, or not by scripts/docker-engine.sh, which registers them)",
    )
    ws = tmp_path / "ws"
    ws.mkdir()
    engine = DockerEngine(client=client, limits=ContainerLimits(isolation="gvisor"))
    probe = ["sh", "-c", "dmesg | head -1; cat /proc/net/dev | wc -l"]
    closed = engine.run(ContainerRequest(image="campaign-sandbox:latest", command=probe,
                                         workspace=ws))  # fmt: skip
    assert closed.ok and "Starting gVisor" in closed.output_tail, closed.output_tail
    host = engine.run(ContainerRequest(image="campaign-sandbox:latest", command=probe,
                                       workspace=ws, network=True))  # fmt: skip
    assert host.ok and "Starting gVisor" in host.output_tail, host.output_tail
    # With the host's network the sandbox sees the host's interfaces; without, loopback only.
    count = lambda result: int(result.output_tail.split()[-1])  # noqa: E731
    assert count(host) > count(closed)


def test_runsc_state_is_kept_outside_the_workspaces_folder(tmp_path, runsc):
    provider = LocalSandboxProvider(tmp_path / "sandboxes", isolation="gvisor")
    with provider.open("x", {}) as sandbox:
        assert sandbox.exec(["true"]).ok
        # Only sandbox folders under the root: a sweep must find nothing else there.
        assert all((p / "sandbox.json").exists() for p in (tmp_path / "sandboxes").iterdir())
    assert not list(Path(tmp_path / "sandboxes").iterdir())
