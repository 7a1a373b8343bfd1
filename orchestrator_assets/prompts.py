"""The prompt an agent gets: the campaign's request, the target, and the verifiers that gate it."""

from __future__ import annotations

from orchestrator_assets.spec import AgenticTransformation, CampaignSpec, Target


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
            *[f"- {v.name}: `{' '.join(v.argv())}`" for v in verifiers],
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
