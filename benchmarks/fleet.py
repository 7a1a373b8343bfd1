"""A generated fleet of small Python repositories with tests, for the benchmarks."""

from __future__ import annotations

import shutil
from pathlib import Path

from orchestrator_assets.demo_fleet import RepoSpec, create_repo

CODEMOD = (
    "ruff check --isolated --select UP --fix --unsafe-fixes --exit-zero --no-cache "
    "--target-version py311 -q ."
)
VERIFIER = "python -m pytest -q -p no:cacheprovider"


def module(i: int) -> str:
    """One module written in pre-3.9 style that ruff's UP rules rewrite."""
    return (
        "from typing import Dict, List, Optional\n\n\n"
        f"def total_{i}(values: List[int], scale: Optional[int] = None) -> Dict[str, int]:\n"
        f'    return {{"total": sum(values) * (scale or 1), "n": {i}}}\n'
    )


def test_module(i: int) -> str:
    return (
        f"from pkg.mod{i} import total_{i}\n\n\n"
        f"def test_total_{i}():\n"
        f'    assert total_{i}([1, 2], 2) == {{"total": 6, "n": {i}}}\n'
    )


def template(files: int) -> RepoSpec:
    """The repository every fleet member starts from: `files` modules, each with a test."""
    contents = {"pkg/__init__.py": "", "tests/__init__.py": ""}
    for i in range(files):
        contents[f"pkg/mod{i}.py"] = module(i)
        contents[f"tests/test_mod{i}.py"] = test_module(i)
    return RepoSpec("template", contents)


def make_fleet(root: Path, repos: int, files: int = 3, owner: str = "fleet") -> list[Path]:
    """`repos` bare repositories under root/owner (copies of one template repository)."""
    source = create_repo(root / "_template", template(files), owner="t")
    paths = []
    for i in range(repos):
        dest = root / owner / f"repo{i:05d}.git"
        if not dest.exists():
            shutil.copytree(source, dest)
        paths.append(dest)
    return paths
