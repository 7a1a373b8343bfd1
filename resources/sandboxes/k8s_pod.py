"""One pod as a place to run commands: API calls with retries, readiness, exec, workspace sync.

What both cluster providers share. The pod's container keeps running (it sleeps); every command
is a `pods/exec` call through the API server's websocket (`v5.channel.k8s.io`, falling back to
`v4.channel.k8s.io`): stdin on channel 0, stdout 1, stderr 2, and on channel 3 the
`metav1.Status` whose `details.causes[reason=ExitCode]` carries a non-zero exit code.

The workspace lives on the host (the platform runs git there) and is mirrored into the pod's
`/workspace` before a command and back after it, as tar streams over exec: only what changed since
the last sync travels. The pod is untrusted, and copy-back is built for that:

- the pod's workspace is listed NUL-separated (a name may hold a newline), with each entry's type,
  mode and size and whether its status changed after the command began (`find -cnewer`), so
  renames (which keep a file's mtime), deletions, mode changes, type changes and empty
  directories all reach the host;
- the pod's `.git` is never copied back, so a command cannot change what the platform's git sees
  there (the same rule as the read-only `.git` of the other providers);
- the tar that comes back is unpacked by `extract`, which takes only the names it asked for and
  never writes through a symlink (directories are opened with O_NOFOLLOW one by one, files
  created with O_EXCL|O_NOFOLLOW), so a link the pod made (`x -> .git`) arrives as a link and
  nothing is written where it points.

A command's environment goes in as files (`Pod.prepare`), never in the exec URL or a command line.
The image needs sh, GNU find (-printf, -cnewer), GNU tar (--verbatim-files-from) and coreutils'
timeout, as Debian's have them (images/Dockerfile.sandbox).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from resources.sandboxes.base import WORKSPACE, OutputCallback

log = logging.getLogger(__name__)

SYNC_MARK = "/tmp/.campaign-sync-mark"  # touched before a command: what is newer changed
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Before a command ($0 the sync mark, $1 a fresh folder): the command's environment arrives as a
# tar on stdin, one private file per variable, then the mark is touched.
PREPARE = 'umask 077 && mkdir "$1" && tar -x -f - -C "$1" && touch "$0"'
# The pod's workspace but .git, one NUL-terminated record per entry (a name may hold a newline):
# C when its status changed after the sync mark (content, mode, rename) else O, then its type,
# permission bits, size and path.
LIST = [
    "find", WORKSPACE, "-path", f"{WORKSPACE}/.git", "-prune",
    "-o", "!", "-path", WORKSPACE, "-cnewer", SYNC_MARK, "-printf", "C %y %m %s %P\\0",
    "-o", "!", "-path", WORKSPACE, "-printf", "O %y %m %s %P\\0",
]  # fmt: skip
# Copy-back ($0 the workspace, $1 a fresh folder): the NUL-separated names arrive as a file in a
# tar on stdin; tar reads them verbatim (no option, no wildcard), stores hard links as files and
# never recurses (directories come from the listing).
FETCH = (
    'umask 077 && mkdir "$1" && tar -x -f - -C "$1" && cd "$0" || exit 125; '
    "tar -c -f - --null --verbatim-files-from --no-recursion --hard-dereference "
    '--ignore-failed-read -T "$1/names"; rc=$?; rm -rf "$1"; exit $rc'
)
TAIL_LINES = 80
RETRIED = (429, 500, 502, 503, 504)
CHUNK = 64 * 1024  # bytes per stdin frame
ARGS_BUDGET = 64 * 1024  # bytes of paths per exec (far below ARG_MAX)
# Waiting reasons that will not fix themselves: report them at once instead of at the timeout.
# (ErrImagePull is not one: a registry's hiccup; the kubelet retries, then says BackOff.)
FATAL_WAITING = {
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
}

T = TypeVar("T")


class SandboxNotReady(RuntimeError):
    """A pod or claim did not become ready; the message names it and says why."""


def api_error(exc: Exception) -> str:
    """One line for an API error: status, reason and the server's message."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    message, reason = "", getattr(exc, "reason", "") or ""
    if body:
        with suppress(ValueError, TypeError, AttributeError):
            status_body = json.loads(body)
            message = status_body.get("message", "")
            reason = status_body.get("reason") or reason  # the API's word (Invalid, Forbidden)
    return f"{status} {reason}: {message}".strip(": ") if status else str(exc)[:300]


