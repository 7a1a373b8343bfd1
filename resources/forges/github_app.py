"""GitHub App authentication: installation tokens minted from the app's private key, in memory.

A GitHub App authenticates as itself with a JSON Web Token (RS256, signed with its private key,
`iss` the app id, valid for at most ten minutes) and exchanges it for an installation access
token (`POST /app/installations/{id}/access_tokens`), valid for an hour, which the REST API and
git over HTTPS take like a personal token. `InstallationTokens` mints one when first needed and
mints the next before the current one expires (5 minutes before `expires_at`, or half its life
for a shorter one), so that no request is sent with an expired token; a token GitHub refuses
before then (revoked) is renewed once on the 401 (`renew`, called by the transport), and the
request sent again. A git push refused with 401 is not retried.

The tokens live in this object only: never written to a file, a log or an error. Each is
registered with `resources.redact` as it is minted, so that every path to storage (logs, records,
the event log) masks it, and the GitHub forge redacts it from its own messages
(`TokenSource.secrets`). The private key is read from its variable or file when the forge is
built (resources/forges/registry.py) and kept in memory only.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

import jwt
import requests

from resources.forges.base import ForgeError
from resources.redact import register_secret

REFRESH_BEFORE_S = 300.0  # renew a token this long before it expires (GitHub's: 1 hour)
JWT_LIFETIME_S = 540  # GitHub accepts at most 10 minutes
JWT_BACKDATE_S = 60  # `iat` in the past, for clock drift (GitHub's own advice)
MINT_ATTEMPTS = 3
RENEW_GUARD_S = 10.0  # a token younger than this is not renewed after a 401


class InstallationTokens:
    """The installation access tokens of one GitHub App installation: `current()` is a valid
    one, minted on first use and renewed before it expires (a `TokenSource` for the forge).

    `api_url` is the REST API root; `clock` (seconds since the epoch) and `sleep` are injectable
    for tests."""

    def __init__(
        self,
        api_url: str,
        app_id: int,
        installation_id: int,
        private_key: str,
        *,
        refresh_before_s: float = REFRESH_BEFORE_S,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.api_url = api_url.rstrip("/")
        self.app_id = app_id
        self.installation_id = installation_id
        self._key = private_key
        self.refresh_before_s = refresh_before_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._sleep = sleep
        # Not secret, stable across renewals: keys the write budget GitHub keeps per installation.
        self.identity = f"github-app:{app_id}:{installation_id}"
        self._token: str | None = None
        self._renew_at = 0.0
        self._minted_at = 0.0
        self._minted: list[str] = []
        self._lock = threading.Lock()
        self.mints = 0  # how many tokens were minted (tests, stats)

    def __repr__(self) -> str:  # never the key or a token
        return f"InstallationTokens(app_id={self.app_id}, installation={self.installation_id})"

    @property
    def subject(self) -> str:
        """The installation, for messages."""
        return f"GitHub App {self.app_id} (installation {self.installation_id})"

    def app_jwt(self) -> str:
        """A JSON Web Token that authenticates as the app (RS256 with its private key)."""
        now = int(self._clock())
        claims = {"iat": now - JWT_BACKDATE_S, "exp": now + JWT_LIFETIME_S, "iss": str(self.app_id)}
        try:
            return jwt.encode(claims, self._key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            # The key's text is never in the message (it would be the secret itself).
            raise ForgeError(
                f"{self.subject}: the private key is not a usable RSA private key in PEM form "
                f"({type(exc).__name__})"
            ) from None

    def current(self) -> str:
        """A token valid now, minting a new one when the last is near its expiry."""
        with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                self._mint()
            assert self._token is not None
            return self._token

    def renew(self) -> bool:
        """Mint a new token now, because GitHub refused the current one (revoked before its
        expiry); False when the current one is only seconds old (several threads refused at
        once renew once, and a fresh token refused is not renewed in a loop)."""
        with self._lock:
            if self._token is not None and self._clock() - self._minted_at < RENEW_GUARD_S:
                return False
            self._mint()
            return True

    def secrets(self) -> list[str]:
        """Every token minted so far (an old one may still be in a message being redacted)."""
        with self._lock:
            return list(self._minted)

    def _mint(self) -> None:
        url = f"{self.api_url}/app/installations/{self.installation_id}/access_tokens"
        for attempt in range(1, MINT_ATTEMPTS + 1):
            answer = self._post(url)
            if answer is not None and answer.status_code == 201:
                self._keep(answer)
                return
            if answer is not None and answer.status_code < 500:
                raise ForgeError(f"{self.subject}: GitHub refused an installation token "
                                 f"({answer.status_code} {_message(answer)})")  # fmt: skip
            if attempt < MINT_ATTEMPTS:
                self._sleep(float(attempt))
        what = f"{answer.status_code} {_message(answer)}" if answer is not None else "no answer"
        raise ForgeError(f"{self.subject}: no installation token from {url} ({what})")

    def _post(self, url: str) -> requests.Response | None:
        headers = {
            "Authorization": f"Bearer {self.app_jwt()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "campaign-orchestrator",
        }
        try:
            return requests.post(url, headers=headers, timeout=self.timeout_s)
        except requests.RequestException:
            return None

    def _keep(self, answer: requests.Response) -> None:
        try:
            data = answer.json()
            token = str(data["token"])
            expires = datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            raise ForgeError(f"{self.subject}: GitHub's token answer is not understood") from None
        for form in _sent_forms(token):
            register_secret(form)
        now = self._clock()
        expires_at = expires.timestamp()
        lifetime = max(expires_at - now, 0.0)
        self._token = token
        self._minted_at = now
        self._renew_at = expires_at - min(self.refresh_before_s, lifetime / 2)
        self._minted.append(token)
        self.mints += 1


def _sent_forms(token: str) -> list[str]:
    """The token as sent: plain, and base64 in git's Basic header (`x-access-token:TOKEN`)."""
    return [
        token,
        base64.b64encode(f"x-access-token:{token}".encode()).decode(),
        base64.b64encode(token.encode()).decode(),
    ]


