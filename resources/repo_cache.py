"""A local mirror of every repository the platform has worked on.

Provisioning a workspace is then a local clone sharing the mirror's objects, and a second campaign
on the same repository does not fetch it over the network again (only what is new).
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from resources.forges.base import RepoLocation, ResolvedRepo, resolved_repo
from resources.git import SAFE_RECEIVE_PACK, GitError, run_git
from resources.slug import safe_dirname

# What the mirrors follow of their forge. Named on every fetch (not `+refs/*:refs/*`, what a
# mirror clone configures) so that `--prune` leaves the platform's own refs below alone.
FETCH_REFSPECS = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
# Where a change waits until it is published: made and committed, kept in the mirror of its
# repository, checked out from there for its verifiers, and pushed to the forge only once it
# passed every gate. Nothing unverified reaches the code host (and its push-triggered CI).
UNPUBLISHED = "refs/orchestrator/unpublished/"


class RepoCache:
    """Bare mirrors under one directory, refreshed with `git fetch` and locked per repository."""

    def __init__(self, root: Path, git_env: dict[str, str] | None = None):
        self.root = Path(root)
        # The forge's credentials for fetching (an auth header in git's environment, never in a
        # URL or a config file).
        self.git_env = git_env or {}
        self._fetched: dict[Path, float] = {}  # mirror -> when this cache last fetched it
        # Commits this cache saw in a mirror (resolved after a fetch, kept, or found by `has`):
        # `has` answers them without a `git cat-file` process (three a target otherwise). Git
        # prunes only objects no ref reaches that are also two weeks old (`gc.pruneExpire`), so
        # within a run they stay; were one gone, the clone or push needing it fails as before.
        self._held: set[tuple[Path, str]] = set()

    def path_for(self, url: str) -> Path:
        """Where the mirror of `url` lives."""
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        return self.root / f"{safe_dirname(url)}-{digest}.git"

    @contextmanager
    def _locked(self, mirror: Path) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(mirror.with_suffix(".lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def mirror(self, url: str, fresh_for_s: float = 0.0) -> Path:
        """The up-to-date mirror of `url` (cloned on first use, fetched afterwards). With
        `fresh_for_s`, a mirror this cache fetched that recently is taken as it is."""
        mirror = self.path_for(url)
        with self._locked(mirror):
            fetched = self._fetched.get(mirror)
            if fetched is not None and time.monotonic() - fetched < fresh_for_s:
                return mirror
            if (mirror / "HEAD").exists():
                run_git(
                    ["fetch", "--prune", "--quiet", "origin", *FETCH_REFSPECS],
                    cwd=mirror,
                    env=self.git_env,
                )
            else:
                tmp = mirror.with_suffix(".partial")
                if tmp.exists():  # left by a crashed clone
                    shutil.rmtree(tmp, ignore_errors=True)
                run_git(["clone", "--mirror", "--quiet", url, str(tmp)], env=self.git_env)
                tmp.rename(mirror)
            self._fetched[mirror] = time.monotonic()
        return mirror

    def resolve(
        self, location: RepoLocation, base: str | None, branch: str, fresh_for_s: float = 0.0
    ) -> ResolvedRepo:
        """What `Forge.resolve` answers, read from the mirror just fetched instead of asked of
        the forge's API: the base branch's and campaign `branch`'s commits as fetched (a
        branch deleted on the forge is pruned from the mirror). The fetch is what a checkout
        needs anyway, so the shas cost no request of their own. `fresh_for_s`: see `mirror`."""
        mirror = self.mirror(location.clone_url, fresh_for_s)
        names = [f"refs/heads/{b}" for b in (base or location.default_branch, branch) if b]
        out = run_git(
            ["for-each-ref", "--format=%(objectname) %(refname)", *names], mirror
        )  # a pattern also matches below itself: only the exact names count
        shas = {name: sha for sha, _, name in (line.partition(" ") for line in out.splitlines())}
        self._held.update((mirror, sha) for sha in shas.values())
        return resolved_repo(location, base, branch, lambda b: shas.get(f"refs/heads/{b}"))

    def checkout(self, url: str, workspace: Path, commit: str, branch: str | None = None) -> Path:
        """Make `workspace` a clone of `url` at `commit` (on a new `branch` when given). The
        mirror is fetched first only when it does not hold `commit` yet (a change kept here,
        or a base just resolved through it, needs no second trip to the forge)."""
        mirror = self.path_for(url) if self.has(url, commit) else self.mirror(url)
        run_git(["clone", "--quiet", "--shared", "--no-checkout", str(mirror), str(workspace)])
        if branch:
            run_git(["checkout", "--quiet", "-B", branch, commit], cwd=workspace)
        else:
            run_git(["checkout", "--quiet", "--detach", commit], cwd=workspace)
        return mirror

    def keep(self, url: str, workspace: Path, sha: str, branch: str) -> None:
        """Keep commit `sha` of `workspace` (a checkout of `url`) in the mirror as the unpublished
        head of campaign `branch`, replacing the one kept before."""
        mirror = self.path_for(url)
        with self._locked(mirror):
            run_git(
                ["push", "--quiet", "--force", f"--receive-pack={SAFE_RECEIVE_PACK}",
                 str(mirror), f"{sha}:{UNPUBLISHED}{branch}"],
                workspace,
            )  # fmt: skip
        self._held.add((mirror, sha))

    def has(self, url: str, sha: str) -> bool:
        """True when the mirror of `url` holds commit `sha` (a kept change, or the forge's)."""
        mirror = self.path_for(url)
        if (mirror, sha) in self._held:
            return True
        if not (mirror / "HEAD").exists():
            return False
        try:
            run_git(["cat-file", "-e", f"{sha}^{{commit}}"], mirror)
        except GitError:
            return False
        self._held.add((mirror, sha))
        return True

    # An empty tree: comparing a commit with it lists the commit's files, and unlike `ls-tree`
    # the comparison takes git's `:(glob)` pathspecs.
    _EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

    def files_at(self, url: str, commit: str, pathspec: str) -> list[str]:
        """The files of `commit` in the mirror of `url` that match a git pathspec (no checkout;
        the mirror must hold the commit: `mirror` first)."""
        out = run_git(
            ["diff-tree", "-r", "--name-only", "--no-renames", "-z", self._EMPTY_TREE, commit,
             "--", pathspec],
            self.path_for(url),
        )  # fmt: skip
        return [p for p in out.split("\0") if p]

    def grep_at(self, url: str, commit: str, pattern: str, pathspec: str) -> list[str]:
        """The files of `commit` matching `pathspec` with a line matching the Perl-compatible
        regular expression `pattern` (`git grep -P`, no checkout)."""
        try:
            out = run_git(
                ["grep", "-P", "-I", "-l", "-z", "-e", pattern, commit, "--", pathspec],
                self.path_for(url),
            )
        except GitError as exc:
            if exc.code == 1 and not exc.stderr:  # git grep's "nothing matched"
                return []
            raise
        # Each name comes as `<commit>:<path>`.
        return [p.split(":", 1)[1] for p in out.split("\0") if p]

    @contextmanager
    def locked(self, url: str) -> Iterator[Path]:
        """Hold the lock of `url`'s mirror (as fetching it does) and give its path: for work
        that reads and writes several of its refs at once. Do not call `mirror` inside."""
        mirror = self.path_for(url)
        with self._locked(mirror):
            yield mirror
