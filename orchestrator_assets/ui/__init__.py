"""The review web app (`orchestrator ui`): campaigns, targets, diffs and review decisions in a
browser, on the same Dagster instance as the CLI (decisions go through `stages/review.py`)."""
