"""Auto-merge: a campaign with `merge: {when: checks_green, method: squash}` merges each pull
request once it may.

Two ways, whichever comes first:

- at PR creation the forge is asked to merge it by itself when its requirements are met
  (`enable_auto_merge`, GitHub's auto-merge; an optional forge verb, used when the repository
  allows it and `merge.auto_merge` is on);
- the PR status sensor, on each status it reads, merges a PR that is ready: open and not a
  draft, its checks passed, no reviewer requests changes, and the forge says it can be merged
  (`mergeable`, and a `mergeable_state` that is not blocked — GitHub says `blocked` while a
  required review or check is missing).

The merge is the sensor's next observation of the PR (`merged`), so the report follows it there.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator_assets.spec.campaign import CampaignSpec
from resources.forges.base import Forge, ForgeError, PullRequestStatus

# GitHub's mergeable_state values that let a merge through (None: a forge that has no such word)
MERGEABLE_STATES = (None, "clean", "unstable", "has_hooks")


def not_ready(status: PullRequestStatus) -> str | None:
    """Why a pull request may not be merged yet (None: it may)."""
    if status.state != "open":
        return f"it is {status.state}"
    if status.checks != "success":
        return f"its checks are {status.checks}"
    if status.review == "changes_requested":
        return "a reviewer requested changes"
    if status.mergeable is not True:
        return "the forge does not say it can be merged"
    if status.mergeable_state not in MERGEABLE_STATES:
        return f"the forge says it is {status.mergeable_state}"
    return None


def merge_when_ready(
    spec: CampaignSpec,
    key: str,
    repo: str,
    status: PullRequestStatus,
    forge: Forge,
    log: Callable[[str], None] | None = None,
) -> PullRequestStatus:
    """Merge the target's pull request with the campaign's method when the campaign merges
    (`merge:`) and the PR is ready; the status after the merge (or `status` as it was)."""
    if spec.merge is None or not_ready(status) is not None:
        return status
    say = log or (lambda message: None)
    try:
        forge.merge_pull_request(repo, status.number, spec.merge.method)
        merged = forge.pull_request_status(repo, status.number)
    except ForgeError as exc:  # e.g. the base moved a moment ago: the next poll tries again
        say(f"{key}: merging pull request #{status.number} failed: {exc}")
        return status
    say(f"{key}: pull request #{status.number} merged ({spec.merge.method}): checks green")
    return merged


def enable_auto_merge(
    spec: CampaignSpec, key: str, repo: str, number: int, forge: Forge, log: Callable[[str], None]
) -> bool:
    """At PR creation: ask the forge to merge the PR by itself once it may (when the campaign
    merges and wants it, and the forge can); True when the forge agreed."""
    if spec.merge is None or not spec.merge.auto_merge:
        return False
    enable = getattr(forge, "enable_auto_merge", None)
    if not callable(enable):
        return False  # the PR status sensor merges it
    try:
        enabled = bool(enable(repo, number, spec.merge.method))
    except ForgeError as exc:
        log(f"{key}: auto-merge not enabled for #{number}: {exc}; the PR status sensor merges it")
        return False
    if enabled:
        log(f"{key}: auto-merge ({spec.merge.method}) enabled for pull request #{number}")
    else:
        log(f"{key}: no auto-merge in this repository; the PR status sensor merges #{number}")
    return enabled