def retry_after(exc: Any) -> float | None:
    """The server's Retry-After (seconds), if it sent one."""
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    with suppress(TypeError, ValueError):
        return max(0.0, float(value)) if value is not None else None
    return None


def call(fn: Callable[..., T], *args: Any, attempts: int = 6, **kwargs: Any) -> T:
    """Call the API, retrying throttling (429, honouring Retry-After) and 5xx answers with
    backoff; anything else raises at once."""
    from kubernetes.client.exceptions import ApiException

    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status not in RETRIED or attempt == attempts - 1:
                raise
            delay = retry_after(exc)
            delay = min(0.25 * 2**attempt, 8.0) if delay is None else min(delay, 30.0)
            log.info("Kubernetes API answered %s; retrying in %.1fs", exc.status, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@dataclass
class ExecOutcome:
    """How one exec went: exit code, merged output tail, stdout bytes when captured."""

    exit_code: int
    tail: str
    stdout: bytes = b""
    timed_out: bool = False
    error: str = ""


def exit_status(raw: bytes | str) -> tuple[int, str]:
    """The exit code and message of the exec error channel's metav1.Status."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if not text.strip():
        return -1, "the exec stream ended without an exit status"
    try:
        status = json.loads(text)
    except ValueError:
        return -1, f"unreadable exit status: {text[:200]}"
    if status.get("status") == "Success":
        return 0, ""
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            with suppress(TypeError, ValueError):
                return int(cause.get("message")), ""
    message = status.get("message", "exec failed")
    # The runtime could not start the command at all (e.g. executable file not found).
    return (127 if "not found" in message else 126), message


def split_paths(paths: Sequence[str]) -> list[list[str]]:
    """Paths in batches small enough for one command line."""
    batches: list[list[str]] = [[]]
    size = 0
    for path in paths:
        if size + len(path) > ARGS_BUDGET and batches[-1]:
            batches.append([])
            size = 0
        batches[-1].append(path)
        size += len(path) + 1
    return [b for b in batches if b]


Entry = tuple[int, int, int]  # file type bits, mtime_ns, size


def snapshot(root: Path) -> dict[str, Entry]:
    """Every file, link and directory under `root` (relative path -> type, mtime, size)."""
    found: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            with suppress(FileNotFoundError):
                st = os.lstat(path)
                found[os.path.relpath(path, root)] = (
                    stat.S_IFMT(st.st_mode),
                    st.st_mtime_ns,
                    st.st_size,
                )
    return found


@dataclass
class Pod:
    """A running pod the platform execs commands in, and the host workspace it mirrors."""

    core: Any  # kubernetes.client.CoreV1Api
    namespace: str
    name: str
    container: str = "sandbox"
    synced: dict[str, Entry] = field(default_factory=dict)  # what the pod's workspace holds
    pushed_once: bool = False
    refused: list[str] = field(default_factory=list)  # what the last pull would not take

    def describe(self) -> str:
        """The pod's name for messages."""
        return f"pod {self.namespace}/{self.name}"

    # exec ------------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: Any = None,
        on_output: OutputCallback | None = None,
        timeout_s: float | None = None,
        capture_stdout: bool = False,
        cancelled: threading.Event | None = None,
    ) -> ExecOutcome:
        """Run `argv` in the pod through the exec API; `stdin` is a binary file to send (then
        closed). Output streams to `on_output` line by line; stdout is kept whole when
        `capture_stdout` (and then not streamed)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream

        # `stream` swaps the ApiClient's request method while it connects: a client of its own
        # keeps the other threads' REST calls (and other execs) off the websocket path.
        own = client.ApiClient(self.core.api_client.configuration)
        try:
            ws = stream(
                client.CoreV1Api(own).connect_get_namespaced_pod_exec,
                self.name,
                self.namespace,
                command=list(argv),
                container=self.container,
                stdin=stdin is not None,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
                binary=True,
            )
        except ApiException as exc:
            return ExecOutcome(-1, "", error=f"exec in {self.describe()} failed: {api_error(exc)}")
        except Exception as exc:  # the client fails the handshake with a bare error at times
            cause = exc.__context__ or exc
            return ExecOutcome(-1, "", error=f"exec in {self.describe()} failed: {cause}")
        finally:
            own.close()
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        pending = {1: b"", 2: b""}
        stdout = bytearray()
        deadline = time.monotonic() + timeout_s if timeout_s else math.inf

        def take(channel: int, data: bytes) -> None:
            if capture_stdout and channel == 1:
                stdout.extend(data)
                return
            pending[channel] += data
            *lines, pending[channel] = pending[channel].split(b"\n")
            for line in lines:
                text = line.decode("utf-8", "replace")
                tail.append(text + "\n")
                if on_output:
                    on_output(text)

        timed_out = False
        try:
            if stdin is not None:
                while chunk := stdin.read(CHUNK):
                    ws.write_stdin(chunk)
                # v5 can say "stdin is done"; under v4 the command must know its input's end.
                ws.close_channel(0)
            while ws.is_open():
                if time.monotonic() > deadline or (cancelled and cancelled.is_set()):
                    timed_out = True
                    break
                try:
                    ws.update(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
                except Exception as exc:  # the connection went away: keep what was read
                    log.debug("exec stream ended: %s", exc)
                    break
                for channel in (1, 2):
                    data = ws.read_channel(channel)
                    if data:
                        take(channel, data)
            for channel in (1, 2):
                data = ws.read_channel(channel)
                if data:
                    take(channel, data)
            raw_status = ws.read_channel(3)
        finally:
            with suppress(Exception):
                ws.close()
        for channel in (1, 2):
            if pending[channel]:
                take(channel, b"\n")
        if timed_out:
            return ExecOutcome(-1, "".join(tail)[-8000:], bytes(stdout), timed_out=True)
        code, message = exit_status(raw_status)
        if message:
            tail.append(f"[sandbox] {message}\n")
        return ExecOutcome(code, "".join(tail)[-8000:], bytes(stdout), error=message)

    # workspace sync --------------------------------------------------------------------------

    def push(self, workspace: Path) -> str | None:
        """Bring the pod's workspace up to date with the host's; None, or why it failed."""
        now = snapshot(workspace)
        removed = [p for p in self.synced if p not in now]
        removed = [p for p in removed if os.path.dirname(p) not in removed]
        for batch in split_paths([f"{WORKSPACE}/{p}" for p in removed]):
            result = self.run(["rm", "-rf", *batch], timeout_s=300)
            if result.exit_code != 0:
                return f"cannot remove files in {self.describe()}: {result.tail or result.error}"
        changed = sorted(p for p, entry in now.items() if self.synced.get(p) != entry)
        if changed:
            with tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024) as buffer:
                with tarfile.open(fileobj=buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for rel in changed:
                        _add(tar, workspace, rel)
                buffer.seek(0)
                result = self.run(
                    ["tar", "-x", "-f", "-", "-C", WORKSPACE], stdin=buffer, timeout_s=900
                )
            if result.exit_code != 0:
                return f"cannot copy the workspace into {self.describe()}: " + (
                    result.tail.strip() or result.error
                )
        self.synced = now
        return None

    def prepare(self, env: Mapping[str, str]) -> tuple[str, str | None]:
        """Before a command: write `env` into the pod as files (one per variable, in a fresh
        private folder under /tmp, sent as a tar on stdin, so no value is ever part of an exec
        URL or a command line) and touch the sync mark. Returns the folder, and None or why it
        failed."""
        bad = [name for name in env if not ENV_NAME.match(name)]
        if bad:
            return "", f"not a valid environment variable name: {bad[0]!r}"
        folder = f"/tmp/.campaign-env-{secrets.token_hex(8)}"
        with tempfile.SpooledTemporaryFile(max_size=4 * 1024 * 1024) as buffer:
            with tarfile.open(fileobj=buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name, value in env.items():
                    _add_bytes(tar, name, value.encode("utf-8", "surrogateescape"))
            buffer.seek(0)
            result = self.run(["sh", "-c", PREPARE, SYNC_MARK, folder], stdin=buffer, timeout_s=120)
        if result.exit_code != 0:
            why = result.tail.strip() or result.error
            return folder, f"cannot prepare {self.describe()}: {why}"
        return folder, None

    def pull(self, workspace: Path) -> str | None:
        """Bring the host's workspace up to date with what the last command did in the pod
        (everything but `.git`): deletions, renames, new and changed files, modes, symlinks and
        directories, empty ones too. None, or why it failed; what the pod offered that could
        not be taken safely is in `refused` (see `extract`)."""
        self.refused = []
        listing = self.run(LIST, capture_stdout=True, timeout_s=300)
        if listing.exit_code != 0:
            return f"cannot list the workspace in {self.describe()}: " + (
                listing.tail.strip() or listing.error
            )
        in_pod: dict[str, PodEntry] = {}
        for record in listing.stdout.split(b"\0"):
            if not record:
                continue
            fields = record.split(b" ", 4)
            if len(fields) != 5 or not fields[3].isdigit():
                return f"unreadable listing of the workspace in {self.describe()}"
            rel = os.fsdecode(fields[4])
            if safe_parts(rel) is None:
                self.refused.append(rel)
                continue
            with suppress(ValueError):
                in_pod[rel] = PodEntry(
                    fields[1].decode(), int(fields[2], 8), int(fields[3]), fields[0] == b"C"
                )
        on_host = host_entries(workspace)
        # What the pod no longer has, or has as another type, goes (deepest first; a folder
        # with what is in it).
        for rel in sorted(on_host, reverse=True):
            entry = in_pod.get(rel)
            if entry is not None and entry.kind == on_host[rel].kind:
                continue
            del on_host[rel]
            path = workspace / rel
            with suppress(FileNotFoundError):
                if stat.S_ISDIR(path.lstat().st_mode):
                    shutil.rmtree(path)
                else:
                    path.unlink()
        # Directories first, so that empty ones reach the host too.
        with _workspace_fd(workspace) as root_fd:
            for rel, entry in sorted(in_pod.items()):
                if entry.kind == "d" and rel not in on_host:
                    try:
                        os.close(_open_dir(root_fd, safe_parts(rel) or [], create=True))
                    except OSError as exc:
                        self.refused.append(f"{rel} ({exc.strerror or exc})")
        # A file comes back when its status changed after the mark (content, mode, a rename on
        # most file systems), or when the host lacks it or holds it otherwise (a rename keeps
        # the mtime, and a folder renamed does not touch what is in it).
        wanted = sorted(
            rel
            for rel, entry in in_pod.items()
            if entry.kind in ("f", "l")
            and (entry.changed or rel not in on_host or on_host[rel] != entry.host_view())
        )
        if wanted:
            problem = self._fetch(workspace, wanted)
            if problem:
                return problem
        self.synced = snapshot(workspace)
        return None

    def _fetch(self, workspace: Path, wanted: list[str]) -> str | None:
        """Copy `wanted` (relative paths) out of the pod's workspace into the host's. Their
        names go in as a file (NUL-separated, in a tar on stdin), not as arguments."""
        names = b"".join(b"./" + os.fsencode(rel) + b"\0" for rel in wanted)
        folder = f"/tmp/.campaign-pull-{secrets.token_hex(8)}"
        with tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024) as buffer:
            with tarfile.open(fileobj=buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                _add_bytes(tar, "names", names)
            buffer.seek(0)
            result = self.run(
                ["sh", "-c", FETCH, WORKSPACE, folder],
                stdin=buffer,
                capture_stdout=True,
                timeout_s=900,
            )
        if result.exit_code != 0:
            return f"cannot copy the change out of {self.describe()}: " + (
                result.tail.strip() or result.error
            )
        self.refused += extract(result.stdout, workspace, set(wanted))
        return None


@dataclass(frozen=True)
class PodEntry:
    """One entry of the pod's workspace listing."""

    kind: str  # find's %y: f, d, l, p, s, c, b
    mode: int  # permission bits
    size: int
    changed: bool  # its status changed after the sync mark

    def host_view(self) -> HostEntry:
        """What the host holds when it holds the same thing."""
        return HostEntry(self.kind, self.mode & stat.S_IXUSR, self.size if self.kind == "f" else 0)


