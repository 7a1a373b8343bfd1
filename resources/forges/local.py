"""The local forge: repositories on disk, pull requests as JSON records beside their objects."""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field

from resources.forges.base import (
    MERGE_METHODS,
    BranchChecks,
    ForgeError,
    PullRequest,
    PullRequestDraft,
    PullRequestStatus,
    RepoLocation,
    ResolvedRepo,
    refuse_push,
    resolved_repo,
)
from resources.git import SAFE_RECEIVE_PACK, GitError, author_env, ls_remote, run_git

BRANCH_CHECKS = "branch_checks.json"  # in the git dir: what CI says of each branch (tests)
# in the git dir: the repository's settings a person sets, e.g. {"allow_auto_merge": true}
SETTINGS = "forge_settings.json"
CHECKS = get_args(PullRequestStatus.model_fields["checks"].annotation)
REVIEWS = get_args(PullRequestStatus.model_fields["review"].annotation)
# what the forge itself writes from a draft (a subclass's extra fields are not the record's)
DRAFT_FIELDS = frozenset(PullRequestDraft.model_fields)


class LocalComment(BaseModel):
    """A conversation comment on a local pull request."""

    id: int
    author: str
    body: str
    created_at: datetime


class LocalPullRequest(PullRequest):
    """A local pull request record: the PR, plus what a test or a human sets in its JSON.

    `checks` (success|failure|pending|none) and `review` (approved|changes_requested|commented|
    none) stand in for a CI system and reviewers; they are checked when the status is read, so a
    typo fails that PR's status, not every read of the repository's PRs. Unknown fields a human
    adds are kept when the forge rewrites the record.
    """

    model_config = ConfigDict(extra="allow")

    reviewers: list[str] = Field(default_factory=list)
    team_reviewers: list[str] = Field(default_factory=list)
    assignees: list[str] = Field(default_factory=list)
    auto_merge: str | None = None  # the merge method auto-merge was enabled with
    checks: str = "none"
    review: str = "none"
    comments: list[LocalComment] = Field(default_factory=list)
    # check name -> its log, set by a test or a person standing in for CI: the failed checks'
    # names and logs while `checks` is `failure` (`failed_check_logs`)
    check_logs: dict[str, str] = Field(default_factory=dict)


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


def local_refs(path: Path) -> dict[str, str]:
    """The branches of a repository on this machine, as `ls_remote` gives them (`"HEAD->"` the
    default branch), read with one `for-each-ref` instead of a transport (git, a shell and
    `upload-pack` for every read)."""
    git_dir = git_dir_of(path)
    try:
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        head = ""
    if not head.startswith("ref: refs/heads/") or head.endswith("/.invalid"):
        return ls_remote(str(path))  # a detached or reftable HEAD: let git's transport say
    out = run_git(
        ["--git-dir", str(git_dir), "for-each-ref", "--format=%(objectname)%09%(refname)",
         "refs/heads/"],
        timeout=120,
    )  # fmt: skip
    refs = {"HEAD->": head.removeprefix("ref: refs/heads/")}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        refs[name] = sha
    if f"refs/heads/{refs['HEAD->']}" in refs:
        refs["HEAD"] = refs[f"refs/heads/{refs['HEAD->']}"]
    else:
        del refs["HEAD->"]  # HEAD names a branch with no commit yet: no default branch
    return refs


