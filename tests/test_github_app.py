"""GitHub App authentication: installation tokens minted from the app's key, renewed before they
expire, used by the API and git, and never stored.

Tested against GitHub's documented contract on tests/fake_github.py: the JWT is verified against
the app's public key, installation tokens expire (the fake's clock is moved, not waited for) and
an expired one is answered 401.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from resources.build import forge_registry
from resources.dagster_resources import forge_git_env
from resources.forges.base import ForgeError
from resources.forges.github import GitHubForge
from resources.forges.github_app import InstallationTokens
from resources.git import run_git
from resources.redact import redact
from tests.fake_github import FakeGitHub

FILES = {"app.py": "GREETING = 'OLD'\n"}
APP_ID, INSTALLATION = 4242, 77


def rsa_key() -> tuple[str, str]:
    """A new RSA key pair as PEM: (private, public)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return rsa_key()


@pytest.fixture
def fake(tmp_path: Path, keys):
    # The fake's own token is never given to the client: only app tokens reach it.
    with FakeGitHub("ghp_" + "0" * 36, tmp_path / "github", api_prefix="") as server:
        server.add_org("acme")
        server.add_repo("acme/app", FILES)
        server.enable_app(APP_ID, INSTALLATION, keys[1], token_ttl_s=600)
        yield server


def tokens_for(fake: FakeGitHub, private: str, **kw) -> InstallationTokens:
    return InstallationTokens(
        fake.base_url, APP_ID, INSTALLATION, private, clock=fake.app_now, sleep=lambda s: None, **kw
    )


def auth_headers(fake: FakeGitHub) -> list[str]:
    return [c.headers.get("authorization", "") for c in fake.calls]


def test_an_installation_token_is_minted_and_used_by_the_api_and_git(fake, keys, tmp_path):
    tokens = tokens_for(fake, keys[0])
    forge = GitHubForge(tokens, fake.base_url)
    resolved = forge.resolve("acme/app", None, "campaign/x")
    assert resolved.base_branch == "main"
    assert tokens.mints == 1 and len(fake.app_tokens) == 1
    (token,) = fake.app_tokens
    assert f"token {token}" in auth_headers(fake)  # the REST client sent it
    run_git(["clone", "--quiet", resolved.clone_url, str(tmp_path / "ws")], env=forge.git_env())
    assert (tmp_path / "ws" / "app.py").exists()
    assert tokens.mints == 1  # still valid: not minted again
    # The key is the scoped form `http.<web root>/.extraHeader`.
    assert forge.git_env()["GIT_CONFIG_KEY_0"] == f"http.{fake.web}/.extraHeader"


def test_the_token_is_renewed_before_it_expires_and_an_expired_one_is_refused(fake, keys):
    tokens = tokens_for(fake, keys[0])
    forge = GitHubForge(tokens, fake.base_url)
    forge.resolve("acme/app", None, "campaign/x")
    first = tokens.current()
    env_before = forge.git_env()
    live = forge_git_env(forge)  # what the repository cache of a run holds
    assert dict(live) == env_before
    fake.clock_shift_s = 200  # 400 s left of 600: still the same token
    assert tokens.current() == first
    fake.clock_shift_s = 330  # under 300 s left: renewed before it expires
    forge.resolve("acme/app", None, "campaign/x")
    second = tokens.current()
    assert second != first and tokens.mints == 2
    assert f"token {second}" in auth_headers(fake)[-2:]
    assert forge.git_env() != env_before  # git gets the current token too
    assert dict(live) == forge.git_env()  # and so does a holder of the env from before
    fake.clock_shift_s = 700  # the first token has expired on the server: refused
    headers = {"Authorization": f"token {first}"}
    assert requests.get(f"{fake.base_url}/repos/acme/app", headers=headers).status_code == 401
    # past the second's renewal point (300 s before its expiry): a third, and the call works
    assert forge.resolve("acme/app", None, "campaign/x").base_branch == "main"
    assert tokens.mints == 3
    # every token minted is masked wherever secrets are redacted
    text = f"first={first} second={second} now={tokens.current()}"
    assert redact(text) == "first=*** second=*** now=***"
    assert forge.redact(text) == "first=*** second=*** now=***"


def test_a_token_revoked_before_its_expiry_is_renewed_once_on_the_401(fake, keys):
    tokens = tokens_for(fake, keys[0])
    forge = GitHubForge(tokens, fake.base_url)
    forge.resolve("acme/app", None, "campaign/x")
    first = tokens.current()
    fake.clock_shift_s = 60
    del fake.app_tokens[first]  # revoked on GitHub
    assert forge.resolve("acme/app", None, "campaign/y").base_branch == "main"
    assert tokens.mints == 2 and tokens.current() != first
    # a fresh token that is refused too is an error, not a loop of mints
    fake.app_tokens.clear()
    with pytest.raises(ForgeError, match="401"):
        forge.resolve("acme/app", None, "campaign/z")
    assert tokens.mints == 2


def test_a_jwt_signed_with_another_key_is_refused_clearly(fake):
    other, _ = rsa_key()
    forge = GitHubForge(tokens_for(fake, other), fake.base_url)
    with pytest.raises(ForgeError) as err:
        forge.resolve("acme/app", None, "campaign/x")
    message = str(err.value)
    assert f"GitHub App {APP_ID} (installation {INSTALLATION})" in message
    assert "refused an installation token (401" in message
    assert "PRIVATE KEY" not in message and not fake.app_tokens
    assert fake.app_jwt_failures == ["InvalidSignatureError"]


def test_a_wrong_installation_and_a_bad_key_are_clear_errors(fake, keys):
    wrong = InstallationTokens(fake.base_url, APP_ID, 999, keys[0], clock=fake.app_now)
    with pytest.raises(ForgeError, match=r"installation 999\).*refused.*404"):
        wrong.current()
    bad = InstallationTokens(fake.base_url, APP_ID, INSTALLATION, "not a key", clock=fake.app_now)
    with pytest.raises(ForgeError, match="not a usable RSA private key") as err:
        bad.current()
    assert "not a key" not in str(err.value)


def test_the_registry_builds_an_app_forge_from_a_key_variable_or_file(platform, fake, keys):
    key_file = platform.root / "app.pem"
    key_file.write_text(keys[0])
    platform.use_forges(
        {
            "gh-app": {
                "kind": "github",
                "base_url": fake.base_url,
                "app": {"app_id": APP_ID, "installation_id": INSTALLATION,
                        "private_key_env": "GH_APP_KEY"},
            },
            "gh-file": {
                "kind": "github",
                "base_url": fake.base_url,
                "app": {"app_id": APP_ID, "installation_id": INSTALLATION,
                        "private_key_file": str(key_file)},
            },
            "gh-nokey": {
                "kind": "github",
                "base_url": fake.base_url,
                "app": {"app_id": APP_ID, "installation_id": INSTALLATION,
                        "private_key_env": "NO_SUCH_APP_KEY"},
            },
        },
        env={"GH_APP_KEY": keys[0]},
    )  # fmt: skip
    registry = forge_registry(platform.settings())
    for name in ("gh-app", "gh-file"):
        forge = registry.get(name)
        assert forge.resolve("acme/app", None, "campaign/x").base_branch == "main"
    with pytest.raises(ForgeError, match=r"'gh-nokey'.*NO_SUCH_APP_KEY"):
        registry.get("gh-nokey")