def _message(answer: requests.Response) -> str:
    try:
        data = answer.json()
    except ValueError:
        return answer.reason or ""
    return str(data.get("message", "")) if isinstance(data, dict) else ""


def app_forge(
    api_url: str,
    app_id: int,
    installation_id: int,
    private_key: str,
    *,
    concurrency: int = 4,
    interval: float = 0.0,
    per_minute: int = 80,
    per_hour: int = 500,
    max_concurrent: int = 20,
) -> Any:
    """The GitHub forge of one App installation (one per process and setting, so the write
    budget and the tokens are shared by every campaign on it)."""
    digest = hashlib.sha256(private_key.encode()).hexdigest()
    return _app_forge(
        api_url, app_id, installation_id, digest, concurrency, interval, per_minute, per_hour,
        max_concurrent, _KeyHolder(private_key),
    )  # fmt: skip


class _KeyHolder:
    """The private key, kept out of the cache's key (compared by its digest instead)."""

    def __init__(self, key: str):
        self.key = key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _KeyHolder)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<private key>"


@cache
def _app_forge(
    api_url: str,
    app_id: int,
    installation_id: int,
    key_digest: str,
    concurrency: int,
    interval: float,
    per_minute: int,
    per_hour: int,
    max_concurrent: int,
    holder: _KeyHolder,
) -> Any:
    from resources.forges.github import GitHubForge
    from resources.forges.github_pacing import WriteLimits

    tokens = InstallationTokens(api_url, app_id, installation_id, holder.key)
    return GitHubForge(
        tokens,
        api_url,
        write_concurrency=concurrency,
        write_interval_s=interval,
        limits=WriteLimits(per_minute, per_hour, max_concurrent),
    )
