"""Where the platform keeps things: settings read from the environment, with project defaults."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator_assets.spec.errors import OrchestratorError
from resources.forges.base import BRANCH_PREFIX

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The variables the PostgreSQL storage reads (the same names as deploy/docker and deploy/k8s).
# The instance file names them with `env:`, so no host or password is ever written into it.
POSTGRES_ENV = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USER",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)
# First line of an instance file the platform writes (and so may rewrite when settings change).
MANAGED_HEADER = "# Written by the orchestrator from ORCHESTRATOR_STORAGE; edits are overwritten."


class Settings(BaseSettings):
    """Paths and identities, each overridable by an `ORCHESTRATOR_*` environment variable.

    The defaults keep everything under the project directory (git-ignored), so `make demo`,
    `make dev` and the CLI all see the same instance, forge and cache.
    """

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")

    campaigns_dir: Path = Field(default=PROJECT_ROOT / "campaigns")
    data_dir: Path = Field(default=PROJECT_ROOT / ".orchestrator")
    profiles_file: Path | None = None
    git_author_name: str = "Campaign Bot"
    git_author_email: str = "campaigns@localhost"
    env_cache_max_mb: int = Field(default=5120, gt=0, description="environment cache size limit")
    forge: Literal["local", "github"] = Field(
        default="local", description="where target repositories and pull requests live"
    )
    forges: Path | None = Field(
        default=None,
        description="the forges file naming code hosts besides the platform's own forge "
        "(ORCHESTRATOR_FORGES; default: <data dir>/forges.yaml when it exists)",
    )
    github_api_url: str = Field(
        default="https://api.github.com", description="REST API root (GHE: https://HOST/api/v3)"
    )
    github_token_env: str = Field(
        default="GITHUB_TOKEN",
        description="the environment variable holding the GitHub token (the forge resource's "
        "token is dg.EnvVar of it: read when a run starts, never stored)",
    )
    review_poll_interval_s: int = Field(
        default=30, ge=1, description="how often the review sensor looks for new decisions"
    )
    github_write_concurrency: int = Field(default=4, ge=1, description="parallel GitHub writes")
    github_write_interval_s: float = Field(
        default=0.0, ge=0, description="a fixed pause between GitHub writes on top of the limits"
    )
    github_writes_per_minute: int = Field(
        default=80, ge=1, description="GitHub writes per minute and token (secondary limit: 80)"
    )
    github_writes_per_hour: int = Field(
        default=500, ge=1, description="GitHub writes per hour and token (secondary limit: 500)"
    )
    github_max_concurrent_requests: int = Field(
        default=20, ge=1, description="GitHub API requests in flight (GitHub allows 100)"
    )
    storage: Literal["sqlite", "postgres"] = Field(
        default="sqlite",
        description="the Dagster instance's storage: SQLite under DAGSTER_HOME, or PostgreSQL "
        "(dagster-postgres) at DAGSTER_PG_HOST/PORT/USER/PASSWORD/DB",
    )

    @model_validator(mode="after")
    def _no_branch_prefix(self) -> Settings:
        # An earlier version listed a branch_prefix setting that nothing read; say so rather than
        # let someone believe their campaigns push elsewhere.
        if os.environ.get("ORCHESTRATOR_BRANCH_PREFIX", BRANCH_PREFIX) != BRANCH_PREFIX:
            raise OrchestratorError(
                "ORCHESTRATOR_BRANCH_PREFIX is not a setting: campaign branches always live "
                f"under {BRANCH_PREFIX!r} (a campaign may name its own branch under it with "
                "`branch:`)"
            )
        return self

    @cached_property
    def dagster_home(self) -> Path:
        """DAGSTER_HOME when set, else the project's own home (the one `make dev` uses)."""
        home = os.environ.get("DAGSTER_HOME")
        return Path(home) if home else PROJECT_ROOT / ".dagster_home"

    @property
    def forge_dir(self) -> Path:
        """Where the local forge keeps repositories it hosts itself."""
        return self.data_dir / "forge"

    @property
    def cache_dir(self) -> Path:
        """Where the repository mirror cache lives."""
        return self.data_dir / "cache"

    @property
    def env_cache_dir(self) -> Path:
        """Where cached environments (what setup produced) live."""
        return self.data_dir / "env-cache"

    @property
    def workspaces_dir(self) -> Path:
        """Where local sandboxes create their workspaces."""
        return self.data_dir / "workspaces"

    def resolved_profiles_file(self) -> Path:
        """The profiles file: the configured one, else `profiles.yaml` in the campaigns folder."""
        return self.profiles_file or self.campaigns_dir / "profiles.yaml"


def postgres_storage() -> dict[str, Any]:
    """Run, event log and schedule storage in PostgreSQL, each reading `DAGSTER_PG_*`."""
    db = {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
        # psycopg2 (dagster-postgres' own dependency) named explicitly: SQLAlchemy 2.1 made
        # psycopg 3 the default driver of a plain postgresql:// URL.
        "scheme": "postgresql+psycopg2",
    }
    return {
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": {"postgres_db": db},
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": {"postgres_db": db},
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": {"postgres_db": db},
        },
    }


def instance_config(settings: Settings) -> dict[str, Any]:
    """The instance's dagster.yaml as data: the project's (queue, concurrency pools) with the
    storage that `settings.storage` names."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    if settings.storage == "postgres":
        missing = [name for name in POSTGRES_ENV if name not in os.environ]
        if missing:
            raise OrchestratorError(
                f"ORCHESTRATOR_STORAGE=postgres needs {', '.join(missing)} in the environment "
                "(the PostgreSQL server's host, port, user, password and database)"
            )
        config.update(postgres_storage())
    else:
        # Dagster's SQLite event log with cheaper writes (assets/event_log.py), where Dagster
        # keeps its own: DAGSTER_HOME/history/runs.
        config["event_log_storage"] = {
            "module": "orchestrator_assets.assets.event_log",
            "class": "CampaignEventLogStorage",
            "config": {"base_dir": str(settings.dagster_home / "history" / "runs")},
        }
    return config


def _render(settings: Settings) -> str:
    return f"{MANAGED_HEADER}\n# storage: {settings.storage}\n" + yaml.safe_dump(
        instance_config(settings), sort_keys=False
    )


def ensure_dagster_home(settings: Settings) -> Path:
    """Create DAGSTER_HOME with an instance dagster.yaml for the configured storage, and export it.

    The platform writes the file (SQLite by default; PostgreSQL with ORCHESTRATOR_STORAGE=postgres)
    and rewrites it when the storage setting changes. A dagster.yaml written by someone else is
    left alone, except that asking for PostgreSQL over a file that does not use it is an error
    (rather than silently keeping state in SQLite).
    """
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    wanted = _render(settings)
    current = config.read_text() if config.exists() else None
    project_copy = (PROJECT_ROOT / "dagster.yaml").read_text()
    # Homes made before the file was generated hold a plain copy of the project's file.
    if current is None or current == project_copy or current.startswith(MANAGED_HEADER):
        if current != wanted:  # whole or not at all: another process may be reading it
            partial = config.with_name(f".dagster.yaml.{os.getpid()}")
            partial.write_text(wanted)
            partial.replace(config)
    elif settings.storage == "postgres" and "dagster_postgres" not in current:
        raise OrchestratorError(
            f"{config}: ORCHESTRATOR_STORAGE=postgres, but this dagster.yaml (not written by the "
            "orchestrator) keeps its storage elsewhere; remove it or add dagster_postgres storage"
        )
    os.environ["DAGSTER_HOME"] = str(home)
    return home
