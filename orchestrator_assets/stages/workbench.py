"""What every stage works with: the outside systems of a run (`Workbench`), a follow-up pass,
and the callbacks for logs and notifications."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator_assets.spec.steps import JudgeConfig
from orchestrator_assets.spec.target import Target
from orchestrator_assets.stages.budget import Budget
from resources.agents.base import Agent
from resources.agents.judge import Verdict
from resources.env_cache import DEFAULT_MANIFESTS, EnvCache
from resources.forges.base import Forge
from resources.repo_cache import RepoCache
from resources.sandboxes.base import SandboxProvider

Log = Callable[[str], None]
Notify = Callable[[str, str], None]  # (event kind, message)
Judge = Callable[[str, str, JudgeConfig], Verdict]  # (request, diff, config) -> verdict


@dataclass
class FollowUp:
    """A further pass over a target's existing change: a reviewer's steer (the agent's session
    resumed with a new prompt), a partial approval (the change cut down to some files), or a
    repair after a failed verifier."""

    kind: str  # steer | partial | repair | judge (the kinds of `Iteration`)
    prompt: str | None = None
    files: list[str] = field(default_factory=list)
    decision_id: str | None = None


@dataclass
class Workbench:
    """The outside systems a stage works with."""

    forge: Forge
    cache: RepoCache
    sandboxes: SandboxProvider
    author: tuple[str, str] = ("Campaign Bot", "campaigns@localhost")
    network: bool = False
    default_timeout_s: int = 900
    agent: Agent | None = None
    agent_homes: Path | None = None  # per campaign and target: the agent's session store
    transcripts: Path | None = None  # per campaign and target: the agent's event streams
    budget: Budget = field(default_factory=lambda: Budget(None))
    profile_setup: list = field(default_factory=list)  # setup when the campaign names none
    setup_network: bool = True
    setup_timeout_s: int = 900
    profile_name: str = "default"
    env_cache: EnvCache | None = None
    cache_paths: list[str] = field(default_factory=lambda: [".venv"])
    manifests: list[str] = field(default_factory=lambda: list(DEFAULT_MANIFESTS))
    use_cache: bool = True  # False: redo changes and setup whose inputs did not change
    tags: dict[str, str] = field(default_factory=dict)  # campaign and run, on every sandbox
    environment: str = "local"  # the sandbox's image, part of a change's cache key
    output_lines: int = 200  # lines of each command's output streamed into the run log
    notify: Notify = field(default=lambda kind, message: None)  # optional notifier
    judge: Judge | None = None  # the LLM judge (agentic campaigns with `judge:`)

    def open_sandbox(self, stage: str, target: Target):
        """A sandbox for one stage of one target, tagged with campaign, target and run."""
        return self.sandboxes.open(f"{stage}-{target.key}", {**self.tags, "target": target.key})

    def streamer(self, target: Target, what: str, log: Log):
        """An output callback that passes a command's first lines into the run log."""
        left = [self.output_lines]

        def on_output(line: str) -> None:
            if left[0] > 0:
                left[0] -= 1
                log(f"{target.key} | {what}: {line}")
            elif left[0] == 0:
                left[0] -= 1
                log(f"{target.key} | {what}: … (further output in the output tail)")

        return on_output


def quiet(_: str) -> None:
    """A log that drops what it is given: the default where a caller wants no output."""
    return None
