"""A forge per campaign: a campaign spanning two code hosts, forge names checked by `validate`,
the router's dispatch, merged git credentials and optional verbs, and merge methods."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import requests
import yaml

from resources.build import forge_registry
from resources.forges.base import ForgeError, PullRequestDraft
from resources.forges.github import GitHubForge
from resources.forges.local import LocalForge
from resources.forges.registry import ForgeConfig
from resources.forges.router import ForgeRouter, merge_git_envs
from resources.git import author_env, run_git
from tests.conftest import TEST, Platform, app_repo
from tests.fake_github import FakeGitHub
from tests.test_github_app import APP_ID, INSTALLATION, rsa_key
from tests.test_review_ui import session, ui_server

FAKE_TOKEN = "ghp_" + "1" * 36  # the fake's own token: the platform never gets it
FILES = {"app.py": "GREETING = 'OLD'\n", "tests/test_app.py": TEST}


def _get_when_up(url: str) -> str:
    """The page at `url` once the server (just started) accepts connections."""
    for _ in range(150):
        try:
            return session().get(url, timeout=30).text
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"{url}: the UI never answered")


def report_rows(platform: Platform) -> dict[str, dict]:
    rows = json.loads(platform.cli("report", "rename", "--output", "json").stdout)
    return {r["target"]: r for r in rows}


@pytest.mark.usefixtures("bwrap")
def test_a_campaign_spans_the_local_forge_and_a_github_app(platform: Platform):
    private, public = rsa_key()
    with FakeGitHub(FAKE_TOKEN, platform.root / "github", api_prefix="") as gh:
        gh.add_org("corp")
        gh.add_repo("corp/app", FILES)
        gh.enable_app(APP_ID, INSTALLATION, public)
        platform.use_forges(
            {
                "gh-app": {
                    "kind": "github",
                    "base_url": gh.base_url,
                    "write_interval_s": 0,
                    "app": {"app_id": APP_ID, "installation_id": INSTALLATION,
                            "private_key_env": "GH_APP_KEY"},
                }
            },
            env={"GH_APP_KEY": private},
        )  # fmt: skip
        (alpha,) = platform.make_fleet([app_repo("alpha", "GREETING = 'OLD'\n")])
        # the campaign's forge is the platform's (local); one target lives on the GitHub App's
        path = platform.write_campaign(
            targets=[str(alpha), {"repo": "corp/app", "forge": "gh-app"}]
        )
        assert "2 target(s)" in platform.cli("validate", str(path)).stdout
        run = platform.cli("run", "--file", str(path))

        rows = report_rows(platform)
        assert {k: r["status"] for k, r in rows.items()} == {
            "acme__alpha": "pr_open",
            "corp__app": "pr_open",
        }
        # each target's PR opened on its own host
        local_pr = LocalForge().find_pull_request(str(alpha), "campaign/rename")
        assert local_pr is not None and local_pr.state == "open"
        assert rows["acme__alpha"]["pr_url"] == local_pr.url
        hosted = gh.pr("corp/app", 1)
        assert hosted.head == "campaign/rename" and hosted.state == "open"
        assert rows["corp__app"]["repo"] == f"{gh.web}/corp/app"  # OWNER/NAME on gh-app's root
        assert rows["corp__app"]["pr_url"].startswith(f"{gh.web}/corp/app/pull/")
        assert not LocalForge().list_pull_requests(str(alpha))[1:]  # one PR only, locally
        # the report says where each target lives
        host = gh.web.removeprefix("http://")
        assert (rows["acme__alpha"]["forge"], rows["acme__alpha"]["host"]) == ("default", "local")
        assert (rows["corp__app"]["forge"], rows["corp__app"]["host"]) == ("gh-app", host)
        table = platform.cli("report", "rename").stdout
        assert f"gh-app ({host})" in table and "default (local)" in table
        with ui_server(platform) as base:  # and so do the UI's campaign and target pages
            page = _get_when_up(f"{base}/c/rename")
            assert f"gh-app ({host})" in page and "default (local)" in page
            page = session().get(f"{base}/c/rename/t/corp__app").text
            assert f"on gh-app ({host})" in page

        # Bulk merge across both hosts, squashed on each.
        merged = platform.cli("prs", "merge", "rename", "--method", "squash", "--yes")
        assert "2 of 2 pull request(s) merged" in merged.stdout
        (call,) = gh.calls_to("PUT", "/repos/corp/app/pulls/1/merge")
        assert call.json()["merge_method"] == "squash"
        subject, parents = run_git(["log", "-1", "--format=%s|%P", "main"], alpha).split("|")
        assert subject.endswith(f"(#{local_pr.number})") and len(parents.split()) == 1

        # The app's installation tokens (and its key) are in no byte the platform stored.
        assert gh.app_tokens  # minted by the run
        secrets = [private.splitlines()[1]]
        for token in gh.app_tokens:
            secrets += [token, base64.b64encode(f"x-access-token:{token}".encode()).decode()]
        for secret in secrets:  # nor in what the run printed (its logs)
            assert secret not in run.stdout + run.stderr + merged.stdout + merged.stderr
        roots = [platform.env["DAGSTER_HOME"], platform.env["ORCHESTRATOR_DATA_DIR"]]
        for root in map(Path, roots):
            for file in root.rglob("*"):
                if file.is_file():
                    data = file.read_bytes()
                    for secret in secrets:
                        assert secret.encode() not in data, f"{secret[:8]}... found in {file}"


def test_validate_names_an_unknown_forge_with_file_field_and_known_names(platform: Platform):
    platform.use_forges({"corp-gitlab": {"kind": "gitlab", "token_env": "GITLAB_TOKEN"}})
    (alpha,) = platform.make_fleet([app_repo("alpha", "GREETING = 'OLD'\n")])
    path = platform.write_campaign(
        targets=[str(alpha), {"repo": str(alpha), "slug": "again", "forge": "nope"}],
        forge="corp-gitlb",
    )
    proc = platform.cli("validate", str(path), check=False)
    assert proc.returncode == 1
    known = "known: default, corp-gitlab"
    assert f"{path}: forge: unknown forge 'corp-gitlb'; {known}" in proc.stderr
    assert f"{path}: targets.1.forge: unknown forge 'nope'; {known}" in proc.stderr
    assert "Traceback" not in proc.stderr
    # a profile's forge counts as the campaign's (named in the same way)
    (platform.campaigns / "profiles.yaml").write_text(
        yaml.safe_dump({"profiles": {"default": {"forge": "corp-gitlab"}}})
    )
    path = platform.write_campaign(targets=[str(alpha)])
    platform.cli("validate", str(path))
    from orchestrator_assets.spec.catalog import load_one

    assert load_one(path, platform.settings()).spec.forge == "corp-gitlab"
    (platform.campaigns / "profiles.yaml").write_text(
        yaml.safe_dump({"profiles": {"default": {"forge": "gone"}}})
    )
    proc = platform.cli("validate", str(path), check=False)
    assert (
        f"{path}: forge: unknown forge 'gone'; {known} (the forge of the campaign's profile)"
        in (proc.stderr)
    )


class _Optional(LocalForge):
    """A local forge with an optional verb, as some forges have."""

    def release_notes(self, url: str, tag: str) -> str:
        return f"notes of {tag} at {url}"


def test_the_router_sends_each_verb_to_its_repositorys_forge(platform: Platform, tmp_path):
    with FakeGitHub(FAKE_TOKEN, tmp_path / "gh", api_prefix="") as gh:
        gh.add_org("corp")
        gh.add_repo("corp/app", FILES)
        platform.use_forges(
            {"gh": {"kind": "github", "base_url": gh.base_url, "token_env": "GH_TOKEN_X"}},
            env={"GH_TOKEN_X": FAKE_TOKEN},
        )
        (alpha,) = platform.make_fleet([app_repo("alpha", "GREETING = 'OLD'\n")])
        registry = forge_registry(platform.settings(), default_client=_Optional)
        hosted = f"{gh.web}/corp/app"
        router = ForgeRouter(registry, {str(alpha): "default", hosted: "gh"}, "default")
        assert router.name_for(str(alpha)) == "default"
        assert router.name_for(hosted) == "gh"
        assert router.name_for(f"{gh.web}/corp/other") == "gh"  # under gh's web root
        # two forges on one web root (a token and an App): the campaign's wins
        same_root = {"kind": "github", "base_url": gh.base_url, "token_env": "GH_TOKEN_X"}
        two = forge_registry(platform.settings())
        two.configs = {**two.configs, "gh2": ForgeConfig(**same_root)}
        assert ForgeRouter(two, {}, "gh2").name_for(f"{gh.web}/corp/other") == "gh2"
        assert ForgeRouter(two, {}, "gh").name_for(f"{gh.web}/corp/other") == "gh"
        assert isinstance(router.forge_for(hosted), GitHubForge)
        assert router.resolve(hosted, None, "campaign/x").base_branch == "main"
        assert router.resolve(str(alpha), None, "campaign/x").base_branch == "main"
        assert router.host_for(hosted) == f"gh ({gh.web.removeprefix('http://')})"
        # an optional verb: there when some forge has it, refused for a repository whose lacks it
        assert callable(getattr(router, "release_notes", None))
        assert router.supports(str(alpha), "release_notes")
        assert not router.supports(hosted, "release_notes")
        assert router.release_notes(str(alpha), "main") == f"notes of main at {alpha}"
        with pytest.raises(ForgeError, match=r"the forge 'gh' \(github\) cannot release_notes"):
            router.release_notes(hosted, "main")
        assert getattr(router, "no_such_verb", None) is None
        # git credentials: scoped to gh's web root, usable through the router's env
        env = router.git_env()
        assert env["GIT_CONFIG_KEY_0"] == f"http.{gh.web}/.extraHeader"
        run_git(["ls-remote", f"{gh.web}/git/corp/app.git"], env=env)
        assert router.stats["api_calls"] >= 1


def test_git_envs_are_merged_with_renumbered_keys():
    one = {"GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_0": "http.https://a/.extraHeader",
           "GIT_CONFIG_VALUE_0": "A", "GIT_CONFIG_KEY_1": "http.followRedirects",
           "GIT_CONFIG_VALUE_1": "false", "GIT_TERMINAL_PROMPT": "0"}  # fmt: skip
    two = {"GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_0": "http.https://b/.extraHeader",
           "GIT_CONFIG_VALUE_0": "B", "GIT_CONFIG_KEY_1": "http.followRedirects",
           "GIT_CONFIG_VALUE_1": "false"}  # fmt: skip
    assert merge_git_envs([one, two]) == {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": "3",
        "GIT_CONFIG_KEY_0": "http.https://a/.extraHeader",
        "GIT_CONFIG_VALUE_0": "A",
        "GIT_CONFIG_KEY_1": "http.followRedirects",
        "GIT_CONFIG_VALUE_1": "false",
        "GIT_CONFIG_KEY_2": "http.https://b/.extraHeader",
        "GIT_CONFIG_VALUE_2": "B",
    }
    assert merge_git_envs([{}, {}]) == {}


# merge methods ---------------------------------------------------------------------------------


def _local_pr(tmp_path: Path, name: str) -> tuple[LocalForge, Path, int]:
    """A bare repository whose campaign branch is two commits ahead of a base that moved on."""
    work = tmp_path / f"{name}-work"
    bare = tmp_path / f"{name}.git"
    env = author_env("Dev", "dev@example.com")
    run_git(["init", "--quiet", "--initial-branch=main", str(work)])
    (work / "a.txt").write_text("a\n")
    run_git(["add", "-A"], work)
    run_git(["commit", "--quiet", "-m", "base"], work, env=env)
    run_git(["checkout", "--quiet", "-b", "campaign/x"], work)
    for n in (1, 2):
        (work / f"c{n}.txt").write_text(f"{n}\n")
        run_git(["add", "-A"], work)
        run_git(["commit", "--quiet", "-m", f"change {n}"], work, env=env)
    run_git(["checkout", "--quiet", "main"], work)
    (work / "b.txt").write_text("b\n")
    run_git(["add", "-A"], work)
    run_git(["commit", "--quiet", "-m", "base moves"], work, env=env)
    run_git(["clone", "--quiet", "--bare", str(work), str(bare)])
    forge = LocalForge(merge_author=("Merger", "merger@example.com"))
    draft = PullRequestDraft(head="campaign/x", base="main", title="Change x", body="Why.")
    return forge, bare, forge.create_pull_request(str(bare), draft).number


def _log(repo: Path) -> list[str]:
    return run_git(["log", "--format=%s|%P|%an", "main"], repo).splitlines()


def test_local_merge_methods(tmp_path):
    forge, repo, number = _local_pr(tmp_path, "merge")
    assert forge.merge_pull_request(str(repo), number).state == "merged"
    top = _log(repo)[0].split("|")
    assert top[0] == f"Merge pull request #{number} from campaign/x" and len(top[1].split()) == 2

    forge, repo, number = _local_pr(tmp_path, "squash")
    forge.merge_pull_request(str(repo), number, method="squash")
    subject, parents, author = _log(repo)[0].split("|")
    assert (subject, len(parents.split()), author) == (f"Change x (#{number})", 1, "Merger")
    assert run_git(["ls-tree", "--name-only", "main"], repo).split() == [
        "a.txt", "b.txt", "c1.txt", "c2.txt"
    ]  # fmt: skip

    forge, repo, number = _local_pr(tmp_path, "rebase")
    forge.merge_pull_request(str(repo), number, method="rebase")
    log = _log(repo)
    assert [line.split("|")[0] for line in log] == ["change 2", "change 1", "base moves", "base"]
    assert all(len(line.split("|")[1].split()) <= 1 for line in log)  # linear, no merge commit
    assert log[0].split("|")[2] == "Dev"  # the commits keep their author
    assert run_git(["worktree", "list"], repo).count("\n") == 1  # the temporary one is gone
    with pytest.raises(ForgeError, match="unknown merge method 'fast'"):
        forge.merge_pull_request(str(repo), number, method="fast")


def test_github_merge_methods(tmp_path):
    with FakeGitHub(FAKE_TOKEN, tmp_path / "gh") as gh:
        gh.add_org("corp")
        gh.add_repo("corp/app", FILES)
        forge = GitHubForge(FAKE_TOKEN, gh.base_url)
        for n, method in enumerate(("squash", "rebase", None), start=1):
            branch = f"campaign/m{n}"
            gh.create_branch("corp/app", branch, {"app.py": f"GREETING = '{n}'\n"})
            draft = PullRequestDraft(head=branch, base="main", title=f"m{n}", body="")
            pr = forge.create_pull_request("corp/app", draft)
            merged = (
                forge.merge_pull_request("corp/app", pr.number, method=method)
                if method
                else forge.merge_pull_request("corp/app", pr.number)
            )
            assert merged.state == "merged"
            (call,) = gh.calls_to("PUT", f"/repos/corp/app/pulls/{pr.number}/merge")
            assert json.loads(call.body)["merge_method"] == (method or "merge")


# discovery on the campaign's forge ------------------------------------------------------------


def test_discover_takes_exactly_one_host_and_asks_the_campaigns_forge(platform: Platform):
    platform.use_forges({"lab": {"kind": "gitlab", "token_env": "LAB_TOKEN"}})
    path = platform.write_campaign(
        targets=[], discover={"github": {"org": "acme"}, "gitlab": {"group": "acme"}}
    )
    proc = platform.cli("validate", str(path), check=False)
    assert (
        "discover: exactly one of github, gitlab, bitbucket must be set (got: github, gitlab)"
        in (proc.stderr)
    )
    path = platform.write_campaign(targets=[], discover={"gitlab": {"group": "acme", "org": "x"}})
    proc = platform.cli("validate", str(path), check=False)
    assert "discover.gitlab: org: Extra inputs are not permitted" in proc.stderr
    # a GitLab selector on a campaign whose forge is the local one: a clear error, no traceback
    path = platform.write_campaign(targets=[], discover={"gitlab": {"group": "acme"}})
    platform.cli("validate", str(path))
    proc = platform.cli("run", "--file", str(path), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "`discover: gitlab` needs the GitLab forge (the campaign's forge 'default' is local" in (
        proc.stderr
    )
    # on the named GitLab without its token: the forge and the variable are named
    path = platform.write_campaign(targets=[], forge="lab", discover={"gitlab": {"group": "acme"}})
    proc = platform.cli("run", "--file", str(path), check=False)
    assert proc.returncode == 2 and "'lab'" in proc.stderr and "LAB_TOKEN" in proc.stderr
