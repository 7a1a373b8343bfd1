"""The prompt an agent gets: the campaign's request, the target, and the verifiers that gate it."""

from __future__ import annotations

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.steps import AgenticTransformation
from orchestrator_assets.spec.target import Target


def build_prompt(spec: CampaignSpec, target: Target, base_branch: str) -> str:
    """The full prompt for one target."""
    assert isinstance(spec.transformation, AgenticTransformation)
    lines = [
        f"You are making one change in the repository `{target.key}`, in the current working "
        f"directory (a checkout of branch `{base_branch}`), as part of the campaign "
        f"`{spec.name}` that applies the same change across many repositories.",
        "",
        "## The change",
        "",
        spec.transformation.prompt.strip(),
        "",
    ]
    verifiers = spec.verifiers_for(target)
    if verifiers:
        lines += [
            "## Before you finish",
            "",
            "These commands must pass when run from the repository root. Run them yourself, fix "
            "what fails, and run them again until they pass (they run again afterwards as the "
            "gate for the pull request):",
            "",
            *[f"- {v.name}: `{v.command_line()}`" for v in verifiers],
            "",
        ]
        if spec.transformation.verifier_tools:
            lines += [
                "You can also run them with the `mcp__verifiers__run_verifier` tool (give the "
                "name): it answers with what failed, trimmed to what matters."
                + (
                    " You cannot finish while one fails."
                    if spec.transformation.max_stop_blocks
                    else ""
                ),
                "",
            ]
    lines += [
        "## Rules",
        "",
        "- Change only what the request needs: no unrelated refactoring, and never disable, "
        "skip or delete tests to make them pass.",
        "- Do not commit, push or create branches: the platform commits the working tree.",
        "- When you are done, answer with a short summary of what you changed.",
    ]
    return "\n".join(lines)


FOLLOWUP_INTRO = {
    "steer": "A reviewer looked at your change and asks for more work on it.",
    "repair": "The platform ran the verifiers on your change in a fresh sandbox and one failed.",
    "judge": "A reviewer model compared your change with the request and sent it back.",
    "ci_repair": "Your change was published as a pull request, and it needs more work there.",
}


def build_followup_prompt(spec: CampaignSpec, target: Target, followup) -> str:
    """The prompt that resumes the agent's session for one more pass over its change: what the
    reviewer (or the verifier, or the judge) said, and the files to keep to."""
    lines = [
        FOLLOWUP_INTRO.get(followup.kind, "Please continue working on your change."),
        (
            "The working directory is the base branch as it is now, without your change."
            if followup.onto_base
            else "The working directory holds your change as it is now (uncommitted, on the "
            "base branch)."
        ),
        "",
        "## What to do",
        "",
        (followup.prompt or "").strip(),
        "",
    ]
    if followup.files:
        lines += [
            "## Files",
            "",
            "Work on these files only; leave every other file as it is:",
            "",
            *[f"- `{name}`" for name in followup.files],
            "",
        ]
    verifiers = spec.verifiers_for(target)
    if verifiers:
        lines += [
            "The same commands must still pass afterwards: "
            + ", ".join(f"`{v.command_line()}`" for v in verifiers)
            + ".",
            "",
        ]
    lines.append("When you are done, answer with a short summary of what you changed this time.")
    return "\n".join(lines)
