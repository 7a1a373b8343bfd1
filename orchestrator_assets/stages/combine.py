"""One pull request per repository for a campaign's workspaces
(`workspaces: {pull_requests: per_repository}`).

Each workspace is still a target of its own: its change, verifiers and review are its own, and
its commit is kept in the mirror cache like any change. What is published differs: when a
workspace's change passes its gates it joins the repository's *accepted* set (a ref per
workspace, `refs/orchestrator/accepted/<campaign branch>/<dir>`, in the mirror), and the
repository's campaign branch becomes one commit on the base holding every accepted change of that
base (their commits merged with `git merge-tree`: each stays inside its own directory, so they
never conflict). A rejected workspace, or one whose change went away, leaves the set and the
branch is pushed again without it; the pull request closes only when the set is empty.
"""

from __future__ import annotations

import threading

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.target import Target
from orchestrator_assets.spec.workspaces import dir_slug
from orchestrator_assets.stages.records import ChangeRecord
from orchestrator_assets.stages.workbench import Log, Workbench, quiet
from resources.forges.base import ForgeError, PullRequest, PullRequestDraft
from resources.git import GitError, author_env, run_git

ACCEPTED = "refs/orchestrator/accepted/"
COMBINED = "refs/orchestrator/combined/"  # the combined commit, kept until it is published


def combines(spec: CampaignSpec, target: Target) -> bool:
    """True when the target's change is published combined with its repository's others."""
    return spec.pr_branch(target) != spec.branch_for(target)


def _siblings(spec: CampaignSpec, target: Target) -> dict[str, str]:
    """The workspaces of the target's repository in the campaign now: ref name -> directory."""
    return {
        dir_slug(t.path): t.path
        for t in spec.targets
        if t.repo == target.repo and t.base == target.base and t.path
    }


def _accepted(mirror, spec: CampaignSpec, target: Target, base_sha: str) -> dict[str, str]:
    """The accepted changes of the repository made on `base_sha`: directory -> head sha."""
    prefix = f"{ACCEPTED}{spec.branch_name}/"
    listing = run_git(["for-each-ref", "--format=%(refname) %(objectname)", prefix], mirror)
    siblings = _siblings(spec, target)
    found: dict[str, str] = {}
    for line in listing.splitlines():
        ref, sha = line.split(" ", 1)
        directory = siblings.get(ref.removeprefix(prefix))
        if directory is None:
            continue  # a workspace no longer in the campaign
        parent = run_git(["rev-parse", f"{sha}^"], mirror).strip()
        if parent == base_sha:  # a change made on another base waits for its next run
            found[directory] = sha
    return dict(sorted(found.items()))


def _combine(mirror, base_sha: str, heads: list[str], spec: CampaignSpec, bench) -> str:
    """One commit on `base_sha` holding every change of `heads` (each a commit on it)."""
    tree = run_git(["rev-parse", f"{heads[0]}^{{tree}}"], mirror).strip()
    commit = heads[0]
    for head in heads[1:]:
        # Both sides are commits on the base: merge-tree finds it as their merge base.
        tree = run_git(["merge-tree", "--write-tree", commit, head], mirror).split()[0]
        commit = _commit_tree(mirror, tree, base_sha, "combining", bench)
    return _commit_tree(mirror, tree, base_sha, _message(spec, len(heads)), bench)


def _commit_tree(mirror, tree: str, parent: str, message: str, bench: Workbench) -> str:
    env = {
        **author_env(*bench.author),
        # A fixed date: the same changes combine into the same commit on every run.
        "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
    }
    return run_git(["commit-tree", tree, "-p", parent, "-m", message], mirror, env=env).strip()


def _message(spec: CampaignSpec, count: int) -> str:
    summary = spec.description.strip().splitlines()[0] if spec.description.strip() else ""
    return (
        f"{spec.name}: {summary or 'automated change'}\n\nCampaign: {spec.name}\n"
        f"Workspaces: {count}\n"
    )


def publish_combined(
    spec: CampaignSpec, target: Target, change: ChangeRecord, bench: Workbench, log: Log = quiet
) -> str | None:
    """Add the target's change (which passed its gates) to its repository's accepted set and
    push the combined commit to the repository's campaign branch; returns the pushed sha, or
    None when the branch already holds it."""
    assert change.head_sha and change.base_sha and change.clone_url and target.path
    branch = spec.pr_branch(target)
    try:
        with bench.cache.locked(change.clone_url) as mirror:
            if not bench.cache.has(change.clone_url, change.head_sha):
                raise ForgeError(
                    f"{target.repo}: the change {change.head_sha[:12]} is not in this machine's "
                    "repository cache; run its change again (`orchestrator run --no-cache`)"
                )
            ref = f"{ACCEPTED}{spec.branch_name}/{dir_slug(target.path)}"
            run_git(["update-ref", ref, change.head_sha], mirror)
            now = bench.forge.resolve(target.repo, change.base_branch, branch)
            return _push(spec, target, change.base_sha, now.branch_sha, mirror, bench, log)
    except GitError as exc:
        raise ForgeError(f"{target.repo}: cannot combine the workspaces' changes: {exc}") from None


