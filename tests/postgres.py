"""A real PostgreSQL server for the tests, from the Debian packages' binaries.

`initdb` in a temporary directory, password authentication, a loopback port; one server for the
whole test session (`postgres` fixture), a fresh database per test (`PostgresServer.database`).
PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user (made
with `useradd` if missing). Missing binaries skip the tests loudly (a failure under CI=true).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require


def _bin_dir() -> Path | None:
    """Where initdb, pg_ctl and pg_dump of one PostgreSQL version live (Debian keeps them out of
    PATH, under /usr/lib/postgresql/VERSION/bin)."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One running PostgreSQL server on 127.0.0.1 with a password-protected superuser."""

    user = "dagster"

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.password = "pg-" + secrets.token_hex(12)
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="campaign-pg-"))
        self.data = self.root / "data"
        self.os_user: str | None = None
        if os.geteuid() == 0:
            self.os_user = _service_user()
            os.chown(self.root, pwd.getpwnam(self.os_user).pw_uid, -1)

    def _cmd(self, *argv: str) -> list[str]:
        tool = [str(self.bin_dir / argv[0]), *argv[1:]]
        return ["runuser", "-u", self.os_user, "--", *tool] if self.os_user else tool

    def start(self) -> None:
        """initdb and start the server; waits until it accepts connections."""
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.os_user:
            os.chown(pwfile, pwd.getpwnam(self.os_user).pw_uid, -1)
        subprocess.run(
            self._cmd("initdb", "-D", str(self.data), "-U", self.user, "-E", "UTF8",
                      "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-sync", "--no-locale"),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        pwfile.unlink()
        # A test server: durability off (fsync), so the suite does not wait on the disk.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                      "-o", options, "-w", "-t", "60", "start"),
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server and remove its files."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                self._cmd("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                capture_output=True, timeout=60,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)

    def connect(self, dbname: str = "postgres"):
        """A psycopg2 connection (autocommit) to `dbname`."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                password=self.password, dbname=dbname)  # fmt: skip
        conn.autocommit = True
        return conn

    def database(self) -> str:
        """A new, empty database; its name."""
        name = "t_" + uuid.uuid4().hex[:12]
        conn = self.connect()
        try:
            conn.cursor().execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def env(self, dbname: str) -> dict[str, str]:
        """The DAGSTER_PG_* variables the instance config reads, for `dbname`."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": dbname,
        }

    def dump(self, dbname: str) -> bytes:
        """`pg_dump` of the database: every row the platform stored there, as SQL text."""
        proc = subprocess.run(
            [str(self.bin_dir / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", self.user, "--no-owner", dbname],
            env={**os.environ, "PGPASSWORD": self.password},
            capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        return proc.stdout


def _service_user() -> str:
    """The OS user the server runs as when the tests run as root."""
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             "postgres"],
            check=True, capture_output=True,
        )  # fmt: skip
    return "postgres"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (stopped and removed at its end)."""
    bin_dir = _bin_dir()
    require(
        bin_dir is not None,
        "PostgreSQL server binaries (initdb, pg_ctl) are not installed (`make system-deps`)",
    )
    require(
        os.geteuid() != 0 or shutil.which("runuser") is not None,
        "runuser is missing (PostgreSQL must run as a non-root user)",
    )
    server = PostgresServer(bin_dir)  # type: ignore[arg-type]
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        server.stop()
        out = (exc.stderr or b"").decode(errors="replace")
        pytest.fail(f"PostgreSQL did not start: {out}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_platform(platform, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch):
    """The `platform` fixture with its Dagster instance in a fresh PostgreSQL database
    (ORCHESTRATOR_STORAGE=postgres, as a user switches it on)."""
    from orchestrator_assets.spec.settings import Settings, ensure_dagster_home

    dbname = postgres.database()
    env = {"ORCHESTRATOR_STORAGE": "postgres", **postgres.env(dbname)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ensure_dagster_home(Settings())
    platform.env.update(env)
    platform.pg_database = dbname  # type: ignore[attr-defined]
    return platform
