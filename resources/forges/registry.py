"""Named forges: the code hosts a platform knows, read from the forges file, and their clients.

The forges file (`ORCHESTRATOR_FORGES`, else `<data dir>/forges.yaml` when it exists) names
code hosts besides the platform's own forge, which is always there as `default`
(`ORCHESTRATOR_FORGE`: local or GitHub)::

    forges:
      corp-gitlab: {kind: gitlab, base_url: https://gitlab.example.com, token_env: GITLAB_TOKEN}
      bb-cloud: {kind: bitbucket_cloud, token_env: BB_TOKEN, username_env: BB_USER}
      gh-app: {kind: github, app: {app_id: 1, installation_id: 2, private_key_env: GH_APP_KEY}}

A campaign names one with `forge:` (a target may override it). The file holds names of
environment variables, never a secret: a token is read from its variable when the forge's client
is first built, in the process that uses it. Clients are built lazily and kept per configuration
(and token), so that GitHub's write budget per host and token is shared by every user of it.

This module knows no platform settings: `resources/build.py` reads the forges file and the
settings (`forge_registry`) and hands the configs and `ForgeDefaults` to `ForgeRegistry`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from resources.forges.base import Forge, ForgeError
from resources.forges.github_names import web_root as github_web_root

DEFAULT = "default"  # the platform's own forge (Settings.forge), always known by this name


class _Strict(BaseModel):
    """A part of the forges file: an unknown key is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


ForgeKind = Literal["local", "github", "gitlab", "bitbucket_cloud", "bitbucket_dc"]

# Where each kind lives when the file says no `base_url` (Bitbucket Data Center has no default).
DEFAULT_BASE_URLS: dict[str, str] = {
    "github": "https://api.github.com",
    "gitlab": "https://gitlab.com",
    "bitbucket_cloud": "https://api.bitbucket.org/2.0",
}
BITBUCKET_CLOUD_API = "https://api.bitbucket.org/2.0"


class GitHubAppConfig(_Strict):
    """A GitHub App installation the forge authenticates as (instead of a token): its app id,
    the installation, and where its private key (PEM) is — a variable or a file."""

    app_id: int = Field(gt=0)
    installation_id: int = Field(gt=0)
    private_key_env: str | None = None
    private_key_file: Path | None = None

    @model_validator(mode="after")
    def _one_key(self) -> GitHubAppConfig:
        if (self.private_key_env is None) == (self.private_key_file is None):
            raise ValueError("give exactly one of private_key_env and private_key_file")
        return self

    def private_key(self, forge: str) -> str:
        """The app's private key, read now from its variable or file (a ForgeError if absent)."""
        if self.private_key_env is not None:
            key = os.environ.get(self.private_key_env, "")
            if not key:
                raise ForgeError(
                    f"forge {forge!r}: the GitHub App's private key variable "
                    f"{self.private_key_env} is not set (or empty)"
                )
            return key
        assert self.private_key_file is not None
        try:
            return self.private_key_file.expanduser().read_text()
        except OSError as exc:
            raise ForgeError(
                f"forge {forge!r}: cannot read the GitHub App's private key file "
                f"{self.private_key_file}: {exc.strerror or exc}"
            ) from None


