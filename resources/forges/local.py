"""The local forge: repositories on disk, pull requests as JSON records beside their objects."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

from resources.forges.base import ForgeError, PullRequest, PullRequestDraft, ResolvedRepo
from resources.git import SAFE_RECEIVE_PACK, GitError, author_env, ls_remote, run_git

BRANCH_PREFIX = "campaign/"


def local_repo_path(url: str) -> Path:
    """The path of a local repository given as a path or a `file://` URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ForgeError(
            f"{url}: the local forge only reaches repositories on this machine (a path or "
            "file:// URL); use a forge for this code host"
        )
    return Path(url)


def git_dir_of(path: Path) -> Path:
    """The git directory of a bare or non-bare repository."""
    if (path / ".git").is_dir():
        return path / ".git"
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        return path
    raise ForgeError(f"{path}: not a git repository")


class LocalForge:
    """Repositories on this machine; PRs in `<git dir>/pulls/<n>.json`."""

    def __init__(self, merge_author: tuple[str, str] = ("Campaign Bot", "campaigns@localhost")):
        self.merge_author = merge_author

    def _repo(self, url: str) -> tuple[Path, Path]:
        path = local_repo_path(url)
        if not path.exists():
            raise ForgeError(f"{url}: repository not found")
        return path, git_dir_of(path)

    def resolve(self, url: str, base: str | None, branch: str) -> ResolvedRepo:
        """Where to clone `url` from, its base branch and sha, and the campaign branch's sha."""
        path, _ = self._repo(url)
        try:
            refs = ls_remote(str(path))
        except GitError as exc:
            raise ForgeError(f"{url}: cannot read repository: {exc.stderr}") from None
        base_branch = base or refs.get("HEAD->")
        if not base_branch:
            raise ForgeError(f"{url}: repository has no default branch (empty repository?)")
        base_sha = refs.get(f"refs/heads/{base_branch}")
        if not base_sha:
            raise ForgeError(f"{url}: base branch {base_branch!r} does not exist")
        return ResolvedRepo(
            url=url,
            clone_url=str(path.resolve()),
            base_branch=base_branch,
            base_sha=base_sha,
            branch_sha=refs.get(f"refs/heads/{branch}"),
        )

    def push_branch(
        self, url: str, workspace: Path, branch: str, sha: str, expected: str | None
    ) -> None:
        """Push `sha` to `branch` with a lease on `expected`; campaign branches only."""
        path, _ = self._repo(url)
        refs = ls_remote(str(path))
        if not branch.startswith(BRANCH_PREFIX) or branch == refs.get("HEAD->"):
            raise ForgeError(f"{url}: refusing to push to {branch!r}: not a campaign branch")
        lease = f"--force-with-lease=refs/heads/{branch}:{expected or ''}"
        try:
            run_git(
                ["push", "--quiet", f"--receive-pack={SAFE_RECEIVE_PACK}", lease, str(path),
                 f"{sha}:refs/heads/{branch}"],
                workspace,
            )  # fmt: skip
        except GitError as exc:
            raise ForgeError(f"{url}: push of {branch} failed: {exc.stderr}") from None

    # pull requests ---------------------------------------------------------------------------

    def _pulls_dir(self, url: str) -> Path:
        _, git_dir = self._repo(url)
        pulls = git_dir / "pulls"
        pulls.mkdir(exist_ok=True)
        return pulls

    @contextmanager
    def _locked(self, url: str) -> Iterator[Path]:
        pulls = self._pulls_dir(url)
        with open(pulls / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield pulls
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _all(self, pulls: Path) -> list[PullRequest]:
        prs = [PullRequest.model_validate_json(p.read_text()) for p in pulls.glob("*.json")]
        return sorted(prs, key=lambda pr: pr.number)

    def _write(self, pulls: Path, pr: PullRequest) -> PullRequest:
        path = pulls / f"{pr.number}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(pr.model_dump_json(indent=2))
        tmp.replace(path)
        return pr

    def list_pull_requests(self, url: str) -> list[PullRequest]:
        """Every pull request of a repository, oldest first."""
        return self._all(self._pulls_dir(url))

    def find_pull_request(self, url: str, head: str) -> PullRequest | None:
        """The most recent pull request whose head is `head`."""
        matches = [pr for pr in self.list_pull_requests(url) if pr.head == head]
        return matches[-1] if matches else None

    def _head_sha(self, url: str, head: str) -> str | None:
        path, _ = self._repo(url)
        return ls_remote(str(path)).get(f"refs/heads/{head}")

    def create_pull_request(self, url: str, draft: PullRequestDraft) -> PullRequest:
        """Open a new pull request (refused when an open one has the same head)."""
        head_sha = self._head_sha(url, draft.head)
        if head_sha is None:
            raise ForgeError(f"{url}: cannot open a PR: branch {draft.head!r} does not exist")
        with self._locked(url) as pulls:
            existing = self._all(pulls)
            if any(pr.head == draft.head and pr.state == "open" for pr in existing):
                raise ForgeError(f"{url}: an open pull request for {draft.head!r} already exists")
            number = max((pr.number for pr in existing), default=0) + 1
            now = datetime.now(UTC)
            pr = PullRequest(
                number=number,
                url=(pulls / f"{number}.json").resolve().as_uri(),
                head_sha=head_sha,
                created_at=now,
                updated_at=now,
                **draft.model_dump(),
            )
            return self._write(pulls, pr)

    def update_pull_request(self, url: str, number: int, draft: PullRequestDraft) -> PullRequest:
        """Rewrite title, body, labels and draft flag; the record is untouched when equal."""
        head_sha = self._head_sha(url, draft.head)
        with self._locked(url) as pulls:
            pr = self._get(pulls, url, number)
            changes = {**draft.model_dump(exclude={"head"}), "head_sha": head_sha}
            if all(getattr(pr, k) == v for k, v in changes.items()):
                return pr
            updated = pr.model_copy(update={**changes, "updated_at": datetime.now(UTC)})
            return self._write(pulls, updated)

    def _get(self, pulls: Path, url: str, number: int) -> PullRequest:
        path = pulls / f"{number}.json"
        if not path.exists():
            raise ForgeError(f"{url}: pull request #{number} not found")
        return PullRequest.model_validate_json(path.read_text())

    def merge_pull_request(self, url: str, number: int) -> PullRequest:
        """Fast-forward or merge the head into the base branch and mark the PR merged."""
        path, _ = self._repo(url)
        with self._locked(url) as pulls:
            pr = self._get(pulls, url, number)
            if pr.state != "open":
                raise ForgeError(f"{url}: pull request #{number} is {pr.state}, not open")
            _merge_into(path, pr.base, pr.head, self.merge_author, number)
            merged = pr.model_copy(update={"state": "merged", "updated_at": datetime.now(UTC)})
            return self._write(pulls, merged)

    def close_pull_request(self, url: str, number: int, comment: str | None = None) -> PullRequest:
        """Close a pull request without merging (a comment is appended to its body).

        Closing a closed PR changes nothing; a merged PR cannot be closed.
        """
        with self._locked(url) as pulls:
            pr = self._get(pulls, url, number)
            if pr.state == "closed":
                return pr
            if pr.state == "merged":
                raise ForgeError(f"{url}: pull request #{number} is merged and cannot be closed")
            body = pr.body + (f"\n\n---\n{comment}" if comment else "")
            closed = pr.model_copy(
                update={"state": "closed", "body": body, "updated_at": datetime.now(UTC)}
            )
            return self._write(pulls, closed)


def _merge_into(repo: Path, base: str, head: str, author: tuple[str, str], number: int) -> None:
    """Merge `head` into `base` inside the repository without a work tree."""
    base_sha = run_git(["rev-parse", f"refs/heads/{base}"], repo).strip()
    head_sha = run_git(["rev-parse", f"refs/heads/{head}"], repo).strip()
    if run_git(["merge-base", base_sha, head_sha], repo).strip() == base_sha:
        new = head_sha  # fast-forward
    else:
        try:  # exits 1 on conflicts (still printing a tree, with conflict markers in it)
            tree = run_git(["merge-tree", "--write-tree", base_sha, head_sha], repo)
        except GitError:
            raise ForgeError(f"{repo}: {head} does not merge cleanly into {base}") from None
        new = run_git(
            ["commit-tree", tree.split()[0], "-p", base_sha, "-p", head_sha,
             "-m", f"Merge pull request #{number} from {head}"],
            repo, env=author_env(*author),
        ).strip()  # fmt: skip
    run_git(["update-ref", f"refs/heads/{base}", new, base_sha], repo)