@dataclass(frozen=True)
class HostEntry:
    """One entry of the host's workspace, as compared with the pod's."""

    kind: str
    exec_bit: int
    size: int  # of a regular file (0 for anything else)


def _kind(mode: int) -> str:
    """find's %y letter for a file type."""
    for test, letter in (
        (stat.S_ISREG, "f"), (stat.S_ISDIR, "d"), (stat.S_ISLNK, "l"), (stat.S_ISFIFO, "p"),
        (stat.S_ISSOCK, "s"), (stat.S_ISCHR, "c"), (stat.S_ISBLK, "b"),
    ):  # fmt: skip
        if test(mode):
            return letter
    return "?"


def host_entries(workspace: Path) -> dict[str, HostEntry]:
    """Everything in the host's workspace but its `.git` (never following a link)."""
    found: dict[str, HostEntry] = {}
    for dirpath, dirnames, filenames in os.walk(workspace):
        if dirpath == str(workspace):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            filenames = [f for f in filenames if f != ".git"]
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            with suppress(FileNotFoundError):
                st = os.lstat(path)
                kind = _kind(st.st_mode)
                found[os.path.relpath(path, workspace)] = HostEntry(
                    kind, st.st_mode & stat.S_IXUSR, st.st_size if kind == "f" else 0
                )
    return found


