"""Copying files between the host's workspace and a pod's, as tar streams: what goes in (only
what changed since the last sync, git alternates resolved), and what comes back out of the
untrusted pod.

What comes back is unpacked by `extract`, which takes only the names it asked for and never
writes through a symlink: directories are opened with O_NOFOLLOW one by one, files created with
O_EXCL|O_NOFOLLOW, so a link the pod made (`x -> .git`) arrives as a link and nothing is written
where it points. Nothing under `.git` is ever taken from the pod (`safe_parts`).
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

ARGS_BUDGET = 64 * 1024  # bytes of paths per exec (far below ARG_MAX)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


def file_kind(mode: int) -> str:
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
                kind = file_kind(st.st_mode)
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


@contextmanager
def workspace_fd(workspace: Path) -> Iterator[int]:
    """The workspace directory opened, as a descriptor (closed when the context exits)."""
    fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def open_dir(root_fd: int, parts: Sequence[str], *, create: bool) -> int:
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
    refused: list[str] = []
    with (
        workspace_fd(workspace) as root_fd,
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
                parent = open_dir(root_fd, parts[:-1], create=True)
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


def add_entry(tar: tarfile.TarFile, workspace: Path, rel: str) -> None:
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


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a private regular file holding `data`."""
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