class ForgeConfig(_Strict):
    """One named code host: its kind, where its API is, and which variables hold its secrets."""

    kind: ForgeKind
    base_url: str | None = Field(
        default=None,
        description="GitHub: the REST API root; GitLab and Bitbucket Data Center: the web root; "
        "Bitbucket Cloud: the API root (default per kind; Data Center has none)",
    )
    token_env: str | None = Field(default=None, description="the variable holding the token")
    username_env: str | None = Field(
        default=None, description="Bitbucket: the variable holding the user of an app password"
    )
    app: GitHubAppConfig | None = Field(default=None, description="GitHub App authentication")
    # GitHub's write limits (github_pacing.WriteLimits); unset: the platform's settings
    write_concurrency: int | None = Field(default=None, ge=1)
    write_interval_s: float | None = Field(default=None, ge=0)
    writes_per_minute: int | None = Field(default=None, ge=1)
    writes_per_hour: int | None = Field(default=None, ge=1)
    max_concurrent_requests: int | None = Field(default=None, ge=1)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> ForgeConfig:
        kind = self.kind
        if kind == "local":
            extra = [
                f for f in ("base_url", "token_env", "username_env", "app") if getattr(self, f)
            ]
            if extra:
                raise ValueError(f"the local forge takes no {', '.join(extra)}")
            return self
        if kind == "bitbucket_dc" and self.base_url is None:
            raise ValueError("base_url: Bitbucket Data Center needs its web root")
        if self.app is not None and kind != "github":
            raise ValueError("app: GitHub App authentication is for kind github only")
        if self.app is not None and self.token_env is not None:
            raise ValueError("give either token_env or app, not both")
        if self.app is None and self.token_env is None:
            raise ValueError("token_env: required (the variable holding the token)")
        if self.username_env is not None and not kind.startswith("bitbucket"):
            raise ValueError("username_env: only Bitbucket takes a username")
        limits = [f for f in _GITHUB_LIMITS if getattr(self, f) is not None]
        if limits and kind != "github":
            raise ValueError(f"{', '.join(limits)}: GitHub write limits are for kind github only")
        return self

    @property
    def api_url(self) -> str | None:
        """The base URL the forge's client is built with (the kind's default when unset)."""
        return self.base_url or DEFAULT_BASE_URLS.get(self.kind)

    def web_root(self) -> str | None:
        """Where the forge's repositories live on the web (`https://HOST[/PATH]`), which a
        target written `OWNER/NAME` is resolved against; None for the local forge."""
        api = self.api_url
        if api is None:
            return None
        if self.kind == "github":
            return github_web_root(api)
        if self.kind == "bitbucket_cloud":
            # The API is at api.bitbucket.org/2.0, the repositories at bitbucket.org.
            if api == BITBUCKET_CLOUD_API:
                return "https://bitbucket.org"
            return api.removesuffix("/2.0")
        return api

    def host(self) -> str:
        """The forge's web host for people (`gitlab.example.com`), `local` for the local forge."""
        root = self.web_root()
        return root.split("://", 1)[1] if root else "local"


_GITHUB_LIMITS = (
    "write_concurrency",
    "write_interval_s",
    "writes_per_minute",
    "writes_per_hour",
    "max_concurrent_requests",
)


class ForgesFile(_Strict):
    """The forges file: named code hosts (the name `default` is the platform's own forge)."""

    forges: dict[str, ForgeConfig] = Field(default_factory=dict)

    @field_validator("forges")
    @classmethod
    def _names(cls, value: dict[str, ForgeConfig]) -> dict[str, ForgeConfig]:
        if DEFAULT in value:
            raise ValueError(
                f"{DEFAULT!r} is the platform's own forge (ORCHESTRATOR_FORGE); choose another name"
            )
        return value


@dataclass(frozen=True)
class ForgeDefaults:
    """What a forge's config leaves to the platform: the author of the local forge's merges and
    GitHub's write limits (the platform's settings; a forge's config may override the limits)."""

    author_name: str = "Campaign Bot"
    author_email: str = "campaigns@localhost"
    write_concurrency: int = 4
    write_interval_s: float = 0.0
    writes_per_minute: int = 80
    writes_per_hour: int = 500
    max_concurrent_requests: int = 20


