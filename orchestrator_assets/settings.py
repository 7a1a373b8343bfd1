"""Where the platform keeps things: settings read from the environment, with project defaults."""

from __future__ import annotations

import os
import shutil
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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
    branch_prefix: str = "campaign/"
    env_cache_max_mb: int = Field(default=5120, gt=0, description="environment cache size limit")
    forge: Literal["local", "github"] = Field(
        default="local", description="where target repositories and pull requests live"
    )
    github_api_url: str = Field(
        default="https://api.github.com", description="REST API root (GHE: https://HOST/api/v3)"
    )
    github_token_env: str = Field(
        default="GITHUB_TOKEN", description="the environment variable holding the GitHub token"
    )
    github_write_concurrency: int = Field(default=4, ge=1, description="parallel GitHub writes")
    github_write_interval_s: float = Field(
        default=1.0, ge=0, description="pause between GitHub writes (secondary rate limits)"
    )

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


def ensure_dagster_home(settings: Settings) -> Path:
    """Create DAGSTER_HOME with the project's dagster.yaml (if it has none) and export it."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