def safe_parts(rel: str) -> list[str] | None:
    """The components of a path the pod named, or None when it is not a plain relative path
    inside the workspace outside `.git` (absolute, empty, `.` or `..` parts)."""
    rel = rel.removeprefix("./")
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        return None
    return parts


class _workspace_fd:
    """The workspace directory opened (a context manager giving its descriptor)."""

    def __init__(self, workspace: Path):
        self.fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(root_fd: int, parts: Sequence[str], *, create: bool) -> int:
    """A descriptor of the directory `parts` under `root_fd`, walked one component at a time
    without following a symlink (a link on the way fails with ELOOP or ENOTDIR: whatever the
    pod made, nothing is written through it); missing directories are made when `create`."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _clear(parent_fd: int, name: str) -> None:
    """Remove `name` in the directory `parent_fd` (a directory with what it holds; a link
    itself, never what it points to); nothing when it is absent."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent_fd)
    else:
        os.unlink(name, dir_fd=parent_fd)


def extract(data: bytes, workspace: Path, wanted: set[str]) -> list[str]:
    """Unpack a tar from the pod into the workspace, and return what was refused.

    The pod is untrusted: only members named in `wanted` are taken, only regular files,
    symlinks and directories, none under `.git` or outside the workspace, and none through a
    symlink (each directory on the way is opened with O_NOFOLLOW, each file created with
    O_EXCL|O_NOFOLLOW after what stood there is removed). A symlink arrives as a symlink, as
    the other providers leave it; nothing is ever written where one points."""
    import io

    refused: list[str] = []
    with (
        _workspace_fd(workspace) as root_fd,
        tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar,
    ):
        for member in tar:
            rel = member.name.removeprefix("./")
            parts = safe_parts(rel)
            if parts is None or rel not in wanted:
                refused.append(member.name)
                continue
            if not (member.isreg() or member.issym() or member.isdir()):
                refused.append(f"{rel} (a {member.type!r} entry)")
                continue
            try:
                parent = _open_dir(root_fd, parts[:-1], create=True)
            except OSError as exc:
                refused.append(f"{rel} ({exc.strerror or exc})")
                continue
            name = parts[-1]
            try:
                if member.isdir():
                    with suppress(FileNotFoundError):
                        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                        if stat.S_ISDIR(st.st_mode):
                            continue
                    _clear(parent, name)
                    os.mkdir(name, 0o755, dir_fd=parent)
                    continue
                _clear(parent, name)
                if member.issym():
                    os.symlink(member.linkname, name, dir_fd=parent)
                    continue
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                source = tar.extractfile(member)
                with os.fdopen(os.open(name, flags, 0o600, dir_fd=parent), "wb") as out:
                    if source is not None:
                        shutil.copyfileobj(source, out)
                    # The pod's permission bits (the executable bit is what git keeps), and
                    # always readable and writable by the platform.
                    os.fchmod(out.fileno(), (member.mode & 0o777) | 0o600)
            except OSError as exc:
                refused.append(f"{rel} ({exc.strerror or exc})")
            finally:
                os.close(parent)
    return refused


def _add(tar: tarfile.TarFile, workspace: Path, rel: str) -> None:
    """Add one workspace entry; a git alternates file is replaced by the objects it points to
    (the mirror it names exists on the host, not in the pod)."""
    path = workspace / rel
    if rel == ".git/objects/info/alternates":
        for line in path.read_text().splitlines():
            source = Path(line.strip())
            if not line.strip() or not source.is_dir():
                continue
            for dirpath, _dirs, files in os.walk(source):
                for name in files:
                    full = Path(dirpath) / name
                    inner = full.relative_to(source)
                    if inner.parts[:1] == ("info",):
                        continue
                    _add_path(tar, full, f".git/objects/{inner}")
        return
    _add_path(tar, path, rel)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a private regular file holding `data`."""
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_path(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    with suppress(FileNotFoundError):
        info = tar.gettarinfo(str(path), arcname=arcname)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if info.isreg():
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
        else:
            tar.addfile(info)
