"""The local forge against real bare repositories: resolve, push with a lease, pull requests; and
the repository cache over it (branches read from the mirror, checkouts that do not refetch)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from orchestrator_assets.demo_fleet import RepoSpec, create_repo
from resources.forges.base import ForgeError, PullRequestDraft
from resources.forges.local import LocalForge
from resources.git import GitError
from resources.repo_cache import RepoCache

BRANCH = "campaign/x"


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout.strip()


def sha_of(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", f"refs/heads/{ref}")


def commit(work: Path, name: str = "a.txt", text: str = "2\n") -> str:
    (work / name).write_text(text)
    git(work, "add", name)
    git(work, "commit", "-q", "-m", f"write {name}")
    return git(work, "rev-parse", "HEAD")


def draft(head: str = BRANCH, title: str = "Rename", **kw) -> PullRequestDraft:
    return PullRequestDraft(head=head, base="main", title=title, body="Body.", **kw)


@pytest.fixture
def forge() -> LocalForge:
    return LocalForge()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return create_repo(tmp_path, RepoSpec("x", {"a.txt": "1\n"}))


@pytest.fixture
def work(repo: Path, tmp_path: Path) -> Path:
    """A clone of `repo` to make commits in."""
    path = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(repo), str(path))
    return path


def push(forge: LocalForge, repo: Path, work: Path, branch: str = BRANCH) -> str:
    """Commit in `work` and push it to a new campaign branch; returns the sha."""
    sha = commit(work, text=f"{branch}\n")
    forge.push_branch(str(repo), work, branch, sha, None)
    return sha


# resolve ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("default", ["main", "master"])
def test_resolve_finds_the_default_branch_from_head(
    forge: LocalForge, tmp_path: Path, default: str
):
    repo = create_repo(tmp_path, RepoSpec("x", {"a.txt": "1\n"}, branch=default))
    resolved = forge.resolve(str(repo), None, BRANCH)
    assert resolved.base_branch == default
    assert resolved.base_sha == sha_of(repo, default)
    assert resolved.branch_sha is None
    assert resolved.clone_url == str(repo.resolve()) and resolved.url == str(repo)


def test_resolve_reports_the_campaign_branch_after_a_push(
    forge: LocalForge, repo: Path, work: Path
):
    sha = push(forge, repo, work)
    resolved = forge.resolve(str(repo), None, BRANCH)
    assert resolved.branch_sha == sha == sha_of(repo, BRANCH)
    assert resolved.base_sha == sha_of(repo, "main") != sha


def test_resolve_accepts_a_file_url(forge: LocalForge, repo: Path):
    resolved = forge.resolve(repo.as_uri(), "main", BRANCH)
    assert resolved.base_sha == sha_of(repo, "main")


def test_resolve_missing_base_branch_raises_with_the_url(forge: LocalForge, repo: Path):
    with pytest.raises(ForgeError, match="develop") as err:
        forge.resolve(str(repo), "develop", BRANCH)
    assert str(repo) in str(err.value)


def test_resolve_missing_repository_raises_with_the_url(forge: LocalForge, tmp_path: Path):
    url = str(tmp_path / "acme" / "nope.git")
    with pytest.raises(ForgeError, match="not found") as err:
        forge.resolve(url, None, BRANCH)
    assert url in str(err.value)


def test_https_url_is_out_of_reach_of_the_local_forge(forge: LocalForge):
    url = "https://github.com/acme/x.git"
    with pytest.raises(ForgeError, match="local forge only reaches") as err:
        forge.resolve(url, None, BRANCH)
    assert url in str(err.value)


# push_branch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("branch", ["main", "feature/x", "campaignx"])
def test_push_refuses_a_branch_outside_campaign(
    forge: LocalForge, repo: Path, work: Path, branch: str
):
    before = sha_of(repo, "main")
    sha = commit(work)
    with pytest.raises(ForgeError, match="not a campaign branch"):
        forge.push_branch(str(repo), work, branch, sha, before)
    assert sha_of(repo, "main") == before
    if branch != "main":
        assert git(repo, "for-each-ref", f"refs/heads/{branch}") == ""


def test_push_refuses_the_default_branch_even_under_campaign(forge: LocalForge, tmp_path: Path):
    repo = create_repo(tmp_path, RepoSpec("x", {"a.txt": "1\n"}, branch="campaign/base"))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(repo), str(work))
    before = sha_of(repo, "campaign/base")
    with pytest.raises(ForgeError, match="not a campaign branch"):
        forge.push_branch(str(repo), work, "campaign/base", commit(work), before)
    assert sha_of(repo, "campaign/base") == before


def test_push_with_a_stale_lease_fails(forge: LocalForge, repo: Path, work: Path):
    first = push(forge, repo, work)
    git(work, "reset", "-q", "--hard", "origin/main")
    rewritten = commit(work, text="rewritten\n")
    stale = sha_of(repo, "main")
    for expected in (stale, None):  # None means "the branch must not exist yet"
        with pytest.raises(ForgeError, match="push of campaign/x failed"):
            forge.push_branch(str(repo), work, BRANCH, rewritten, expected)
        assert sha_of(repo, BRANCH) == first
    forge.push_branch(str(repo), work, BRANCH, rewritten, first)  # the right lease forces it
    assert sha_of(repo, BRANCH) == rewritten


# pull requests ----------------------------------------------------------------------------------


def test_create_then_find_then_refuse_a_second_open_pr(forge: LocalForge, repo: Path, work: Path):
    sha = push(forge, repo, work)
    pr = forge.create_pull_request(str(repo), draft(labels=["bot"]))
    assert (pr.number, pr.state, pr.head, pr.base, pr.head_sha) == (1, "open", BRANCH, "main", sha)
    assert forge.find_pull_request(str(repo), BRANCH) == pr
    assert forge.find_pull_request(str(repo), "campaign/other") is None
    with pytest.raises(ForgeError, match="already exists"):
        forge.create_pull_request(str(repo), draft(title="Again"))


def test_create_for_a_missing_branch_raises(forge: LocalForge, repo: Path):
    with pytest.raises(ForgeError, match="does not exist"):
        forge.create_pull_request(str(repo), draft())


def test_update_with_an_identical_draft_changes_nothing(forge: LocalForge, repo: Path, work: Path):
    push(forge, repo, work)
    pr = forge.create_pull_request(str(repo), draft())
    record = Path(unquote(urlparse(pr.url).path))
    before = record.read_text()
    same = forge.update_pull_request(str(repo), pr.number, draft())
    assert same.updated_at == pr.updated_at
    assert record.read_text() == before


def test_update_with_a_new_title_changes_updated_at(forge: LocalForge, repo: Path, work: Path):
    push(forge, repo, work)
    pr = forge.create_pull_request(str(repo), draft())
    updated = forge.update_pull_request(str(repo), pr.number, draft(title="Better title"))
    assert updated.updated_at > pr.updated_at and updated.created_at == pr.created_at
    assert forge.find_pull_request(str(repo), BRANCH).title == "Better title"


def test_update_of_a_missing_pr_raises(forge: LocalForge, repo: Path):
    with pytest.raises(ForgeError, match="#7 not found"):
        forge.update_pull_request(str(repo), 7, draft())


def test_pr_numbers_increase_per_repository(forge: LocalForge, repo: Path, work: Path, tmp_path):
    other = create_repo(tmp_path, RepoSpec("y", {"b.txt": "1\n"}))
    other_work = tmp_path / "other-work"
    git(tmp_path, "clone", "-q", str(other), str(other_work))
    for branch in ("campaign/a", "campaign/b"):
        push(forge, repo, work, branch)
    push(forge, other, other_work, "campaign/a")
    numbers = [
        forge.create_pull_request(str(repo), draft("campaign/a")).number,
        forge.create_pull_request(str(repo), draft("campaign/b")).number,
        forge.create_pull_request(str(other), draft("campaign/a")).number,
    ]
    assert numbers == [1, 2, 1]
    forge.close_pull_request(str(repo), 1)  # once closed, the head can get a new PR
    assert forge.create_pull_request(str(repo), draft("campaign/a")).number == 3
    assert forge.find_pull_request(str(repo), "campaign/a").number == 3


def test_close_appends_the_comment_and_sets_closed(forge: LocalForge, repo: Path, work: Path):
    push(forge, repo, work)
    pr = forge.create_pull_request(str(repo), draft())
    closed = forge.close_pull_request(str(repo), pr.number, "not now")
    assert closed.state == "closed" and closed.body == "Body.\n\n---\nnot now"
    assert forge.find_pull_request(str(repo), BRANCH) == closed
    assert forge.close_pull_request(str(repo), pr.number).body == closed.body  # no comment


def test_merge_fast_forwards_the_base_branch(forge: LocalForge, repo: Path, work: Path):
    sha = push(forge, repo, work)
    pr = forge.create_pull_request(str(repo), draft())
    merged = forge.merge_pull_request(str(repo), pr.number)
    assert merged.state == "merged"
    assert sha_of(repo, "main") == sha
    assert forge.find_pull_request(str(repo), BRANCH).state == "merged"


def test_merge_of_diverged_branches_makes_a_merge_commit(forge: LocalForge, repo: Path, work: Path):
    head = push(forge, repo, work)
    git(work, "reset", "-q", "--hard", "origin/main")
    base = commit(work, "b.txt", "other file\n")
    git(work, "push", "-q", "origin", "HEAD:main")
    pr = forge.create_pull_request(str(repo), draft())
    forge.merge_pull_request(str(repo), pr.number)
    merge = sha_of(repo, "main")
    assert git(repo, "rev-parse", f"{merge}^1", f"{merge}^2").split() == [base, head]
    assert git(repo, "show", f"{merge}:a.txt") == BRANCH
    assert git(repo, "show", f"{merge}:b.txt") == "other file"


def test_merge_with_a_conflict_raises_and_leaves_the_base(
    forge: LocalForge, repo: Path, work: Path
):
    push(forge, repo, work)  # a.txt = "campaign/x"
    git(work, "reset", "-q", "--hard", "origin/main")
    base = commit(work, "a.txt", "changed on main\n")
    git(work, "push", "-q", "origin", "HEAD:main")
    pr = forge.create_pull_request(str(repo), draft())
    with pytest.raises(ForgeError, match="does not merge cleanly"):
        forge.merge_pull_request(str(repo), pr.number)
    assert sha_of(repo, "main") == base
    assert forge.find_pull_request(str(repo), BRANCH).state == "open"


def test_merging_a_closed_or_merged_pr_raises(forge: LocalForge, repo: Path, work: Path):
    push(forge, repo, work, "campaign/a")
    push(forge, repo, work, "campaign/b")
    closed = forge.create_pull_request(str(repo), draft("campaign/a"))
    forge.close_pull_request(str(repo), closed.number)
    before = sha_of(repo, "main")
    with pytest.raises(ForgeError, match="is closed, not open"):
        forge.merge_pull_request(str(repo), closed.number)
    assert sha_of(repo, "main") == before
    merged = forge.create_pull_request(str(repo), draft("campaign/b"))
    forge.merge_pull_request(str(repo), merged.number)
    with pytest.raises(ForgeError, match="is merged, not open"):
        forge.merge_pull_request(str(repo), merged.number)


def test_pr_url_is_a_file_uri_of_its_json_record(forge: LocalForge, repo: Path, work: Path):
    push(forge, repo, work)
    pr = forge.create_pull_request(str(repo), draft())
    parsed = urlparse(pr.url)
    record = Path(unquote(parsed.path))
    assert parsed.scheme == "file" and record.is_file()
    assert record == (repo / "pulls" / "1.json").resolve()
    assert json.loads(record.read_text())["number"] == 1


def test_a_merged_pr_cannot_be_closed(forge: LocalForge, repo: Path, work: Path):
    push(forge, repo, work)
    pr = forge.create_pull_request(str(repo), draft())
    forge.merge_pull_request(str(repo), pr.number)
    with pytest.raises(ForgeError, match="is merged and cannot be closed"):
        forge.close_pull_request(str(repo), pr.number, "too late")
    assert forge.find_pull_request(str(repo), BRANCH).state == "merged"


# the repository cache over this forge: branches resolved from the mirror's fetch, and checkouts
# that go back to the forge only for a commit the mirror does not hold ---------------------------


@pytest.fixture
def cache(tmp_path: Path) -> RepoCache:
    return RepoCache(tmp_path / "cache")


def test_resolve_reads_the_branches_the_forge_has_now(
    cache: RepoCache, repo: Path, work: Path
) -> None:
    forge = LocalForge()
    location = forge.locate(str(repo))
    first = cache.resolve(location, None, BRANCH)
    assert (first.base_branch, first.base_sha, first.branch_sha) == (
        "main", sha_of(repo, "main"), None
    )  # fmt: skip
    # The forge moves on: a campaign branch appears (and one below it, which must not be taken
    # for it), and the base gets a commit. The next resolve sees both, as the API would.
    pushed = commit(work, text="change\n")
    git(work, "push", "-q", "origin", f"{pushed}:refs/heads/{BRANCH}")
    git(work, "push", "-q", "origin", f"{pushed}~1:refs/heads/{BRANCH}-old")
    moved = commit(work, "b.txt")
    git(work, "push", "-q", "origin", f"{moved}:refs/heads/main")
    now = cache.resolve(location, None, BRANCH)
    assert (now.base_sha, now.branch_sha) == (moved, pushed)
    assert now == forge.resolve(str(repo), None, BRANCH)
    # A branch deleted on the forge is gone from the mirror too.
    git(work, "push", "-q", "origin", f":refs/heads/{BRANCH}")
    assert cache.resolve(location, None, BRANCH).branch_sha is None


def test_resolve_of_a_missing_base_branch_names_the_repository_and_branch(
    cache: RepoCache, repo: Path
) -> None:
    location = LocalForge().locate(str(repo))
    with pytest.raises(ForgeError, match=rf"{repo}: base branch 'nope' does not exist"):
        cache.resolve(location, "nope", BRANCH)


def test_a_checkout_of_a_held_commit_does_not_go_back_to_the_forge(
    cache: RepoCache, repo: Path, work: Path, tmp_path: Path
) -> None:
    url = str(repo)
    base = sha_of(repo, "main")
    cache.checkout(url, tmp_path / "ws1", base, BRANCH)
    # The forge is out of reach: a commit the mirror holds is still checked out ...
    repo.rename(repo.with_name("moved"))
    cache.checkout(url, tmp_path / "ws2", base)
    assert git(tmp_path / "ws2", "rev-parse", "HEAD") == base
    # ... and one it does not hold sends it to the forge (which fails here, saying so).
    repo.with_name("moved").rename(repo)
    newer = commit(work, "c.txt")
    git(work, "push", "-q", "origin", f"{newer}:refs/heads/main")
    repo.rename(repo.with_name("moved"))
    with pytest.raises(GitError, match=r"git fetch --prune .* does not appear to be a git repo"):
        cache.checkout(url, tmp_path / "ws3", newer)
    repo.with_name("moved").rename(repo)
    cache.checkout(url, tmp_path / "ws4", newer)
    assert git(tmp_path / "ws4", "rev-parse", "HEAD") == newer


def test_the_cache_answers_has_for_commits_it_saw_without_asking_git(
    cache: RepoCache, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resources.repo_cache as repo_cache

    url = str(repo)
    base = cache.resolve(LocalForge().locate(url), None, BRANCH).base_sha
    ws = tmp_path / "ws"
    cache.checkout(url, ws, base, BRANCH)
    kept = commit(ws, "k.txt")
    cache.keep(url, ws, kept, BRANCH)
    asked: list[list[str]] = []
    real = repo_cache.run_git
    monkeypatch.setattr(
        repo_cache, "run_git", lambda args, *a, **k: asked.append(args) or real(args, *a, **k)
    )
    # What it resolved after a fetch and what it kept need no `git cat-file` ...
    assert cache.has(url, base) and cache.has(url, kept)
    assert asked == []
    # ... anything else is asked of git: another cache over the same mirrors (a later run) finds
    # the kept change, and a commit the mirror never held is not taken for held.
    later = RepoCache(cache.root)
    assert later.has(url, kept)
    assert not later.has(url, "0" * 40) and not cache.has(url, "0" * 40)
    assert [a[0] for a in asked] == ["cat-file"] * 3