class LocalForge:
    """Repositories on this machine; PRs in `<git dir>/pulls/<n>.json`."""

    def __init__(self, merge_author: tuple[str, str] = ("Campaign Bot", "campaigns@localhost")):
        self.merge_author = merge_author

    def _repo(self, url: str) -> tuple[Path, Path]:
        path = local_repo_path(url)
        if not path.exists():
            raise ForgeError(f"{url}: repository not found")
        return path, git_dir_of(path)

    def _located(self, url: str) -> tuple[RepoLocation, dict[str, str]]:
        path, _ = self._repo(url)
        try:
            refs = local_refs(path)
        except GitError as exc:
            raise ForgeError(f"{url}: cannot read repository: {exc.stderr}") from None
        location = RepoLocation(
            url=url, subject=url, clone_url=str(path.resolve()), default_branch=refs.get("HEAD->")
        )
        return location, refs

    def locate(self, url: str) -> RepoLocation:
        """Where to clone `url` from (its path) and its default branch."""
        return self._located(url)[0]

    def resolve(self, url: str, base: str | None, branch: str) -> ResolvedRepo:
        """Where to clone `url` from, its base branch and sha, and the campaign branch's sha."""
        location, refs = self._located(url)
        return resolved_repo(location, base, branch, lambda b: refs.get(f"refs/heads/{b}"))

    def push_branch(
        self, url: str, workspace: Path, branch: str, sha: str, expected: str | None
    ) -> None:
        """Push `sha` to `branch` with a lease on `expected`; campaign branches only."""
        path, _ = self._repo(url)
        refs = local_refs(path)
        refuse_push(url, branch, refs.get("HEAD->"))
        if refs.get(f"refs/heads/{branch}") == sha:
            return  # published before (a run that ended before recording it): nothing to do
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

    def _all(self, pulls: Path) -> list[LocalPullRequest]:
        prs = [LocalPullRequest.model_validate_json(p.read_text()) for p in pulls.glob("*.json")]
        return sorted(prs, key=lambda pr: pr.number)

    def _write(self, pulls: Path, pr: LocalPullRequest) -> LocalPullRequest:
        path = pulls / f"{pr.number}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(pr.model_dump_json(indent=2))
        tmp.replace(path)
        return pr

    def list_pull_requests(self, url: str) -> list[LocalPullRequest]:
        """Every pull request of a repository, oldest first."""
        return self._all(self._pulls_dir(url))

    def find_pull_request(self, url: str, head: str) -> LocalPullRequest | None:
        """The most recent pull request whose head is `head`."""
        matches = [pr for pr in self.list_pull_requests(url) if pr.head == head]
        return matches[-1] if matches else None

    def _head_sha(self, url: str, head: str) -> str | None:
        path, _ = self._repo(url)
        return local_refs(path).get(f"refs/heads/{head}")

    def create_pull_request(self, url: str, draft: PullRequestDraft) -> LocalPullRequest:
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
            pr = LocalPullRequest(
                number=number,
                url=(pulls / f"{number}.json").resolve().as_uri(),
                head_sha=head_sha,
                created_at=now,
                updated_at=now,
                **{**draft.model_dump(include=DRAFT_FIELDS), "reviewers": _not_author(draft)},
            )
            return self._write(pulls, pr)

    def update_pull_request(
        self, url: str, number: int, draft: PullRequestDraft
    ) -> LocalPullRequest:
        """Rewrite title, body, labels and draft flag, and ask new reviewers (none is dropped);
        the record is untouched when it already says all that."""
        head_sha = self._head_sha(url, draft.head)
        with self._locked(url) as pulls:
            pr = self._get(pulls, url, number)
            wanted = draft.model_dump(include=DRAFT_FIELDS - {"head"})
            for field in ("reviewers", "team_reviewers", "assignees"):  # added, never dropped
                had = getattr(pr, field)
                asked = _not_author(draft) if field == "reviewers" else getattr(draft, field)
                wanted[field] = had + [r for r in asked if r not in had]
            changes = {**wanted, "head_sha": head_sha}
            if all(getattr(pr, k) == v for k, v in changes.items()):
                return pr
            updated = pr.model_copy(update={**changes, "updated_at": datetime.now(UTC)})
            return self._write(pulls, updated)

    def _get(self, pulls: Path, url: str, number: int) -> LocalPullRequest:
        path = pulls / f"{number}.json"
        if not path.exists():
            raise ForgeError(f"{url}: pull request #{number} not found")
        return LocalPullRequest.model_validate_json(path.read_text())

    def merge_pull_request(self, url: str, number: int, method: str = "merge") -> LocalPullRequest:
        """Put the head into the base branch and mark the PR merged: `merge` fast-forwards or
        makes a merge commit, `squash` makes one commit of the PR's changes, `rebase` replays
        its commits onto the base (with real git, as GitHub does)."""
        if method not in MERGE_METHODS:
            raise ForgeError(
                f"{url}: unknown merge method {method!r} (one of {', '.join(MERGE_METHODS)})"
            )
        path, _ = self._repo(url)
        with self._locked(url) as pulls:
            pr = self._get(pulls, url, number)
            if pr.state != "open":
                raise ForgeError(f"{url}: pull request #{number} is {pr.state}, not open")
            if method == "merge":
                _merge_into(path, pr.base, pr.head, self.merge_author, number)
            elif method == "squash":
                _squash_into(path, pr, self.merge_author)
            else:
                _rebase_onto(path, pr.base, pr.head, self.merge_author)
            merged = pr.model_copy(update={"state": "merged", "updated_at": datetime.now(UTC)})
            return self._write(pulls, merged)

    def close_pull_request(
        self, url: str, number: int, comment: str | None = None
    ) -> LocalPullRequest:
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

    def reopen_pull_request(self, url: str, number: int) -> LocalPullRequest:
        """Reopen a closed (not merged) pull request."""
        with self._locked(url) as pulls:
            pr = self._get(pulls, url, number)
            if pr.state == "merged":
                raise ForgeError(f"{url}: pull request #{number} is merged and cannot be reopened")
            if pr.state == "open":
                return pr
            return self._write(
                pulls, pr.model_copy(update={"state": "open", "updated_at": datetime.now(UTC)})
            )

    def pull_request_status(self, url: str, number: int) -> PullRequestStatus:
        """State (draft apart), mergeability, and the checks and review set in the record."""
        path, _ = self._repo(url)
        pr = self._get(self._pulls_dir(url), url, number)
        if pr.checks not in CHECKS:
            raise ForgeError(
                f"{url}: pull request #{number}: checks {pr.checks!r} is not one of "
                f"{'|'.join(CHECKS)}"
            )
        if pr.review not in REVIEWS:
            raise ForgeError(
                f"{url}: pull request #{number}: review {pr.review!r} is not one of "
                f"{'|'.join(REVIEWS)}"
            )
        state = "draft" if pr.state == "open" and pr.draft else pr.state
        head_sha = _ref_sha(path, pr.head) if pr.state == "open" else None
        mergeable = pr.state == "open" and _merges_cleanly(path, pr.base, head_sha)
        if pr.state != "open":
            mergeable_state = None
        elif pr.draft:
            mergeable_state = "draft"
        elif not mergeable:
            mergeable_state = "dirty"
        elif pr.review != "approved" and self._settings(url).get("requires_approval") is True:
            mergeable_state = "blocked"  # as GitHub says while a required approval is missing
        else:
            mergeable_state = "clean"
        return PullRequestStatus(
            number=pr.number,
            url=pr.url,
            state=state,
            head_sha=head_sha or pr.head_sha,
            mergeable=mergeable,
            mergeable_state=mergeable_state,
            checks=pr.checks,  # type: ignore[arg-type]
            failing_checks=list(pr.check_logs) if pr.checks == "failure" else [],
            review=pr.review,  # type: ignore[arg-type]
        )

    def failed_check_logs(self, url: str, number: int) -> dict[str, str]:
        """Check name -> log of the pull request's failed checks: its record's `check_logs`
        while its `checks` is `failure` (empty otherwise)."""
        pr = self._get(self._pulls_dir(url), url, number)
        return dict(pr.check_logs) if pr.checks == "failure" else {}

    def branch_checks(self, url: str, branch: str) -> BranchChecks:
        """A branch's checks as `<git dir>/branch_checks.json` says (a test or a person stands
        in for CI there): `{"main": {"state": "failure", "failing": ["ci"]}}`; a branch it does
        not name has state `none`."""
        path, git_dir = self._repo(url)
        sha = _ref_sha(path, branch)
        if sha is None:
            raise ForgeError(f"{url}: branch {branch!r} does not exist")
        file = git_dir / BRANCH_CHECKS
        try:
            data = json.loads(file.read_text()) if file.exists() else {}
            entry = data.get(branch) if isinstance(data, dict) else None
            return BranchChecks.model_validate({"branch": branch, "sha": sha, **(entry or {})})
        except (ValueError, TypeError) as exc:  # JSON or pydantic: the file is wrong
            raise ForgeError(f"{url}: {file} is not a valid branch checks file: {exc}") from None

    def _settings(self, url: str) -> dict:
        """The repository's settings in `<git dir>/forge_settings.json` ({} without the file):
        `allow_auto_merge`, `requires_approval` (a PR is `blocked` until its review approves)."""
        _, git_dir = self._repo(url)
        file = git_dir / SETTINGS
        try:
            settings = json.loads(file.read_text()) if file.exists() else {}
        except ValueError as exc:
            raise ForgeError(f"{url}: {file} is not valid JSON: {exc}") from None
        if not isinstance(settings, dict):
            raise ForgeError(f"{url}: {file} is not a JSON object")
        return settings

    def enable_auto_merge(self, url: str, number: int, method: str = "merge") -> bool:
        """Mark an open PR to be merged with `method` once it may (its record's `auto_merge`),
        when `<git dir>/forge_settings.json` says `"allow_auto_merge": true`; False otherwise.
        The local forge has no CI to merge on: the PR status sensor merges it when ready."""
        if self._settings(url).get("allow_auto_merge") is not True:
            return False
        with self._locked(url) as pulls:
            pr = self._get(pulls, url, number)
            if pr.state != "open":
                raise ForgeError(f"{url}: pull request #{number} is {pr.state}, not open")
            self._write(pulls, pr.model_copy(update={"auto_merge": method}))
        return True

    def comment(self, url: str, number: int, body: str) -> str:
        """Append a comment to the pull request's record; returns its URL (`...json#comment-N`)."""
        with self._locked(url) as pulls:
            pr = self._get(pulls, url, number)
            comment = LocalComment(
                id=max((c.id for c in pr.comments), default=0) + 1,
                author=_actor(),
                body=body,
                created_at=datetime.now(UTC),
            )
            updated = pr.model_copy(
                update={"comments": [*pr.comments, comment], "updated_at": comment.created_at}
            )
            self._write(pulls, updated)
            return f"{pr.url}#comment-{comment.id}"


