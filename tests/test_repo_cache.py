"""The repository cache against real repositories: branches resolved from the mirror's fetch, and
checkouts that go back to the forge only for a commit the mirror does not hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator_assets.demo_fleet import RepoSpec, create_repo
from resources.forges.base import ForgeError
from resources.forges.local import LocalForge
from resources.git import GitError
from resources.repo_cache import RepoCache
from tests.test_local_forge import commit, git, sha_of

BRANCH = "campaign/x"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return create_repo(tmp_path, RepoSpec("x", {"a.txt": "1\n"}))


@pytest.fixture
def work(repo: Path, tmp_path: Path) -> Path:
    path = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(repo), str(path))
    return path


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