class ForgeRegistry:
    """The named forges of a platform (`default` and the forges file's) and their clients
    (`resources.build.forge_registry` makes the platform's).

    `source` is the forges file (for messages); `default_client` builds the default forge's
    client (the run's ForgeResource, whose token Dagster resolved); without it the default is
    built from its config like any other.
    """

    def __init__(
        self,
        configs: dict[str, ForgeConfig],
        defaults: ForgeDefaults | None = None,
        *,
        source: str | None = None,
        default_client: Callable[[], Forge] | None = None,
    ):
        self.configs = configs
        self.defaults = defaults or ForgeDefaults()
        self.source = source
        self._default_client = default_client
        self._clients: dict[str, Forge] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        """Every known forge name, `default` first."""
        return list(self.configs)

    def known(self) -> str:
        """The known names, for messages."""
        return ", ".join(self.names)

    def config(self, name: str | None) -> ForgeConfig:
        """The config of forge `name` (None: the default); a ForgeError naming the known ones."""
        name = name or DEFAULT
        found = self.configs.get(name)
        if found is None:
            where = f" (forges file: {self.source})" if self.source else " (no forges file)"
            raise ForgeError(f"unknown forge {name!r}; known: {self.known()}{where}")
        return found

    def get(self, name: str | None = None) -> Forge:
        """The client of forge `name` (None: the default), built once and kept."""
        name = name or DEFAULT
        config = self.config(name)
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                if name == DEFAULT and self._default_client is not None:
                    client = self._default_client()
                else:
                    client = build_client(name, config, self.defaults)
                self._clients[name] = client
            return client


def _secret(name: str, kind: str, variable: str, what: str = "token") -> str:
    value = os.environ.get(variable, "")
    if not value:
        raise ForgeError(
            f"forge {name!r} ({kind}) needs a {what}: set {variable} in the environment of the "
            "process that runs the campaign"
        )
    return value


def build_client(name: str, config: ForgeConfig, defaults: ForgeDefaults | None = None) -> Forge:
    """A client for forge `name` as `config` says, its secrets read from the environment now.

    Clients are kept per configuration and secret (module caches), so every user of one GitHub
    host and token shares its write budget."""
    defaults = defaults or ForgeDefaults()
    kind = config.kind
    if kind == "local":
        from resources.forges.local import LocalForge

        return LocalForge(merge_author=(defaults.author_name, defaults.author_email))
    api = config.api_url
    assert api is not None
    if kind == "github":
        from resources.dagster_resources import github_client

        def pick(own: float | None, default: float) -> float:
            return own if own is not None else default

        limits = {
            "concurrency": int(pick(config.write_concurrency, defaults.write_concurrency)),
            "interval": pick(config.write_interval_s, defaults.write_interval_s),
            "per_minute": int(pick(config.writes_per_minute, defaults.writes_per_minute)),
            "per_hour": int(pick(config.writes_per_hour, defaults.writes_per_hour)),
            "max_concurrent": int(
                pick(config.max_concurrent_requests, defaults.max_concurrent_requests)
            ),
        }
        if config.app is not None:
            from resources.forges.github_app import app_forge

            return app_forge(
                api,
                config.app.app_id,
                config.app.installation_id,
                config.app.private_key(name),
                **limits,
            )
        assert config.token_env is not None
        return github_client(api, _secret(name, kind, config.token_env), **limits)
    assert config.token_env is not None
    token = _secret(name, kind, config.token_env)
    if kind == "gitlab":
        from resources.forges.gitlab import GitLabForge  # type: ignore[import-not-found]

        return _cached(("gitlab", api, token), lambda: GitLabForge(token=token, base_url=api))
    from resources.forges.bitbucket import BitbucketForge  # type: ignore[import-not-found]

    username = _secret(name, kind, config.username_env, "username") if config.username_env else None
    flavor = "cloud" if kind == "bitbucket_cloud" else "dc"
    return _cached(
        ("bitbucket", flavor, api, token, username or ""),
        lambda: BitbucketForge(flavor=flavor, token=token, base_url=api, username=username),
    )


_built: dict[tuple[str, ...], Forge] = {}
_built_lock = threading.Lock()


def _cached(key: tuple[str, ...], make: Callable[[], Forge]) -> Forge:
    """One client per key for the process (a forge's pacing and caches are per client)."""
    with _built_lock:
        client = _built.get(key)
        if client is None:
            client = _built[key] = make()
        return client