def _not_author(draft: PullRequestDraft) -> list[str]:
    """The draft's reviewers but the PR's author (whoever acts here), whom no forge asks."""
    return [r for r in draft.reviewers if r != _actor()]


def _actor() -> str:
    """Who acts: `$ORCHESTRATOR_ACTOR`, else the OS user."""
    try:
        return os.environ.get("ORCHESTRATOR_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (some containers)
        return f"uid {os.getuid()}"


def _ref_sha(repo: Path, branch: str) -> str | None:
    """The sha `refs/heads/<branch>` points at, or None when there is no such branch."""
    try:
        return run_git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], repo).strip()
    except GitError:
        return None


def _merges_cleanly(repo: Path, base: str, head_sha: str | None) -> bool:
    """True when `head_sha` fast-forwards `base` or merges into it without conflicts."""
    base_sha = _ref_sha(repo, base)
    if base_sha is None or head_sha is None:
        return False
    try:
        run_git(["merge-base", "--is-ancestor", base_sha, head_sha], repo)
        return True  # a fast-forward
    except GitError:
        pass
    try:  # exits 1 on conflicts
        run_git(["merge-tree", "--write-tree", "--no-messages", base_sha, head_sha], repo)
    except GitError:
        return False
    return True


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


def _squash_into(repo: Path, pr: PullRequest, author: tuple[str, str]) -> None:
    """One commit on `pr.base` with the PR's changes (its title and number as the message)."""
    base_sha = run_git(["rev-parse", f"refs/heads/{pr.base}"], repo).strip()
    head_sha = run_git(["rev-parse", f"refs/heads/{pr.head}"], repo).strip()
    try:
        tree = run_git(["merge-tree", "--write-tree", base_sha, head_sha], repo)
    except GitError:
        raise ForgeError(f"{repo}: {pr.head} does not merge cleanly into {pr.base}") from None
    message = f"{pr.title} (#{pr.number})\n\n{pr.body}".rstrip() + "\n"
    new = run_git(
        ["commit-tree", tree.split()[0], "-p", base_sha, "-m", message],
        repo, env=author_env(*author),
    ).strip()  # fmt: skip
    run_git(["update-ref", f"refs/heads/{pr.base}", new, base_sha], repo)


