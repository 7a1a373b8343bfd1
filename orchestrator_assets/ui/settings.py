"""The review UI's settings, from ORCHESTRATOR_UI_* environment variables."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator_assets.spec.errors import OrchestratorError


class UISettings(BaseSettings):
    """Where the review UI listens, who may use it, and where the Dagster UI is."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_UI_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="address to bind (loopback by default)")
    port: int = Field(default=3001, ge=0, le=65535, description="0: any free port")
    token: SecretStr | None = Field(
        default=None, description="shared token a person logs in with; required off loopback"
    )
    actor_header: str | None = Field(
        default=None,
        description="request header naming the authenticated user (set by a reverse proxy)",
    )
    dagster_url: str = Field(
        default="http://127.0.0.1:3000", description="the Dagster UI's base URL, for links"
    )
    dagster_location: str = Field(
        default="campaigns", description="the code location's name (workspace.yaml)"
    )
    live_interval_s: float = Field(
        default=2.0, gt=0, description="how often open pages look for new events"
    )

    @property
    def loopback(self) -> bool:
        """True when the UI is reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to anything
            return False

    def check_bind(self) -> None:
        """Refuse to serve beyond this machine without authentication."""
        if not self.loopback and self.token is None:
            raise OrchestratorError(
                f"refusing to listen on {self.host}: off the loopback address the review UI "
                "needs authentication; set ORCHESTRATOR_UI_TOKEN (people log in with it; a "
                "reverse proxy may also name the user in ORCHESTRATOR_UI_ACTOR_HEADER), or bind "
                "127.0.0.1"
            )

    def asset_group_url(self, group: str) -> str:
        """The Dagster UI page of a campaign's asset group."""
        base = self.dagster_url.rstrip("/")
        return f"{base}/locations/{self.dagster_location}/asset-groups/{group}"
