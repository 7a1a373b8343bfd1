"""GitLab project paths: `group/sub/name` from the ways a project is written, and the web root.

A GitLab project lives at any depth of groups (`group/subgroup/.../name`), so its path cannot be
told from a URL without knowing where the GitLab itself lives: the forge's `base_url`, its web
root (`https://gitlab.com`, or a self-managed `https://gitlab.example.com`, possibly under a
relative root such as `https://example.com/gitlab`). A target may be written as

- a web or clone URL on that host: `https://HOST/group/sub/name`, with or without `.git`, or a
  page of the project (`.../name/-/merge_requests/7`: the part from `/-/` on is dropped);
- an scp-like clone address on that host: `git@HOST:group/sub/name.git`;
- the bare path `group/sub/name` (at least two parts), taken to be on the forge's host.

A URL on another host is refused: it names a project of some other GitLab, which this forge's
token does not open.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

from resources.forges.base import ForgeError

# A GitLab path segment: letters, digits, '_', '-', '.', not starting with '-' or '.' (and a
# project cannot end in '.git' or '.atom'; '.git' is taken as the clone suffix here).
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SCP_LIKE = re.compile(r"^[\w.-]+@(?P<host>[\w.-]+):(?P<path>.+)$")


def web_root(base_url: str) -> str:
    """The web root `base_url` names, without a trailing slash (an `/api/v4` suffix, which a
    user may copy from the API docs, is dropped: the forge wants the web root)."""
    text = base_url.strip().rstrip("/")
    text = text.removesuffix("/api/v4")
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ForgeError(f"GitLab base_url {base_url!r}: expected https://HOST (the web root)")
    return text


def _display(url: str) -> str:
    """`url` without any user:password part, for messages."""
    parsed = urlparse(url)
    if parsed.scheme and "@" in parsed.netloc:
        return parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[1]).geturl()
    return url


def project_path(url: str, root: str) -> str:
    """`group/sub/name` of a project written as a URL on the GitLab at `root`, or as a path."""
    text = url.strip()
    base = urlparse(root)
    scp = _SCP_LIKE.match(text)
    if "://" in text:
        parsed = urlparse(text)
        host = parsed.netloc.rsplit("@", 1)[-1].lower()
        if host != base.netloc.lower():
            raise ForgeError(
                f"{_display(url)}: not on this GitLab ({root}); a named forge serves one host"
            )
        path = parsed.path
        prefix = base.path.rstrip("/")
        if prefix:
            if not (path == prefix or path.startswith(prefix + "/")):
                raise ForgeError(f"{_display(url)}: not under this GitLab's web root {root}")
            path = path[len(prefix) :]
    elif scp:
        if scp["host"].lower() != (base.hostname or "").lower():
            raise ForgeError(f"{url}: not on this GitLab ({root}); a named forge serves one host")
        path = scp["path"]
    else:
        path = text
    path = path.split("/-/", 1)[0]
    parts = [p for p in path.strip("/").split("/") if p]
    if parts:
        parts[-1] = parts[-1].removesuffix(".git")
    if len(parts) >= 2 and all(_SEGMENT.match(p) for p in parts):
        return "/".join(parts)
    raise ForgeError(
        f"{_display(url)}: not a GitLab project (expected https://HOST/GROUP/[SUBGROUP/...]NAME "
        "or GROUP/[SUBGROUP/...]NAME)"
    )
