"""Campaign files: what is accepted, and that every mistake is named with file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator_assets.spec.campaign import dump_campaign, load_campaign, parse_campaign
from orchestrator_assets.spec.errors import SpecError
from orchestrator_assets.spec.slugs import slug_problem, target_slug

VALID = {
    "name": "bump-go",
    "targets": ["https://github.com/acme/billing.git", {"repo": "../repos/ledger", "base": "dev"}],
    "transformation": {"kind": "deterministic", "command": "sed -i s/a/b/ go.mod"},
    "verifiers": [{"name": "build", "command": ["go", "build", "./..."], "timeout": 60}],
}


def write(tmp_path: Path, data, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def problems(tmp_path: Path, data) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_campaign(write(tmp_path, data))
    return str(info.value).splitlines()


def test_valid_campaign_gets_defaults_and_resolves_local_paths(tmp_path: Path):
    spec = load_campaign(write(tmp_path, VALID))
    assert [t.key for t in spec.targets] == ["acme__billing", "repos__ledger"]
    assert spec.targets[1].repo == str((tmp_path / "../repos/ledger").resolve())
    assert spec.targets[1].base == "dev" and spec.targets[0].base is None
    assert spec.branch_name == "campaign/bump-go"
    assert spec.review.policy == "auto" and spec.concurrency == 4
    assert spec.verifiers[0].timeout_s == 60 and spec.verifiers[0].argv() == [
        "go",
        "build",
        "./...",
    ]
    assert spec.id == "bump_go" and spec.partitions_name == "bump_go_targets"


def test_agentic_spec_is_accepted(tmp_path: Path):
    data = {**VALID, "transformation": {"kind": "agentic", "prompt": "Add input validation",
                                        "model": "claude-sonnet-4-5", "max_turns": 20}}  # fmt: skip
    assert load_campaign(write(tmp_path, data)).transformation.kind == "agentic"


def test_every_problem_is_reported_with_its_field(tmp_path: Path):
    data = {
        "name": "Bad Name",
        "targets": [],
        "transformation": {"kind": "deterministic", "comand": "x"},
        "schedule": "every day",
        "colour": "blue",
        "verifiers": [{"name": "t", "command": ""}],
    }
    lines = problems(tmp_path, data)
    file = str(tmp_path / "c.yaml")
    assert all(line.startswith(f"{file}: ") for line in lines)
    joined = "\n".join(lines)
    assert "name: 'Bad Name' is not a valid campaign name" in joined
    assert "targets: List should have at least 1 item" in joined
    assert "transformation.deterministic.comand: unknown field" in joined
    assert "schedule: 'every day' is not a valid cron expression" in joined
    assert "colour: unknown field" in joined
    assert "verifiers.0.command: command is empty" in joined


def test_a_bad_discovery_selector_is_the_only_problem_reported(tmp_path: Path):
    # With targets only from discovery, a bad selector must not also read as "no targets".
    data = {**VALID, "targets": [], "discover": {"github": {"org": "acme", "colour": "x"}}}
    lines = problems(tmp_path, data)
    assert any("discover.github.colour: unknown field" in line for line in lines), lines
    assert not any("at least 1 item" in line for line in lines), lines


def test_a_deterministic_transformation_needs_a_command_or_an_image(tmp_path: Path):
    lines = problems(tmp_path, {**VALID, "transformation": {"kind": "deterministic"}})
    assert any(
        "transformation.deterministic: a deterministic transformation needs a `command` or an "
        "`image`" in line
        for line in lines
    ), lines


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"targets": None}, "targets: List should have at least 1 item (or select targets with"),
        ({"schedule": "61 * * * *"}, "schedule: '61 * * * *' is not a valid cron"),
        (
            {"targets": [{"repo": "/srv/x/y", "slug": "Acme/Billing"}]},
            "targets.0: 'Acme/Billing' is not a valid target slug",
        ),
        ({"targets": ["/srv/a/b.git", "c/a/b"]}, "appears twice"),
        ({"branch": "main"}, "branch: 'main': campaign branches must live under 'campaign/'"),
        ({"transformation": {"kind": "magic"}}, "transformation: Input tag 'magic'"),
        ({"review": {"policy": "sometimes"}}, "review.policy: "),
        ({"budget_usd": -1}, "budget_usd: "),
        ({"pull_request": {"title": "{{ oops"}}, "pull_request.title: template error"),
        ({"setup": ["pip install -e .", ""]}, "setup: command is empty"),
        ({"targets": [{"repo": "/a/b", "setup_extend": ["'unclosed"]}]}, "cannot split command"),
        (
            {"verifiers": [{"name": "a", "command": "x"}, {"name": "a", "command": "y"}]},
            "used twice",
        ),
    ],
)
def test_specific_mistakes_are_named(tmp_path: Path, change: dict, expected: str):
    data = {**VALID, **change}
    if change.get("targets") is None and "targets" in change:
        del data["targets"]
    assert any(expected in line for line in problems(tmp_path, data)), problems(tmp_path, data)


@pytest.mark.parametrize(
    ("api_url", "web"),
    [
        (None, "https://github.com"),
        ("https://ghe.example.com/api/v3", "https://ghe.example.com"),
        ("https://api.acme.ghe.com", "https://acme.ghe.com"),
    ],
)
def test_owner_name_is_a_repository_of_the_github_forge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_url: str | None, web: str
):
    monkeypatch.setenv("ORCHESTRATOR_FORGE", "github")
    if api_url:
        monkeypatch.setenv("ORCHESTRATOR_GITHUB_API_URL", api_url)
    else:
        monkeypatch.delenv("ORCHESTRATOR_GITHUB_API_URL", raising=False)
    targets = ["acme/billing", {"repo": "acme/ledger.git", "base": "dev"}, "./acme/local"]
    spec = load_campaign(write(tmp_path, {**VALID, "targets": targets}))
    assert [t.repo for t in spec.targets] == [
        f"{web}/acme/billing",
        f"{web}/acme/ledger.git",
        str(tmp_path / "acme/local"),  # written as a path: still one
    ]
    assert [t.key for t in spec.targets] == ["acme__billing", "acme__ledger", "acme__local"]


def test_owner_name_that_is_no_path_is_refused_with_the_local_forge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("ORCHESTRATOR_FORGE", raising=False)
    targets = ["/srv/acme/a.git", "https://github.com/acme/b", {"repo": "acme/billing"}]
    (line,) = problems(tmp_path, {**VALID, "targets": targets})
    assert line == (
        f"{tmp_path / 'c.yaml'}: targets.2.repo: 'acme/billing' is not an existing path (relative "
        "to the campaign file) nor a repository URL; the local forge takes paths and git URLs "
        "(OWNER/NAME names a GitHub repository with ORCHESTRATOR_FORGE=github)"
    )
    (tmp_path / "acme/billing").mkdir(parents=True)  # a path after all: taken as one
    spec = load_campaign(write(tmp_path, {**VALID, "targets": targets}))
    assert spec.targets[2].repo == str(tmp_path / "acme/billing")


def test_yaml_syntax_error_names_the_line(tmp_path: Path):
    (line,) = problems(tmp_path, "name: x\ntargets: [a\n")
    assert "line 3" in line and "invalid YAML" in line


def test_target_slugs_are_readable_and_safe():
    assert target_slug("https://github.com/acme/billing.git") == "acme__billing"
    assert target_slug("git@github.com:acme/Billing.git") == "acme__billing"
    assert target_slug("/srv/forge/acme/billing.git/") == "acme__billing"
    assert target_slug("file:///srv/x/my repo") == "x__my-repo"
    assert slug_problem("acme__billing") is None
    for bad in ("acme/billing", "a,b", "a...b", "-a", ""):
        assert slug_problem(bad), bad


def test_dumped_spec_loads_back_the_same(tmp_path: Path):
    spec = parse_campaign(VALID, file="x", base_dir=tmp_path)
    again = parse_campaign(yaml.safe_load(dump_campaign(spec)), file="x", base_dir=tmp_path)
    assert again == spec
