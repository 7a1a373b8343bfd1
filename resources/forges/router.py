"""A campaign's forge: one `Forge` over the named forges its targets live on.

A campaign names its forge (`forge:`, else its profile's, else the platform's `default`) and a
target may name another. The router is what the campaign's assets, sensors and bulk commands get:
every verb whose first argument is a repository goes to the forge that repository lives on —
the forge its target names when the URL is a target's, else the forge whose web root the URL is
under, else the campaign's. Optional verbs a forge may have (`failed_check_logs(url, number)`,
`branch_checks(url, branch)`, `enable_auto_merge(url, number, method)`, …) are forwarded the same
way (`__getattr__`): `callable(getattr(router, "x", None))` is true when any of the campaign's
forges has `x`, and `supports(url, "x")` says whether the one `url` lives on does (calling it for
a repository whose forge lacks it is a ForgeError).

`git_env()` merges the forges' git credentials, each scoped to its web root
(`http.<web root>/.extraHeader`), renumbering the `GIT_CONFIG_KEY_n` of each; `stats` sums their
counters and `counting()` counts every forge's requests of the calling thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from resources.forges.base import (
    Forge,
    ForgeError,
    PullRequest,
    PullRequestDraft,
    PullRequestStatus,
    RepoLocation,
    ResolvedRepo,
)
from resources.forges.registry import DEFAULT, ForgeRegistry

_GIT_CONFIG = ("GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")


def merge_git_envs(envs: list[dict[str, str]]) -> dict[str, str]:
    """Several forges' `git_env()`s as one: their `GIT_CONFIG_KEY_n`/`VALUE_n` pairs renumbered
    into one list (a pair given twice is kept once), other variables as given (a later forge's
    win)."""
    pairs: list[tuple[str, str]] = []
    other: dict[str, str] = {}
    for env in envs:
        count = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
        for i in range(count):
            pair = (env.get(f"GIT_CONFIG_KEY_{i}", ""), env.get(f"GIT_CONFIG_VALUE_{i}", ""))
            if pair[0] and pair not in pairs:
                pairs.append(pair)
        other.update({k: v for k, v in env.items() if not k.startswith(_GIT_CONFIG)})
    if not pairs:
        return other
    merged = {**other, "GIT_CONFIG_COUNT": str(len(pairs))}
    for i, (key, value) in enumerate(pairs):
        merged[f"GIT_CONFIG_KEY_{i}"] = key
        merged[f"GIT_CONFIG_VALUE_{i}"] = value
    return merged


class _SummedTally:
    """The request tallies of several forges (`counting`) read as one."""

    def __init__(self, tallies: list[Any]):
        self._tallies = tallies

    def __getattr__(self, name: str) -> int:
        if name.startswith("_"):
            raise AttributeError(name)
        return sum(getattr(t, name, 0) for t in self._tallies)


class ForgeRouter:
    """The `Forge` of one campaign: each verb goes to the named forge the repository lives on.

    `routes` maps a target's repository (as the spec holds it) to its forge's name; `forge` is
    the campaign's forge name, for every other repository not under a known forge's web root.
    """

    def __init__(
        self, registry: ForgeRegistry, routes: dict[str, str] | None = None, forge: str = DEFAULT
    ):
        self.registry = registry
        self.routes = dict(routes or {})
        self.forge = forge
        registry.config(forge)  # an unknown name fails here, naming the known ones
        self._roots = sorted(
            ((c.web_root(), name) for name, c in registry.configs.items() if c.web_root()),
            key=lambda pair: -len(pair[0] or ""),
        )

    def __repr__(self) -> str:
        return f"ForgeRouter(forge={self.forge!r}, forges={self.names()!r})"

    @property
    def kind(self) -> str:
        """The campaign forge's kind (local, github, gitlab, …), for run statistics."""
        return self.registry.config(self.forge).kind

    def names(self) -> list[str]:
        """The names of the forges this campaign uses: its own, then its targets'."""
        return list(dict.fromkeys([self.forge, *self.routes.values()]))

    def name_for(self, url: str) -> str:
        """The name of the forge `url` lives on."""
        named = self.routes.get(url)
        if named is not None:
            return named
        under = [
            (len(root), name)
            for root, name in self._roots
            if root and (url == root or url.startswith(root.rstrip("/") + "/"))
        ]
        if not under:
            return self.forge
        # the deepest web root; of forges on the same one (a token and an App on github.com),
        # the campaign's own, then one its targets use
        deepest = max(length for length, _ in under)
        candidates = [name for length, name in under if length == deepest]
        return next((n for n in self.names() if n in candidates), candidates[0])

    def forge_for(self, url: str) -> Forge:
        """The client of the forge `url` lives on."""
        return self.registry.get(self.name_for(url))

    def kind_for(self, url: str) -> str:
        """The kind of the forge `url` lives on (local, github, gitlab, bitbucket_cloud, …)."""
        return self.registry.config(self.name_for(url)).kind

    def host_for(self, url: str) -> str:
        """Where `url` lives, for people: `NAME (HOST)`, e.g. `corp-gitlab (gitlab.example.com)`."""
        name = self.name_for(url)
        return f"{name} ({self.registry.config(name).host()})"

    def clients(self) -> list[Forge]:
        """The clients of every forge this campaign uses."""
        return [self.registry.get(name) for name in self.names()]

    # optional verbs --------------------------------------------------------------------------

    def supports(self, url: str, verb: str) -> bool:
        """Whether the forge `url` lives on has the verb `verb` (e.g. `enable_auto_merge`)."""
        return callable(getattr(self.forge_for(url), verb, None))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        # Only called for what the router does not define: an optional verb of some forges.
        if name.startswith("_") or name in ("registry", "routes", "forge"):
            raise AttributeError(name)
        if not any(callable(getattr(c, name, None)) for c in self.clients()):
            raise AttributeError(f"none of the campaign's forges has {name!r}")

        def forwarded(url: str, *args: Any, **kwargs: Any) -> Any:
            verb = getattr(self.forge_for(url), name, None)
            if not callable(verb):
                raise ForgeError(
                    f"{url}: the forge {self.name_for(url)!r} "
                    f"({self.registry.config(self.name_for(url)).kind}) cannot {name}"
                )
            return verb(url, *args, **kwargs)

        forwarded.__name__ = name
        forwarded.__doc__ = f"`{name}` of the forge the repository lives on."
        return forwarded

    # credentials and counters ------------------------------------------------------------------

    def git_env(self) -> dict[str, str]:
        """Every used forge's git credentials, each scoped to its web root, as one environment."""
        envs = []
        for client in self.clients():
            git_env = getattr(client, "git_env", None)
            if callable(git_env):
                envs.append(git_env())
        return merge_git_envs(envs)

    @property
    def stats(self) -> dict[str, float]:
        """The used forges' counters, summed by name."""
        total: dict[str, float] = {}
        seen: set[int] = set()
        for client in self.clients():
            stats = getattr(client, "stats", None)
            if id(client) in seen or not isinstance(stats, dict):
                continue
            seen.add(id(client))
            for key, value in stats.items():
                total[key] = round(total.get(key, 0) + value, 6)
        return total

    @contextmanager
    def counting(self) -> Iterator[_SummedTally]:
        """While inside, this thread's requests to every used forge that counts are counted."""
        with ExitStack() as stack:
            tallies = []
            seen: set[int] = set()
            for client in self.clients():
                counting = getattr(client, "counting", None)
                if callable(counting) and id(client) not in seen:
                    seen.add(id(client))
                    tallies.append(stack.enter_context(counting()))
            yield _SummedTally(tallies)

    # the Forge protocol ------------------------------------------------------------------------

    def locate(self, url: str) -> RepoLocation:
        """See `Forge.locate`."""
        return self.forge_for(url).locate(url)

    def resolve(self, url: str, base: str | None, branch: str) -> ResolvedRepo:
        """See `Forge.resolve`."""
        return self.forge_for(url).resolve(url, base, branch)

    def push_branch(
        self, url: str, workspace: Path, branch: str, sha: str, expected: str | None
    ) -> None:
        """See `Forge.push_branch`."""
        return self.forge_for(url).push_branch(url, workspace, branch, sha, expected)

    def find_pull_request(self, url: str, head: str) -> PullRequest | None:
        """See `Forge.find_pull_request`."""
        return self.forge_for(url).find_pull_request(url, head)

    def create_pull_request(self, url: str, draft: PullRequestDraft) -> PullRequest:
        """See `Forge.create_pull_request`."""
        return self.forge_for(url).create_pull_request(url, draft)

    def update_pull_request(self, url: str, number: int, draft: PullRequestDraft) -> PullRequest:
        """See `Forge.update_pull_request`."""
        return self.forge_for(url).update_pull_request(url, number, draft)

    def merge_pull_request(self, url: str, number: int, method: str = "merge") -> PullRequest:
        """See `Forge.merge_pull_request`."""
        return self.forge_for(url).merge_pull_request(url, number, method=method)

    def close_pull_request(self, url: str, number: int, comment: str | None = None) -> PullRequest:
        """See `Forge.close_pull_request`."""
        return self.forge_for(url).close_pull_request(url, number, comment)

    def reopen_pull_request(self, url: str, number: int) -> PullRequest:
        """See `Forge.reopen_pull_request`."""
        return self.forge_for(url).reopen_pull_request(url, number)

    def pull_request_status(self, url: str, number: int) -> PullRequestStatus:
        """See `Forge.pull_request_status`."""
        return self.forge_for(url).pull_request_status(url, number)

    def comment(self, url: str, number: int, body: str) -> str:
        """See `Forge.comment`."""
        return self.forge_for(url).comment(url, number, body)

    def discover(self, selector: Any) -> list[Any]:
        """The repositories `selector` selects on the campaign's forge (`discover:`)."""
        client = self.registry.get(self.forge)
        discover = getattr(client, "discover", None)
        if not callable(discover):
            config = self.registry.config(self.forge)
            raise ForgeError(
                f"the forge {self.forge!r} ({config.kind}) cannot discover repositories"
            )
        return discover(selector)


def campaign_router(spec: Any, registry: ForgeRegistry) -> ForgeRouter:
    """The router of a campaign spec over `registry` (`resources.build.forge_registry`): its
    `forge:` (else `default`), its targets' overrides."""
    campaign = getattr(spec, "forge", None) or DEFAULT
    routes = {t.repo: (getattr(t, "forge", None) or campaign) for t in getattr(spec, "targets", [])}
    return ForgeRouter(registry, routes, campaign)
