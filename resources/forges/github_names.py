"""GitHub repository names: `OWNER/NAME` from the ways a repository is written, and web roots.

A target may be written as a web URL on any host (a GHE web host differs from its API host), a
clone URL, an scp-like `git@HOST:OWNER/NAME.git` or `OWNER/NAME`; the forge works on `OWNER/NAME`.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

from resources.forges.base import ForgeError

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:(?P<path>.+)$")


def _display(url: str) -> str:
    """`url` without any user:password part, for messages."""
    parsed = urlparse(url)
    if parsed.scheme and "@" in parsed.netloc:
        return parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[1]).geturl()
    return url


def repo_full_name(url: str) -> str:
    """`OWNER/NAME` of a repository given as a web or clone URL (any host), scp-like or as is."""
    text = url.strip()
    scp = _SCP_LIKE.match(text)
    if scp and "://" not in text:
        path = scp["path"]
    elif "://" in text:
        path = urlparse(text).path
    else:
        path = text
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) == 2:
        owner, name = parts[0], parts[1].removesuffix(".git")
        if _NAME.match(owner) and _NAME.match(name) and name not in (".", ".."):
            return f"{owner}/{name}"
    raise ForgeError(
        f"{_display(url)}: not a GitHub repository (expected https://HOST/OWNER/NAME or OWNER/NAME)"
    )


def web_root(api_url: str) -> str:
    """The web root of the GitHub whose REST API root is `api_url`, where `OWNER/NAME` lives:
    `https://api.github.com` -> `https://github.com`, a GHE server's `https://HOST/api/v3` ->
    `https://HOST`, GHE.com's `https://api.SUB.ghe.com` -> `https://SUB.ghe.com`."""
    parsed = urlparse(api_url.strip().rstrip("/"))
    netloc, path = parsed.netloc, parsed.path
    if path.endswith("/api/v3"):
        path = path.removesuffix("/api/v3")
    elif netloc.startswith("api."):
        netloc = netloc.removeprefix("api.")
    return f"{parsed.scheme or 'https'}://{netloc}{path}".rstrip("/")
