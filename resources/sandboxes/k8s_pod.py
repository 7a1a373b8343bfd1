"""One pod as a place to run commands: exec over the API server's websocket, and the host
workspace mirrored in and out around each command.

What both cluster providers share. The pod's container keeps running (it sleeps); every command
is a `pods/exec` call through the API server's websocket (`v5.channel.k8s.io`, falling back to
`v4.channel.k8s.io`): stdin on channel 0, stdout 1, stderr 2, and on channel 3 the
`metav1.Status` whose `details.causes[reason=ExitCode]` carries a non-zero exit code.

The workspace lives on the host (the platform runs git there) and is mirrored into the pod's
`/workspace` before a command and back after it, as tar streams over exec (`k8s_copy`): only what
changed since the last sync travels. The pod is untrusted, and copy-back is built for that:

- the pod's workspace is listed NUL-separated (a name may hold a newline), with each entry's type,
  mode and size and whether its status changed after the command began (`find -cnewer`), so
  renames (which keep a file's mtime), deletions, mode changes, type changes and empty
  directories all reach the host;
- the pod's `.git` is never copied back, so a command cannot change what the platform's git sees
  there (the same rule as the read-only `.git` of the other providers);
- the tar that comes back is unpacked by `k8s_copy.extract`, which takes only the names it asked
  for and never writes through a symlink.

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
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resources.sandboxes.base import OUTPUT_CHARS, WORKSPACE, OutputCallback
from resources.sandboxes.k8s_api import RETRIED, SandboxNotReady, api_error, call
from resources.sandboxes.k8s_copy import (
    Entry,
    PodEntry,
    add_bytes,
    add_entry,
    extract,
    host_entries,
    open_dir,
    safe_parts,
    snapshot,
    split_paths,
    workspace_fd,
)
from resources.sandboxes.k8s_objects import FATAL_WAITING
from resources.sandboxes.output import OutputTail

# Importable from here as before (orchestrator_assets' sweep and CLI, older callers).
__all__ = [
    "FATAL_WAITING",
    "RETRIED",
    "ExecOutcome",
    "Pod",
    "SandboxNotReady",
    "api_error",
    "call",
    "exit_status",
    "extract",
]

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
CHUNK = 64 * 1024  # bytes per stdin frame
SPOOL_BYTES = 32 * 1024 * 1024  # a tar for the pod stays in memory up to this, then on disk


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


@dataclass
class Pod:
    """A running pod the platform execs commands in, and the host workspace it mirrors."""

    core: Any  # kubernetes.client.CoreV1Api
    namespace: str
    name: str
    container: str = "sandbox"
    synced: dict[str, Entry] = field(default_factory=dict)  # what the pod's workspace holds
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
        tail = OutputTail(on_output)
        stdout = bytearray()
        deadline = time.monotonic() + timeout_s if timeout_s else math.inf

        def take(channel: int, data: bytes) -> None:
            if capture_stdout and channel == 1:
                stdout.extend(data)
            else:
                tail.feed(data, channel)

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
        tail.finish(newline=True)  # a last line without a newline is a line all the same
        if timed_out:
            return ExecOutcome(-1, tail.text()[-OUTPUT_CHARS:], bytes(stdout), timed_out=True)
        code, message = exit_status(raw_status)
        if message:
            tail.note(f"[sandbox] {message}\n")
        return ExecOutcome(code, tail.text()[-OUTPUT_CHARS:], bytes(stdout), error=message)

    def send_tar(
        self,
        argv: Sequence[str],
        fill: Callable[[tarfile.TarFile], None],
        *,
        max_size: int = SPOOL_BYTES,
        **options: Any,
    ) -> ExecOutcome:
        """Run `argv` with a tar on its stdin, written by `fill` (`options` as for `run`)."""
        with tempfile.SpooledTemporaryFile(max_size=max_size) as buffer:
            with tarfile.open(fileobj=buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                fill(tar)
            buffer.seek(0)
            return self.run(argv, stdin=buffer, **options)

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

            def fill(tar: tarfile.TarFile) -> None:
                for rel in changed:
                    add_entry(tar, workspace, rel)

            result = self.send_tar(["tar", "-x", "-f", "-", "-C", WORKSPACE], fill, timeout_s=900)
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

        def fill(tar: tarfile.TarFile) -> None:
            for name, value in env.items():
                add_bytes(tar, name, value.encode("utf-8", "surrogateescape"))

        result = self.send_tar(
            ["sh", "-c", PREPARE, SYNC_MARK, folder], fill, max_size=4 * 1024 * 1024, timeout_s=120
        )
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
        with workspace_fd(workspace) as root_fd:
            for rel, entry in sorted(in_pod.items()):
                if entry.kind == "d" and rel not in on_host:
                    try:
                        os.close(open_dir(root_fd, safe_parts(rel) or [], create=True))
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
        result = self.send_tar(
            ["sh", "-c", FETCH, WORKSPACE, folder],
            lambda tar: add_bytes(tar, "names", names),
            capture_stdout=True,
            timeout_s=900,
        )
        if result.exit_code != 0:
            return f"cannot copy the change out of {self.describe()}: " + (
                result.tail.strip() or result.error
            )
        self.refused += extract(result.stdout, workspace, set(wanted))
        return None
