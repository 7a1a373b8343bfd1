"""What a user relies on from the local sandbox: workspace, isolation, timeouts and cleanup."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.sandboxes.base import ExecResult
from resources.sandboxes.local import LocalSandboxProvider
from tests.conftest import require


def make_provider(root: Path, isolation: str, **kw) -> LocalSandboxProvider:
    if isolation == "bwrap":
        require(shutil.which("bwrap") is not None, "bubblewrap (bwrap) is not installed")
    return LocalSandboxProvider(root, isolation=isolation, **kw)


@pytest.fixture(params=["bwrap", "none"])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> LocalSandboxProvider:
    """A provider with and without bubblewrap: behaviour that must not depend on isolation."""
    return make_provider(tmp_path / "sandboxes", request.param)


@pytest.fixture
def isolated(bwrap: None, tmp_path: Path) -> LocalSandboxProvider:
    return make_provider(tmp_path / "sandboxes", "bwrap")


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A host directory outside /tmp (which sandboxes see as an empty tmpfs), so it is visible."""
    try:
        path = Path(tempfile.mkdtemp(prefix="sandbox-test-", dir=Path.home()))
    except OSError as exc:
        pytest.skip(f"SKIPPED, NOT TESTED: no writable directory outside /tmp: {exc}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def unique_sleep() -> str:
    """A sleep duration no other process on the machine is using, to find it with pgrep."""
    return f"61.{os.getpid()}{time.monotonic_ns() % 100000}"


def survivors(pattern: str, wait_s: float = 3.0) -> str:
    """Processes whose command line matches `pattern`, after giving killed ones time to go."""
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
        if not out or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


# the workspace and the command ----------------------------------------------------------------


def test_command_runs_in_the_workspace_and_its_files_stay(provider: LocalSandboxProvider):
    with provider.open("cwd") as sb:
        result = sb.exec(["sh", "-c", "pwd; echo hello > out.txt"])
        assert result.ok, result.output_tail
        # under bubblewrap the workspace is always /workspace inside; without, its host path
        expected = "/workspace" if provider.isolated else str(sb.workspace)
        assert result.output_tail.strip() == expected
        assert (sb.workspace / "out.txt").read_text() == "hello\n"


def test_exit_code_and_output_tail_are_reported(provider: LocalSandboxProvider):
    lines: list[str] = []
    with provider.open("tail") as sb:
        result = sb.exec(["sh", "-c", "seq 1 200; exit 4"], on_output=lines.append)
    assert result.exit_code == 4 and not result.ok and not result.timed_out
    assert result.output_tail.splitlines() == [str(i) for i in range(121, 201)]
    assert lines == [str(i) for i in range(1, 201)]  # the callback sees every line
    assert result.argv == ["sh", "-c", "seq 1 200; exit 4"]


def test_argv_is_passed_without_a_shell(provider: LocalSandboxProvider):
    with provider.open("argv") as sb:
        result = sb.exec(["touch", "$(touch pwned)", "a b"])
        assert result.ok, result.output_tail
        assert sorted(p.name for p in sb.workspace.iterdir()) == ["$(touch pwned)", "a b"]


def test_environment_is_cleared_but_exec_env_is_passed(
    provider: LocalSandboxProvider, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    with provider.open("env") as sb:
        result = sb.exec(["env"], env={"MY_VAR": "visible"})
    assert result.ok, result.output_tail
    assert "MY_VAR=visible" in result.output_tail.splitlines()
    assert "SECRET_TOKEN" not in result.output_tail and "hunter2" not in result.output_tail


def test_missing_executable_gives_127_naming_it(tmp_path: Path):
    provider = make_provider(tmp_path / "sandboxes", "none")
    with provider.open("missing") as sb:
        result = sb.exec(["no-such-tool-xyz", "--flag"])
    assert result.exit_code == 127 and not result.ok
    assert "no-such-tool-xyz" in result.output_tail


def test_missing_executable_gives_127_under_bwrap(isolated: LocalSandboxProvider):
    with isolated.open("missing") as sb:
        result = sb.exec(["no-such-tool-xyz", "--flag"])
    assert "no-such-tool-xyz" in result.output_tail
    assert result.exit_code == 127


# isolation (bubblewrap) -----------------------------------------------------------------------


def test_writes_outside_the_workspace_do_not_reach_the_host(
    isolated: LocalSandboxProvider, host_dir: Path, tmp_path: Path
):
    victim = host_dir / "victim.txt"
    victim.write_text("original\n")
    other_tmp = tmp_path / "other"
    other_tmp.mkdir()
    with isolated.open("escape") as sb:
        sibling = sb.workspace.parent / "escape.txt"
        for target in (victim, other_tmp / "new.txt", sibling, Path("/etc/sandbox-escape")):
            result = sb.exec(["sh", "-c", f"echo changed > '{target}'"])
            assert target == sibling or not result.ok, f"write to {target} succeeded"
        assert not sibling.exists()
    assert victim.read_text() == "original\n"
    assert not (other_tmp / "new.txt").exists()
    assert not Path("/etc/sandbox-escape").exists()


def test_hidden_paths_are_empty_inside(host_dir: Path, bwrap: None, tmp_path: Path):
    secret_dir = host_dir / "data"
    secret_dir.mkdir()
    (secret_dir / "key.txt").write_text("s3cret\n")
    secret_file = host_dir / "token.txt"
    secret_file.write_text("t0ken\n")
    command = ["sh", "-c", f"ls -A '{secret_dir}'; cat '{secret_file}'"]

    visible = make_provider(tmp_path / "a", "bwrap")
    with visible.open("control") as sb:  # the same paths are readable when not hidden
        assert sb.exec(command).output_tail == "key.txt\nt0ken\n"

    hiding = make_provider(tmp_path / "b", "bwrap", hidden_paths=[secret_dir, secret_file])
    with hiding.open("hidden") as sb:
        listing = sb.exec(["ls", "-A", str(secret_dir)])
        content = sb.exec(["cat", str(secret_file)])
    assert listing.ok and listing.output_tail == ""  # an empty directory
    # the file is bound to /dev/null on a nodev mount: unreadable rather than empty, still hidden
    assert "t0ken" not in content.output_tail
    assert (secret_dir / "key.txt").read_text() == "s3cret\n"  # the host copy is untouched


def test_workspace_git_directory_is_read_only_inside(isolated: LocalSandboxProvider):
    with isolated.open("git") as sb:
        subprocess.run(["git", "init", "-q", str(sb.workspace)], check=True)
        hooks = sb.workspace / ".git" / "hooks"
        result = sb.exec(["sh", "-c", "echo 'echo owned' > .git/hooks/x"])
        assert not result.ok
        assert not (hooks / "x").exists()
        assert sb.exec(["sh", "-c", "echo ok > file.txt"]).ok  # the rest stays writable


@pytest.fixture
def tcp_port() -> Iterator[int]:
    """A TCP server listening on 127.0.0.1 in the test process."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.mark.parametrize("network", [False, True])
def test_network_only_when_asked_for(isolated: LocalSandboxProvider, tcp_port: int, network: bool):
    code = f"import socket; socket.create_connection(('127.0.0.1', {tcp_port}), timeout=5)"
    with isolated.open("net") as sb:
        result = sb.exec([sys.executable, "-c", code], network=network, timeout_s=20)
    assert result.ok is network, result.output_tail


# timeouts and cleanup ---------------------------------------------------------------------------


def test_timeout_is_reported_quickly(provider: LocalSandboxProvider):
    with provider.open("timeout") as sb:
        result = sb.exec(["sleep", "30"], timeout_s=1)
    assert result.timed_out and not result.ok
    assert 0.9 <= result.duration_s < 5
    assert result.describe_failure() == "`sleep 30` timed out after 1s"


def test_timeout_kills_the_whole_process_group(provider: LocalSandboxProvider):
    duration = unique_sleep()
    with provider.open("group") as sb:
        started = time.monotonic()
        result = sb.exec(["sh", "-c", f"sleep {duration} & sleep {duration}"], timeout_s=1)
        assert result.timed_out
        assert time.monotonic() - started < 5
        assert survivors(duration) == ""


def test_workspace_is_removed_when_the_block_exits(provider: LocalSandboxProvider):
    with provider.open("normal") as sb:
        assert sb.exec(["sh", "-c", "mkdir -p d && echo x > d/f"]).ok
        parent = sb.workspace.parent
        assert parent.parent == provider.root and parent.name.startswith("normal-")
    assert not parent.exists()


def test_workspace_is_removed_when_the_block_raises(provider: LocalSandboxProvider):
    with pytest.raises(RuntimeError, match="boom"), provider.open("raises") as sb:
        parent = sb.workspace.parent
        (sb.workspace / "f.txt").write_text("x")
        raise RuntimeError("boom")
    assert not parent.exists()


def test_close_all_from_another_thread_kills_the_command_and_removes_the_workspace(
    provider: LocalSandboxProvider,
):
    duration = unique_sleep()
    running = threading.Event()

    def cancel() -> None:
        if running.wait(timeout=10):
            provider.close_all()

    canceller = threading.Thread(target=cancel)
    canceller.start()
    with provider.open("cancel") as sb:
        started = time.monotonic()
        result = sb.exec(
            ["sh", "-c", f"echo started; sleep {duration}"],
            on_output=lambda line: running.set(),
            timeout_s=30,
        )
        elapsed = time.monotonic() - started
        canceller.join()  # close_all kills the command first, then removes the workspace
        assert not sb.workspace.parent.exists()
    assert elapsed < 5 and not result.ok and not result.timed_out
    assert result.exit_code == -9
    assert survivors(duration) == ""


# how failures are described ---------------------------------------------------------------------


def test_describe_failure_wording():
    def result(**kw) -> ExecResult:
        return ExecResult(argv=["make", "test"], duration_s=12.4, output_tail="", **kw)

    assert result(exit_code=-9, timed_out=True).describe_failure() == (
        "`make test` timed out after 12s"
    )
    assert result(exit_code=2).describe_failure() == "`make test` exited with code 2"
    assert result(exit_code=-9).describe_failure() == "`make test` was killed by signal 9"
    assert result(exit_code=0).ok and not result(exit_code=0, timed_out=True).ok


def test_platform_python_tools_work_even_from_a_hidden_location(bwrap: None, tmp_path: Path):
    """The default tools come from the platform's own environment, wherever it is installed
    (a project checked out under /tmp, which sandboxes see as an empty tmpfs, for one)."""
    import sys

    provider = make_provider(tmp_path / "sandboxes", "bwrap", hidden_paths=[Path(sys.prefix)])
    with provider.open("tools") as sb:
        result = sb.exec([sys.executable, "-c", "import pytest, sys; print(sys.prefix)"])
    assert result.ok, result.output_tail
    assert sys.prefix in result.output_tail
