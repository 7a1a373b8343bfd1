"""Git as the platform runs it on the host: argv only, hooks and repository config disarmed.

Target repositories are untrusted. Every git command the platform runs goes through `run_git`,
which turns off hooks, fsmonitor and credential prompts, and ignores the user's and the system's
git config. A push to a repository on this machine spawns `receive-pack` inside the target, and
git clears `-c` settings for such local transports: pushes name `SAFE_RECEIVE_PACK` instead.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

from resources import cancel

HARDENING = [
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "protocol.file.allow=always",
    "-c", "advice.detachedHead=false",
    "-c", "init.defaultBranch=main",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",  # with gc.auto=0 a `maintenance run --auto` would do nothing
]  # fmt: skip


# The receive-pack a push runs in a local target repository: with that repository's hooks off.
SAFE_RECEIVE_PACK = "git -c core.hooksPath=/dev/null -c core.fsmonitor=false receive-pack"


class GitError(RuntimeError):
    """A git command failed; carries the command and git's own message."""

    def __init__(self, args: list[str], code: int, stderr: str):
        self.args_ = args
        self.code = code
        self.stderr = stderr.strip()
        super().__init__(f"git {' '.join(args[:3])} failed ({code}): {self.stderr[-500:]}")


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment git runs with: no user/system config, no prompts, no pagers."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GIT_PAGER": "cat",
        "GIT_OPTIONAL_LOCKS": "0",
    }
    if extra:
        env.update(extra)
    return env


@functools.lru_cache(maxsize=8)
def git_executable(path: str) -> str:
    """Where `git` is on the search path `path` (plain "git" when it is on none: running it then
    fails as it would have). Found once: a bare "git" makes every call try each directory of
    PATH in turn, a failed `execve` each, before the one that holds it."""
    return shutil.which("git", path=path) or "git"


def run_git(
    args: list[str],
    cwd: Path | None = None,
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 600,
) -> str:
    """Run `git ARGS` and return stdout; raise `GitError` on failure when `check`.

    Inside a worker's cancel scope (`resources.cancel`), cancelling it kills the command with
    everything it started and raises `GitError` (also for a command begun after the cancel),
    whatever `check` says; `timeout` (`subprocess.TimeoutExpired`) kills them all too.
    """
    scope = cancel.current()
    if scope is not None and scope.cancelled:
        raise GitError(args, -signal.SIGKILL, cancel.CANCELLED_MESSAGE)
    # Its own process group: a push or fetch runs helpers (remote-https, ssh, a local
    # receive-pack), and killing only git would leave them running, orphaned.
    environment = git_env(env)
    proc = subprocess.Popen(
        [git_executable(environment["PATH"]), *HARDENING, *args],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    with cancel.scope_watching(scope, proc):
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException:  # timeout, Ctrl-C: nothing of it may outlive the call
            cancel.kill_group(proc)
            proc.communicate()
            raise
    if scope is not None and scope.cancelled and proc.returncode != 0:
        raise GitError(args, proc.returncode, cancel.CANCELLED_MESSAGE)
    if check and proc.returncode != 0:
        raise GitError(args, proc.returncode, stderr)
    return stdout


def ls_remote(url: str) -> dict[str, str]:
    """The refs of a remote repository: `{"HEAD": sha, "refs/heads/main": sha, ...}`.

    Also maps `"HEAD->"` to the branch HEAD points at (the remote's default branch).
    """
    out = run_git(["ls-remote", "--symref", url], timeout=120)
    refs: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("ref: "):
            target, name = line[5:].split("\t", 1)
            if name == "HEAD":
                refs["HEAD->"] = target.removeprefix("refs/heads/")
            continue
        sha, _, name = line.partition("\t")
        refs[name] = sha
    return refs


def author_env(name: str, email: str) -> dict[str, str]:
    """Environment that makes `name <email>` the author and committer of a commit."""
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


# What git itself rewrites while the platform works in a repository (commits, fetches, resets):
# left out of `git_metadata_digest`, which is about what could make git run code or read the
# repository differently (config, commondir, hooks, info/attributes, anything new).
_GIT_STATE_DIRS = {"objects", "refs", "logs", "rebase-merge", "rebase-apply", "sequencer"}
_GIT_STATE_FILES = {
    "index", "HEAD", "ORIG_HEAD", "FETCH_HEAD", "MERGE_HEAD", "MERGE_MSG", "MERGE_MODE",
    "CHERRY_PICK_HEAD", "REVERT_HEAD", "AUTO_MERGE", "COMMIT_EDITMSG", "packed-refs", "shallow",
    "gc.pid", "gc.log",
}  # fmt: skip


def git_metadata_digest(workspace: Path) -> str:
    """A digest of the workspace's `.git` metadata: every file, link and directory in `.git`
    (or the `.git` file of a worktree) except objects, refs, logs, the index and the other state
    git rewrites itself. Equal before and after a sandbox ran means the sandbox changed nothing
    there that could make the platform's git run code (config, commondir, hooks, info/)."""
    # Plain strings, not Path objects: it runs four times a target, and building a Path for
    # every entry was most of its cost.
    root = os.path.join(os.fspath(workspace), ".git")
    digest = hashlib.sha256()

    def add(path: str, rel: str) -> None:
        st = os.lstat(path)
        kind = stat.S_IFMT(st.st_mode)
        digest.update(os.fsencode(rel) + f"\0{kind:o}\0{st.st_mode & 0o7777:o}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            digest.update(os.fsencode(os.readlink(path)))
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as handle:
                digest.update(handle.read())
        digest.update(b"\0")

    if not os.path.lexists(root):
        return digest.hexdigest()
    add(root, ".git")
    if os.path.islink(root) or not os.path.isdir(root):
        return digest.hexdigest()
    for dirpath, dirnames, filenames in os.walk(root):  # never follows links
        top = dirpath == root
        if top:
            dirnames[:] = [d for d in dirnames if d not in _GIT_STATE_DIRS]
        dirnames.sort()
        below = os.path.relpath(dirpath, root)
        for name in sorted([*dirnames, *filenames]):
            if name in _GIT_STATE_FILES or name.endswith(".lock"):
                continue
            add(os.path.join(dirpath, name), name if top else os.path.join(below, name))
    return digest.hexdigest()
