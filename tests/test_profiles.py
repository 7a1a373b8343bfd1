"""Sandbox profiles: defaults, merging with campaigns, environment overrides and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator_assets.spec.catalog import load_catalog, load_one
from orchestrator_assets.spec.errors import SpecError
from orchestrator_assets.spec.profiles import load_profiles
from orchestrator_assets.spec.settings import Settings
from tests.conftest import Platform

PROFILES = {
    "default": "python",
    "profiles": {
        "python": {
            "provider": "docker",
            "image": "campaign-sandbox:latest",
            "resources": {"memory_mb": 2048, "cpus": 1.5},
            "network": "model-only",
            "timeout_s": 300,
            "verifiers": [
                {"name": "lint", "command": "ruff check ."},
                {"name": "test", "command": "pytest -q"},
            ],
        },
        "bare-metal": {"provider": "local"},
    },
}


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def campaign(platform: Platform, **fields) -> Path:
    data = {
        "name": "c",
        "targets": ["/repos/a"],
        "transformation": {"kind": "deterministic", "command": "true"},
        **fields,
    }
    return write(platform.campaigns / "c.yaml", data)


def test_a_missing_file_gives_the_builtin_default(tmp_path: Path):
    profiles = load_profiles(tmp_path / "profiles.yaml", environ={})
    assert profiles.default == "default"
    default = profiles.profiles["default"]
    assert (default.provider, default.network, default.verifiers) == ("local", "none", [])


def test_the_campaign_extends_the_profiles_verifiers_and_overrides_by_name(platform: Platform):
    write(platform.campaigns / "profiles.yaml", PROFILES)
    path = campaign(
        platform,
        verifiers=[
            {"name": "test", "command": "pytest -q -x", "timeout": 60},  # replaces the profile's
            {"name": "types", "command": "mypy ."},  # added after the profile's
        ],
        targets=[{"repo": "/repos/a", "skip_verifiers": ["lint"]}],  # a profile verifier
    )
    loaded = load_one(path, Settings())
    assert loaded.profile.provider == "docker" and loaded.profile.resources.memory_mb == 2048
    names = [(v.name, v.command, v.timeout_s) for v in loaded.spec.verifiers]
    assert names == [
        ("lint", "ruff check .", 600),
        ("test", "pytest -q -x", 60),
        ("types", "mypy .", 600),
    ]
    target = loaded.spec.targets[0]
    assert [v.name for v in loaded.spec.verifiers_for(target)] == ["test", "types"]


def test_a_campaign_names_another_profile(platform: Platform):
    write(platform.campaigns / "profiles.yaml", PROFILES)
    loaded = load_one(campaign(platform, profile="bare-metal"), Settings())
    assert loaded.profile.provider == "local" and loaded.spec.verifiers == []


def test_the_environment_overrides_profile_fields(platform: Platform, monkeypatch):
    write(platform.campaigns / "profiles.yaml", PROFILES)
    monkeypatch.setenv("ORCHESTRATOR_PROFILE__PYTHON__IMAGE", "registry.local/sandbox:2")
    monkeypatch.setenv("ORCHESTRATOR_PROFILE__PYTHON__RESOURCES__MEMORY_MB", "512")
    monkeypatch.setenv("ORCHESTRATOR_PROFILE__BARE_METAL__NETWORK", "full")
    monkeypatch.setenv("ORCHESTRATOR_DEFAULT_PROFILE", "bare-metal")
    profiles = load_profiles(Settings().resolved_profiles_file())
    python = profiles.profiles["python"]
    assert python.image == "registry.local/sandbox:2"
    assert (python.resources.memory_mb, python.resources.cpus) == (512, 1.5)
    assert profiles.profiles["bare-metal"].network == "full"
    assert profiles.default == "bare-metal"


def test_the_profiles_file_path_comes_from_the_environment(platform: Platform, monkeypatch):
    other = write(platform.root / "elsewhere" / "p.yaml", {"profiles": {"x": {}}, "default": "x"})
    monkeypatch.setenv("ORCHESTRATOR_PROFILES_FILE", str(other))
    assert load_profiles(Settings().resolved_profiles_file()).default == "x"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"profiles": {"p": {"provider": "podman"}}},
            "profiles.p.provider: Input should be 'local', 'docker', 'kubernetes' or "
            "'agent-sandbox'",
        ),
        (
            {"profiles": {"p": {"resources": {"memory_mb": 0}}}},
            "profiles.p.resources.memory_mb: Input should be greater than or equal to 6",
        ),
        (
            {"profiles": {"p": {"network": "some"}}},
            "profiles.p.network: Input should be 'none', 'model-only' or 'full'",
        ),
        ({"profiles": {"p": {"imag": "x"}}}, "profiles.p.imag: unknown field"),
        (
            {"profiles": {"p": {"provider": "kubernetes", "kubernetes": {"namespace": "Bad_NS"}}}},
            "profiles.p.kubernetes.namespace: 'Bad_NS' is not a Kubernetes name",
        ),
        (
            {"profiles": {"p": {"verifiers": [{"name": "t", "command": "a"}] * 2}}},
            "profiles.p.verifiers: verifier name 't' is used twice",
        ),
        ({"default": "nope"}, "default: unknown profile; known: default"),
        ("profiles: [1, 2", "line 1, column"),
    ],
)
def test_profile_errors_name_the_file_and_field(tmp_path: Path, data, expected: str):
    path = write(tmp_path / "profiles.yaml", data)
    with pytest.raises(SpecError) as info:
        load_profiles(path, environ={})
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_environment_errors_name_the_variable(tmp_path: Path):
    path = write(tmp_path / "profiles.yaml", PROFILES)
    with pytest.raises(SpecError) as info:
        load_profiles(path, environ={"ORCHESTRATOR_PROFILE__PYTHON__RESOURCES__CPUS": "-1"})
    assert "profiles.python.resources.cpus" in str(info.value)
    assert "(set by ORCHESTRATOR_PROFILE__PYTHON__RESOURCES__CPUS)" in str(info.value)
    with pytest.raises(SpecError) as info:
        load_profiles(path, environ={"ORCHESTRATOR_PROFILE__GPU__IMAGE": "x"})
    assert str(info.value).startswith("ORCHESTRATOR_PROFILE__GPU__IMAGE: no profile 'gpu'")
    with pytest.raises(SpecError) as info:
        load_profiles(path, environ={"ORCHESTRATOR_PROFILE__PYTHON": "x"})
    assert "expected ORCHESTRATOR_PROFILE__<PROFILE>__<FIELD>=<value>" in str(info.value)
    with pytest.raises(SpecError) as info:
        load_profiles(path, environ={"ORCHESTRATOR_DEFAULT_PROFILE": "gpu"})
    assert "ORCHESTRATOR_DEFAULT_PROFILE: unknown profile" in str(info.value)


def test_an_unknown_profile_in_a_campaign_is_reported_for_that_file_only(platform: Platform):
    write(platform.campaigns / "profiles.yaml", PROFILES)
    campaign(platform, profile="gpu")
    write(
        platform.campaigns / "ok.yaml",
        {"name": "ok", "targets": ["/r/b"], "transformation": {"kind": "deterministic",
                                                                 "command": "true"}},
    )  # fmt: skip
    catalog = load_catalog(Settings())
    assert list(catalog.campaigns) == ["ok"]
    (error,) = catalog.errors
    assert "profile: unknown profile 'gpu'; known: bare-metal, default, python" in str(error)


def test_validate_reports_a_bad_profiles_file_without_a_traceback(platform: Platform):
    write(platform.campaigns / "profiles.yaml", {"profiles": {"p": {"network": "some"}}})
    path = campaign(platform)
    proc = platform.cli("validate", str(path), check=False)
    assert proc.returncode != 0
    assert "profiles.yaml: profiles.p.network: Input should be" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_the_profiles_file_is_read_as_strictly_as_a_campaign(tmp_path: Path):
    # One loader for both: a duplicate key, a byte that is not UTF-8 and deep nesting are
    # each one line naming the profiles file.
    path = write(
        tmp_path / "profiles.yaml",
        "profiles:\n  python:\n    timeout_s: 300\n    image: a\n    timeout_s: 30\n",
    )
    with pytest.raises(SpecError) as info:
        load_profiles(path, environ={})
    assert str(info.value) == (
        f"{path}: profiles.python.timeout_s: duplicate key 'timeout_s' at line 5 (first at line 3)"
    )
    path.write_bytes(b"profiles:\n  python: {image: caf\xe9}\n")
    with pytest.raises(SpecError) as info:
        load_profiles(path, environ={})
    assert str(info.value).startswith(f"{path}: line 2: not UTF-8 text: byte 0xe9 at byte offset")
    path.write_text("profiles: " + "[" * 1000 + "]" * 1000)
    with pytest.raises(SpecError) as info:
        load_profiles(path, environ={})
    assert "nested more than 100 levels deep (a profiles file needs far fewer)" in str(info.value)
