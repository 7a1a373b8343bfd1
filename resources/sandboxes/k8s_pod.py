"""One pod as a place to run commands: API calls with retries, readiness, exec, workspace sync.

What both cluster providers share. The pod's container keeps running (it sleeps); every command
is a `pods/exec` call through the API server's websocket (`v5.channel.k8s.io`, falling back to
`v4.channel.k8s.io`): stdin on channel 0, stdout 1, stderr 2, and on channel 3 the
`metav1.Status` whose `details.causes[reason=ExitCode]` carries a non-zero exit code.

The workspace lives on the host (the platform runs git there) and is mirrored into the pod's
`/workspace` before a command and back after it, as tar streams over exec: only what changed since
the last sync travels. The pod's `.git` is never copied back, so a command cannot change what the
platform's git sees there (the same rule as the read-only `.git` of the other providers).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import stat
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from resources.sandboxes.base import WORKSPACE, OutputCallback

log = logging.getLogger(__name__)

SYNC_MARK = "/tmp/.campaign-sync-mark"  # touched before a command: what is newer changed
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

    def pull(self, workspace: Path) -> str | None:
        """Bring the host's workspace up to date with what the last command did in the pod
        (everything but `.git`); None, or why it failed."""
        listing = self.run(
            ["find", WORKSPACE, "-path", f"{WORKSPACE}/.git", "-prune", "-o", "-print"],
            capture_stdout=True,
            timeout_s=300,
        )
        changed = self.run(
            [
                "find",
                WORKSPACE,
                "-path",
                f"{WORKSPACE}/.git",
                "-prune",
                "-o",
                "!",
                "-type",
                "d",
                "-newer",
                SYNC_MARK,
                "-print",
            ],
            capture_stdout=True,
            timeout_s=300,
        )
        for result in (listing, changed):
            if result.exit_code != 0:
                return f"cannot list the workspace in {self.describe()}: " + (
                    result.tail.strip() or result.error
                )
        prefix = WORKSPACE + "/"
        in_pod = {
            line[len(prefix) :]
            for line in listing.stdout.decode("utf-8", "replace").splitlines()
            if line.startswith(prefix)
        }
        on_host = snapshot(workspace)
        for rel in sorted(on_host, reverse=True):
            if rel == ".git" or rel.startswith(".git/") or rel in in_pod:
                continue
            path = workspace / rel
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with suppress(FileNotFoundError):
                    path.unlink()
        # New files come with the tar below (their directories with them); a new directory
        # left empty is not carried over: git does not see one either.
        names = [
            "./" + line[len(prefix) :]
            for line in changed.stdout.decode("utf-8", "replace").splitlines()
            if line.startswith(prefix)
        ]
        for batch in split_paths(names):
            result = self.run(
                ["tar", "-c", "-f", "-", "-C", WORKSPACE, *batch],
                capture_stdout=True,
                timeout_s=900,
            )
            if result.exit_code != 0:
                return f"cannot copy the change out of {self.describe()}: " + (
                    result.tail.strip() or result.error
                )
            _extract(result.stdout, workspace)
        self.synced = snapshot(workspace)
        return None


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


def _extract(data: bytes, workspace: Path) -> None:
    """Unpack a tar from the pod into the workspace, refusing anything that would land outside
    it or in `.git` (the pod is untrusted)."""
    import io

    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        for member in tar:
            name = os.path.normpath(member.name)
            if name == ".git" or name.startswith(".git/") or name.startswith(".."):
                continue
            target = workspace / name
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                target.unlink()
            tar.extract(member, workspace, filter="data")