def _push(
    spec: CampaignSpec,
    target: Target,
    base_sha: str,
    branch_sha: str | None,
    mirror,
    bench: Workbench,
    log: Log,
) -> str | None:
    """Push the combination of the changes accepted on `base_sha` to the repository's campaign
    branch, now at `branch_sha` (the mirror locked)."""
    accepted = _accepted(mirror, spec, target, base_sha)
    if not accepted:
        return None
    combined = _combine(mirror, base_sha, list(accepted.values()), spec, bench)
    if combined == branch_sha:
        return None
    branch = spec.pr_branch(target)
    run_git(["update-ref", f"{COMBINED}{branch}", combined], mirror)
    bench.forge.push_branch(target.repo, mirror, branch, combined, branch_sha)
    log(f"{target.key}: published {combined[:12]} to {branch}, combining "
        f"{', '.join(accepted)}")  # fmt: skip
    return combined


def accepted_note(spec: CampaignSpec, target: Target, change: ChangeRecord, bench) -> str:
    """For the pull request's body: the workspaces it combines (empty when not combining)."""
    if not combines(spec, target) or not change.clone_url or not change.base_sha:
        return ""
    try:
        mirror = bench.cache.path_for(change.clone_url)
        dirs = set(_accepted(mirror, spec, target, change.base_sha))
    except GitError:
        return ""
    if not dirs:
        return ""
    listed = "\n".join(f"- `{d}/`" for d in sorted(dirs))
    return f"\n\nThis pull request combines the campaign's changes of these workspaces:\n{listed}\n"


def withdraw(spec: CampaignSpec, target: Target, bench: Workbench, log: Log = quiet) -> bool:
    """Take the target's change out of its repository's combined branch (rejected, or gone);
    True when other workspaces' changes remain in it (its pull request stays open), False when
    none do (the caller closes the pull request)."""
    if not target.path:
        return False
    branch = spec.pr_branch(target)
    try:
        now = bench.forge.resolve(target.repo, target.base, branch)
        with bench.cache.locked(now.clone_url) as mirror:
            run_git(["update-ref", "-d", f"{ACCEPTED}{spec.branch_name}/{dir_slug(target.path)}"],
                    mirror)  # fmt: skip
            if now.branch_sha is None or not bench.cache.has(now.clone_url, now.branch_sha):
                return False
            # The branch's one commit sits on the base its changes were made on.
            base = run_git(["rev-parse", f"{now.branch_sha}^"], mirror).strip()
            if not _accepted(mirror, spec, target, base):
                return False
            _push(spec, target, base, now.branch_sha, mirror, bench, log)
    except GitError as exc:
        raise ForgeError(f"{target.repo}: cannot combine the workspaces' changes: {exc}") from None
    log(f"{target.key}: left the combined pull request of {target.repo}")
    return True


_OPENING: dict[str, threading.Lock] = {}
_OPENING_GUARD = threading.Lock()


def _pr_lock(repo: str) -> threading.Lock:
    """One lock per repository for writing its combined pull request (its workspaces deliver
    in parallel threads)."""
    with _OPENING_GUARD:
        return _OPENING.setdefault(repo, threading.Lock())


def _noted(
    spec: CampaignSpec, target: Target, draft: PullRequestDraft, change: ChangeRecord, bench
) -> PullRequestDraft:
    """The draft with the workspaces the combined branch holds now added to its body."""
    note = accepted_note(spec, target, change, bench)
    return draft.model_copy(update={"body": draft.body + note}) if note else draft


def open_pull_request(
    spec: CampaignSpec,
    target: Target,
    draft: PullRequestDraft,
    change: ChangeRecord,
    bench: Workbench,
) -> PullRequest:
    """Open the target's pull request; for a workspace combined into its repository's pull
    request, the one a sibling workspace opened meanwhile is updated instead of opening a
    second, and the body lists the workspaces the branch holds when it is written."""
    if not combines(spec, target):
        return bench.forge.create_pull_request(target.repo, draft)
    with _pr_lock(target.repo):
        draft = _noted(spec, target, draft, change, bench)
        existing = bench.forge.find_pull_request(target.repo, draft.head)
        if existing is not None and existing.state == "open":
            return bench.forge.update_pull_request(target.repo, existing.number, draft)
        return bench.forge.create_pull_request(target.repo, draft)


def update_pull_request(
    spec: CampaignSpec,
    target: Target,
    number: int,
    draft: PullRequestDraft,
    change: ChangeRecord,
    bench: Workbench,
) -> PullRequest:
    """Rewrite the target's pull request (for a combined one, listing its workspaces now)."""
    if not combines(spec, target):
        return bench.forge.update_pull_request(target.repo, number, draft)
    with _pr_lock(target.repo):
        draft = _noted(spec, target, draft, change, bench)
        return bench.forge.update_pull_request(target.repo, number, draft)
