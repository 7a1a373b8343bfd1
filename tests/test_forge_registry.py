"""Named forges: the forges file, its errors, and the clients the registry builds."""

from __future__ import annotations

import pytest

from orchestrator_assets.spec.errors import SpecError
from resources.build import forge_registry
from resources.forges.base import ForgeError


def test_default_forge_is_always_there(platform):
    registry = forge_registry(platform.settings())
    assert registry.names == ["default"]
    assert registry.config("default").kind == "local"
    assert type(registry.get()).__name__ == "LocalForge"


def test_named_forges_from_the_file(platform):
    platform.use_forges(
        {
            "gh": {
                "kind": "github",
                "base_url": "https://ghe.example.com/api/v3",
                "token_env": "GHE_TOKEN",
                "writes_per_minute": 7,
            },
            "lab": {"kind": "gitlab", "base_url": "https://gitlab.example.com", "token_env": "X"},
            "bb": {"kind": "bitbucket_cloud", "token_env": "BB_TOKEN"},
        },
        env={"GHE_TOKEN": "ghe-secret-token"},
    )
    registry = forge_registry(platform.settings())
    assert registry.names == ["default", "gh", "lab", "bb"]
    assert registry.config("gh").web_root() == "https://ghe.example.com"
    assert registry.config("lab").host() == "gitlab.example.com"
    assert registry.config("bb").web_root() == "https://bitbucket.org"
    client = registry.get("gh")
    assert type(client).__name__ == "GitHubForge"
    assert client.base_url == "https://ghe.example.com/api/v3"
    assert client.limits.per_minute == 7
    assert registry.get("gh") is client  # built once
    # The same host and token from another registry: the same client, so one write budget.
    assert forge_registry(platform.settings()).get("gh") is client


def test_missing_token_variable_names_forge_and_variable(platform):
    platform.use_forges({"gh": {"kind": "github", "token_env": "NO_SUCH_TOKEN_VAR"}})
    registry = forge_registry(platform.settings())
    with pytest.raises(ForgeError, match=r"'gh'.*NO_SUCH_TOKEN_VAR"):
        registry.get("gh")


def test_unknown_forge_names_the_known_ones(platform):
    platform.use_forges({"gh": {"kind": "github", "token_env": "T"}})
    registry = forge_registry(platform.settings())
    with pytest.raises(ForgeError, match=r"unknown forge 'nope'; known: default, gh"):
        registry.get("nope")


@pytest.mark.parametrize(
    ("forges", "field", "message"),
    [
        ({"x": {"kind": "gitlub", "token_env": "T"}}, "forges.x.kind", "Input should be"),
        ({"x": {"kind": "gitlab", "token": "abc"}}, "forges.x.token", "unknown field"),
        ({"x": {"kind": "gitlab"}}, "forges.x", "token_env: required"),
        ({"x": {"kind": "bitbucket_dc", "token_env": "T"}}, "forges.x", "base_url"),
        ({"x": {"kind": "gitlab", "token_env": "T", "base_url": "gitlab.com"}}, "base_url", "URL"),
        ({"default": {"kind": "local"}}, "forges", "platform's own forge"),
        (
            {"x": {"kind": "github", "app": {"app_id": 1, "installation_id": 2}}},
            "forges.x.app",
            "exactly one of private_key_env and private_key_file",
        ),
        (
            {"x": {"kind": "gitlab", "token_env": "T", "writes_per_minute": 5}},
            "forges.x",
            "for kind github only",
        ),
    ],
)
def test_bad_forges_file_names_file_and_field(platform, forges, field, message):
    path = platform.use_forges(forges)
    with pytest.raises(SpecError) as err:
        forge_registry(platform.settings())
    text = str(err.value)
    assert text.startswith(str(path))
    assert field in text and message in text


def test_forges_file_that_is_not_a_mapping(platform):
    path = platform.root / "forges.yaml"
    path.write_text("- a\n- b\n")
    platform.set_env("ORCHESTRATOR_FORGES", str(path))
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        forge_registry(platform.settings())
    platform.set_env("ORCHESTRATOR_FORGES", str(platform.root / "missing.yaml"))
    with pytest.raises(SpecError, match=r"missing.yaml: no such file"):
        forge_registry(platform.settings())


def test_forges_file_in_the_data_dir_is_read_by_default(platform):
    settings = platform.settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "forges.yaml").write_text(
        "forges:\n  lab: {kind: gitlab, token_env: LAB_TOKEN}\n"
    )
    registry = forge_registry(settings)
    assert registry.names == ["default", "lab"]
    assert registry.config("lab").web_root() == "https://gitlab.com"
