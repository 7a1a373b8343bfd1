"""Evaluating a campaign's `select:` and `workspaces:` on each repository's base commit.

The base commit is read in the mirror cache (`resources/repo_cache.py`) with `git diff-tree`
(files matching a glob) and `git grep -P` (lines matching a pattern): no checkout, no sandbox.
An answer depends only on what is asked and the commit, so it is cached by (selector digest, base
commit) in `<data dir>/selection/answers/<digest>.json`: a repository whose base branch did not
move is not looked at again, not even fetched. The campaign's answers are stored for loading
(`spec/selection.py`), which keeps only the selected targets.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.selection import (
    Selector,
    selection_digest,
    selection_path,
    stored_selection,
    with_selected,
    without_selection,
)
from orchestrator_assets.spec.settings import Settings
from orchestrator_assets.spec.target import Target
from orchestrator_assets.spec.workspaces import Workspaces
from resources.forges.base import Forge, ForgeError
from resources.git import GitError
from resources.repo_cache import RepoCache

# The discovery sensor evaluates a campaign again after this long (each evaluation asks the forge
# for every repository's base commit; a base that did not move costs nothing more).
RESELECT_AFTER_S = 120.0
# How long one sensor tick may spend evaluating (ticks time out at 60 s); the rest waits.
SENSOR_BUDGET_S = 40.0
WORKERS = 8  # repositories looked at in parallel (forge lookups, fetches, git grep)


@dataclass
class Answer:
    """What a selector says of one base commit."""

    selected: bool
    why: str  # the conditions that held, or the first one that did not
    workspaces: list[str] = field(default_factory=list)


@dataclass
class SelectionRefresh:
    """What one evaluation of a campaign found."""

    total: int = 0  # repositories looked at
    selected: list[str] = field(default_factory=list)  # target keys (repositories) selected
    not_selected: dict[str, str] = field(default_factory=dict)  # key -> why not
    errors: dict[str, str] = field(default_factory=dict)  # key -> what went wrong
    evaluated: int = 0  # answers worked out with git
    cached: int = 0  # answers taken from the cache (base commit unchanged)
    deferred: int = 0  # not looked at within the time budget (their last answer kept)
    changed: list[str] = field(default_factory=list)  # keys whose answer differs from before

    def summary(self) -> str:
        """One line for people."""
        line = (
            f"{len(self.selected)} of {self.total} repositories selected "
            f"({self.evaluated} evaluated, {self.cached} from the cache)"
        )
        if self.deferred:
            line += f"; {self.deferred} left for the next evaluation (time budget)"
        if self.errors:
            line += f"; {len(self.errors)} could not be evaluated: " + "; ".join(
                f"{k}: {v}" for k, v in list(self.errors.items())[:5]
            )
        return line


class AnswerCache:
    """Answers by (selector digest, base commit), one JSON file per digest."""

    def __init__(self, root: Path, digest: str):
        self.path = root / "answers" / f"{digest}.json"
        try:
            self.answers: dict[str, dict] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.answers = {}
        self.dirty = False

    def get(self, commit: str) -> Answer | None:
        """The answer for `commit`, if it was worked out before."""
        found = self.answers.get(commit)
        return Answer(**found) if found else None

    def put(self, commit: str, answer: Answer) -> None:
        """Remember the answer for `commit`."""
        self.answers[commit] = answer.__dict__
        self.dirty = True

    def save(self) -> None:
        """Write the answers (atomically; another process's answers written meanwhile are
        merged, not lost)."""
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            theirs = json.loads(self.path.read_text())
        except (OSError, ValueError):
            theirs = {}
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**theirs, **self.answers}))
        tmp.replace(self.path)
        self.dirty = False


def evaluate(
    selector: Selector | None,
    workspaces: Workspaces | None,
    cache: RepoCache,
    url: str,
    commit: str,
) -> Answer:
    """Evaluate the selector (and find the workspaces) on `commit` of the mirror of `url`."""
    held: list[str] = []
    failed: list[str] = []
    if selector is not None:
        for glob in selector.paths:
            found = cache.files_at(url, commit, f":(glob){glob}")
            (held if found else failed).append(f"{glob} exists" if found else f"no {glob}")
        for condition in selector.contains:
            found = cache.grep_at(url, commit, condition.pattern, f":(glob){condition.path}")
            if found:
                held.append(f"{', '.join(found[:3])} matches /{condition.pattern}/")
            else:
                failed.append(f"no {condition.path} matches /{condition.pattern}/")
        selected = not failed if selector.match == "all" else bool(held)
    else:
        selected = True
    dirs: list[str] = []
    if selected and workspaces is not None:
        markers = cache.files_at(url, commit, workspaces.pathspec)
        dirs = sorted({m.rsplit("/", 1)[0] for m in markers if "/" in m})
        if not dirs:
            selected = False
            failed.insert(0, f"no {workspaces.marker} under {workspaces.under}")
        else:
            held.append(f"{len(dirs)} workspace(s)")
    why = "; ".join(held) if selected else (failed[0] if failed else "nothing matched")
    return Answer(selected=selected, why=why, workspaces=dirs)


def refresh_selection(
    spec: CampaignSpec,
    settings: Settings,
    forge: Forge,
    cache: RepoCache,
    *,
    budget_s: float | None = None,
    workers: int = WORKERS,
) -> SelectionRefresh:
    """Evaluate the campaign's selector on the base commit of each of its repositories (the
    cached answer when the base did not move) and store the answers for loading.

    Repositories are looked at `workers` at a time. With `budget_s` (a sensor tick's time),
    repositories not begun by then keep their previous answer (`deferred`) for the next call."""
    spec = without_selection(spec)
    digest = selection_digest(spec)
    answers = AnswerCache(settings.data_dir / "selection", digest)
    before = stored_selection(settings, spec).get("targets", {})
    result = SelectionRefresh(total=len(spec.targets))
    deadline = time.monotonic() + budget_s if budget_s is not None else None

    def work(target: Target) -> tuple[dict, bool] | None:
        if deadline is not None and time.monotonic() > deadline:
            return None  # deferred to the next evaluation
        return _target_answer(spec, target, forge, cache, answers)

    stored: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="select") as pool:
        futures = [(t, pool.submit(work, t)) for t in spec.targets]
        for target, future in futures:
            key = target.key
            try:
                done = future.result()
            except (ForgeError, GitError) as exc:
                result.errors[key] = str(exc)
                done = None
            if done is None:
                result.deferred += key not in result.errors
                if key in before:  # keep what was known rather than drop the target
                    stored[key] = before[key]
                    _count(result, key, before[key])
                continue
            entry, cached = done
            result.cached += cached
            result.evaluated += not cached
            stored[key] = entry
            _count(result, key, entry)
            old = before.get(key)
            if old is None or (old["selected"], old.get("workspaces")) != (
                entry["selected"],
                entry.get("workspaces"),
            ):
                result.changed.append(key)
    answers.save()
    path = selection_path(settings, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps({"digest": digest, "evaluated": time.time(), "targets": stored}, indent=2)
    )
    tmp.replace(path)
    return result


def _count(result: SelectionRefresh, key: str, entry: dict) -> None:
    if entry["selected"]:
        result.selected.append(key)
    else:
        result.not_selected[key] = entry["why"]


def _target_answer(
    spec: CampaignSpec, target: Target, forge: Forge, cache: RepoCache, answers: AnswerCache
) -> tuple[dict, bool]:
    """One repository's answer as stored, and whether it came from the cache (its base commit
    was seen before)."""
    repo = forge.resolve(target.repo, target.base, spec.branch_for(target))
    answer = answers.get(repo.base_sha)
    cached = answer is not None
    if answer is None:
        cache.mirror(repo.clone_url)  # fetched only for a base commit not evaluated before
        answer = evaluate(spec.select, spec.workspaces, cache, repo.clone_url, repo.base_sha)
        answers.put(repo.base_sha, answer)
    return {"repo": target.repo, "base_sha": repo.base_sha, **answer.__dict__}, cached


def age_s(settings: Settings, spec: CampaignSpec) -> float:
    """Seconds since the campaign's last evaluation (infinite when there was none)."""
    evaluated = stored_selection(settings, spec).get("evaluated")
    return time.time() - evaluated if evaluated else float("inf")


def reselect(
    spec: CampaignSpec,
    settings: Settings,
    forge: Forge | None = None,
    budget_s: float | None = None,
) -> tuple[CampaignSpec, SelectionRefresh | None]:
    """Evaluate the campaign's selection now (within `budget_s` seconds, if given); the campaign
    with the targets it selects (as it is when it has neither `select:` nor `workspaces:`)."""
    if not spec.selects_targets:
        return spec, None
    from resources.build import build_forge
    from resources.dagster_resources import forge_git_env

    forge = forge or build_forge(settings, spec)  # the campaign's forge(s)
    cache = RepoCache(settings.cache_dir, forge_git_env(forge))
    found = refresh_selection(spec, settings, forge, cache, budget_s=budget_s)
    return with_selected(spec, settings), found
