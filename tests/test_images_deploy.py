"""The sandbox images and the Docker deployment: configuration checks (no Docker needed) and the
built images themselves (Docker needed: skipped loudly without it, a failure under CI=true)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "docker"
IMAGES = ROOT / "images"
PLATFORM_IMAGE = "campaign-platform:latest"
SANDBOX_IMAGE = "campaign-sandbox:latest"
REWRITE_IMAGE = "campaign-example-rewrite:latest"
DATA_DIR = "/var/lib/campaign-platform"
PLATFORM_SERVICES = ("webserver", "daemon", "code-location")
# What the `env:` fields of deploy/docker/dagster.yaml read, as docker-compose.yml sets them.
PG_ENV = {
    "DAGSTER_PG_HOST": "postgres",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "secret",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_DOCKER_NETWORK": "campaign-platform",
}


def load(path: Path):
    return yaml.safe_load(path.read_text())


def interpolate(value, environ: dict[str, str] | None = None):
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` with the given environment."""
    environ = environ or {}

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if environ.get(name):
            return environ[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    data = load(DEPLOY / "docker-compose.yml")
    return interpolate(data, {"DAGSTER_PG_PASSWORD": "secret"})


@pytest.fixture(scope="module")
def instance_yaml() -> dict:
    return load(DEPLOY / "dagster.yaml")


# --- deploy/docker/dagster.yaml -------------------------------------------------------------------


def test_instance_config_validates_against_dagsters_schema(tmp_path, monkeypatch):
    from orchestrator_assets.assets.dagster_private import dagster_instance_config

    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    shutil.copyfile(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    assert config["run_launcher"]["class"] == "DockerRunLauncher"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["telemetry"] == {"enabled": False}
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_retries"]["enabled"] is True
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        assert config[key]["module"].startswith("dagster_postgres."), key


@pytest.mark.parametrize(
    "key", ["run_storage", "event_log_storage", "schedule_storage", "run_launcher"]
)
def test_each_configurable_class_imports_and_accepts_its_config(instance_yaml, monkeypatch, key):
    """The classes come from dagster-postgres and dagster-docker (the `deploy` extra); their
    config, with the environment resolved, passes each class's own config_type()."""
    from orchestrator_assets.assets.dagster_private import (
        class_from_code_pointer,
        process_config,
        resolve_to_config_type,
    )

    missing = [
        m for m in ("dagster_docker", "dagster_postgres") if importlib.util.find_spec(m) is None
    ]
    require(
        not missing, f"{', '.join(missing)} not installed (the deploy libraries, see deploy/docker)"
    )
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    section = instance_yaml[key]
    cls = class_from_code_pointer(section["module"], section["class"])
    result = process_config(resolve_to_config_type(cls.config_type()), section["config"])
    assert result.success, result.errors
    if key == "run_launcher":
        launcher = cls.from_config_value(None, result.value)
        assert launcher.image == PLATFORM_IMAGE
        assert launcher.networks == ["campaign-platform"]
    else:
        db = result.value["postgres_db"]
        assert (db["hostname"], db["port"], db["password"]) == ("postgres", 5432, "secret")
        # dagster-postgres depends on psycopg2; SQLAlchemy 2.1's default driver is psycopg 3.
        assert db["scheme"] == "postgresql+psycopg2"


def test_instance_uses_the_local_concurrency_limits(instance_yaml):
    local = load(ROOT / "dagster.yaml")
    assert instance_yaml["concurrency"] == local["concurrency"]
    assert instance_yaml["run_coordinator"] == local["run_coordinator"]


def test_run_containers_get_the_socket_the_data_dir_and_the_secrets(instance_yaml):
    launcher = instance_yaml["run_launcher"]["config"]
    volumes = launcher["container_kwargs"]["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in volumes
    assert f"{DATA_DIR}:{DATA_DIR}" in volumes
    env_vars = launcher["env_vars"]
    for name in ("ANTHROPIC_API_KEY", "GITHUB_TOKEN", "ORCHESTRATOR_DATA_DIR", *PG_ENV):
        if name != "DAGSTER_DOCKER_NETWORK":
            assert name in env_vars, name
    # Step outputs and compute logs must outlive the run container: on the shared data dir.
    for key in ("local_artifact_storage", "compute_logs"):
        assert instance_yaml[key]["config"]["base_dir"].startswith(DATA_DIR + "/"), key


# --- deploy/docker/docker-compose.yml and workspace.yaml ------------------------------------------


def test_compose_services_and_images(compose):
    services = compose["services"]
    assert set(services) == {"postgres", *PLATFORM_SERVICES}
    for name in PLATFORM_SERVICES:
        assert services[name]["image"] == PLATFORM_IMAGE, name
    assert services["postgres"]["image"] == "postgres:16"
    raw = load(DEPLOY / "docker-compose.yml")
    assert raw["services"]["postgres"]["image"].startswith("${POSTGRES_IMAGE:-"), "parameterised"
    # The password has no default: compose refuses to start without one.
    with pytest.raises(KeyError, match="DAGSTER_PG_PASSWORD"):
        interpolate(raw)


def test_compose_commands(compose):
    services = compose["services"]
    assert services["webserver"]["command"] == [
        "dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.yaml"
    ]  # fmt: skip
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    code = services["code-location"]["command"]
    assert code[:3] == ["dagster", "code-server", "start"]
    assert code[code.index("-h") + 1] == "0.0.0.0"
    assert code[code.index("-m") + 1] == "orchestrator_assets.definitions"
    assert "3000" in services["webserver"]["ports"][0].split(":")[-1]


def test_workspace_points_at_the_code_location_service(compose):
    workspace = load(DEPLOY / "workspace.yaml")
    (entry,) = workspace["load_from"]
    grpc = entry["grpc_server"]
    code = compose["services"]["code-location"]["command"]
    assert grpc["host"] == "code-location" and grpc["host"] in compose["services"]
    assert str(grpc["port"]) == code[code.index("-p") + 1]
    # The module the code server serves is the project's code location.
    local = load(ROOT / "workspace.yaml")["load_from"][0]["python_module"]
    assert local["module_name"] == code[code.index("-m") + 1]
    assert grpc["location_name"] == local["location_name"]


def test_compose_environment_matches_the_instance(compose, instance_yaml):
    """Every variable the run launcher forwards is set in the daemon (dagster raises on a missing
    one), the launcher's network is the compose network, and the data dir has the same path."""
    launcher = instance_yaml["run_launcher"]["config"]
    for name in PLATFORM_SERVICES:
        service = compose["services"][name]
        env = service["environment"]
        for var in launcher["env_vars"]:
            assert var in env, f"{name}: {var} is forwarded to runs but not set"
        assert env["DAGSTER_DOCKER_NETWORK"] == compose["networks"]["campaign"]["name"]
        assert env["ORCHESTRATOR_DATA_DIR"] == DATA_DIR
        assert f"{DATA_DIR}:{DATA_DIR}" in service["volumes"]
        assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"]
        assert service["networks"] == ["campaign"]
    daemon_env = compose["services"]["daemon"]["environment"]
    assert launcher["image"] == daemon_env["DAGSTER_CURRENT_IMAGE"]


def test_platform_image_bakes_the_deploy_files():
    dockerfile = (IMAGES / "Dockerfile.platform").read_text()
    assert "deploy/docker/dagster.yaml" in dockerfile
    assert "deploy/docker/workspace.yaml" in dockerfile
    build = (IMAGES / "build.sh").read_text()
    assert "deploy/docker/dagster.yaml deploy/docker/workspace.yaml" in build


# --- the images (Docker) --------------------------------------------------------------------------


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def build(*targets: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(IMAGES / "build.sh"), *targets], capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, f"images/build.sh {targets} failed:\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def images() -> None:
    require(docker_answers(), "no Docker engine answers `docker info` (make docker-engine)")
    build("sandbox", "transform-example")


def run_user() -> tuple[int, int]:
    """The host user, as the platform runs containers; as root, some uid the image does not know."""
    uid, gid = os.getuid(), os.getgid()
    return (4242, 4242) if uid == 0 else (uid, gid)


def test_build_is_idempotent(images):
    proc = build("sandbox", "transform-example")
    assert f"{SANDBOX_IMAGE} is up to date" in proc.stderr
    assert f"{REWRITE_IMAGE} is up to date" in proc.stderr
    assert "building" not in proc.stderr


def test_rewrite_image_renames_in_python_files(images, tmp_path):
    workspace = tmp_path / "workspace"
    (workspace / "pkg").mkdir(parents=True)
    app = workspace / "pkg" / "app.py"
    app.write_text("def foo():\n    return 'foo'  # foo\n\n\nfoo_count = foo()\n")
    notes = workspace / "notes.txt"
    notes.write_text("foo\n")
    uid, gid = run_user()
    for path in (workspace, workspace / "pkg", app, notes):
        os.chown(path, uid, gid)
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{workspace}:/workspace",
         "-w", "/workspace", "--user", f"{uid}:{gid}",
         REWRITE_IMAGE, "--from", "foo", "--to", "bar"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert app.read_text() == "def bar():\n    return 'foo'  # foo\n\n\nfoo_count = bar()\n"
    assert notes.read_text() == "foo\n"
    assert "rewrote pkg/app.py: 2 x foo -> bar" in proc.stdout
    assert "changed 1 of 1 Python files" in proc.stdout
    assert app.stat().st_uid == uid


def test_sandbox_image_has_the_tools(images):
    uid, gid = run_user()
    checks = "git --version && python3 --version && ruff --version && pytest --version"
    for extra in ([], ["--network", "none", "--user", f"{uid}:{gid}"]):
        proc = subprocess.run(
            ["docker", "run", "--rm", *extra, SANDBOX_IMAGE, "sh", "-c",
             f"{checks} && claude --version"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, f"{extra}: {proc.stdout}\n{proc.stderr}"
        assert "Python 3.11" in proc.stdout
        assert "(Claude Code)" in proc.stdout


def test_platform_image_builds_offline_and_loads_the_code_location(images):
    """The code location image a Helm release or the Docker launcher runs: it builds from
    Debian's and PyPI's packages alone and serves the project's definitions."""
    build("platform")
    load = (
        "import dagster_docker, dagster_k8s, dagster_postgres; "
        "from orchestrator_assets.definitions import defs; "
        "print(sorted(g for g in {k.path[0] for k in defs.resolve_all_asset_keys()}))"
    )
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python",
         PLATFORM_IMAGE, "-c", load],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "modernize_python" in proc.stdout
    cli = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", PLATFORM_IMAGE, "orchestrator", "--help"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0 and "Apply one change across many repositories" in cli.stdout