def _rebase_onto(repo: Path, base: str, head: str, author: tuple[str, str]) -> None:
    """Replay the head's commits (merges left out) onto `base`, keeping their authors and
    messages, in a temporary work tree (cherry-pick), then move `base` to the result."""
    base_sha = run_git(["rev-parse", f"refs/heads/{base}"], repo).strip()
    head_sha = run_git(["rev-parse", f"refs/heads/{head}"], repo).strip()
    commits = run_git(["rev-list", "--reverse", "--no-merges", f"{base_sha}..{head_sha}"], repo)
    with tempfile.TemporaryDirectory(prefix="local-forge-rebase-") as tmp:
        tree = Path(tmp) / "work"
        run_git(["worktree", "add", "--quiet", "--detach", str(tree), base_sha], repo)
        try:
            committer = {
                k: v for k, v in author_env(*author).items() if k.startswith("GIT_COMMITTER")
            }
            for sha in commits.split():
                try:
                    run_git(["cherry-pick", "--allow-empty", sha], tree, env=committer)
                except GitError:
                    raise ForgeError(
                        f"{repo}: {head} does not rebase cleanly onto {base}"
                    ) from None
            new = run_git(["rev-parse", "HEAD"], tree).strip()
        finally:
            run_git(["worktree", "remove", "--force", str(tree)], repo)
    run_git(["update-ref", f"refs/heads/{base}", new, base_sha], repo)
