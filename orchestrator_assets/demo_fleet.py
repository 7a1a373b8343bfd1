"""A local fleet of small Python repositories with their own tests, for the demo and the tests.

`python -m orchestrator_assets.demo_fleet DIR` creates bare repositories `DIR/acme/<name>.git`
(keeping any that exist, so PR records survive a second `make demo`).
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from resources.git import author_env, run_git


@dataclass
class RepoSpec:
    """One repository of a fleet: its files and default branch."""

    name: str
    files: dict[str, str]
    branch: str = "main"
    hooks: dict[str, str] = field(default_factory=dict)  # installed in the bare repo (tests)


def _py(text: str) -> str:
    return textwrap.dedent(text).lstrip()


DEMO_REPOS = [
    RepoSpec("billing", {
        "billing.py": _py('''
            from typing import Dict, List


            def totals(lines: List[tuple]) -> Dict[str, int]:
                out: Dict[str, int] = {}
                for name, amount in lines:
                    out[name] = out.get(name, 0) + amount
                return out
            '''),
        "tests/test_billing.py": _py('''
            from billing import totals


            def test_totals_sums_per_customer():
                assert totals([("a", 1), ("b", 2), ("a", 3)]) == {"a": 4, "b": 2}
            '''),
    }),
    RepoSpec("ledger", branch="master", files={
        "ledger.py": _py('''
            def describe(account, balance):
                return "{}: {}".format(account, balance)
            '''),
        "tests/test_ledger.py": _py('''
            from ledger import describe


            def test_describe():
                assert describe("cash", 10) == "cash: 10"
            '''),
    }),
    RepoSpec("inventory", {
        "inventory.py": _py('''
            class Stock(object):
                def __init__(self):
                    self.items = {}

                def add(self, sku, count=1):
                    self.items[sku] = self.items.get(sku, 0) + count
                    return self.items[sku]
            '''),
        "tests/test_inventory.py": _py('''
            from inventory import Stock


            def test_add_counts():
                stock = Stock()
                stock.add("x")
                assert stock.add("x", 2) == 3
            '''),
    }),
    RepoSpec("shipping", {
        "shipping.py": _py('''
            class Parcel:
                def __init__(self, weight):
                    self.weight = weight


            class Express(Parcel):
                def __init__(self, weight):
                    super(Express, self).__init__(weight)
                    self.priority = True
            '''),
        "tests/test_shipping.py": _py('''
            from shipping import Express


            def test_express_is_priority():
                parcel = Express(3)
                assert parcel.priority and parcel.weight == 3
            '''),
    }),
    RepoSpec("notifications", {
        "notifications.py": _py('''
            from typing import Optional


            def subject(kind: str, name: Optional[str] = None) -> str:
                return "{}: {}".format(kind, name or "everyone")
            '''),
        "tests/test_notifications.py": _py('''
            from notifications import subject


            def test_subject_defaults_to_everyone():
                assert subject("alert") == "alert: everyone"
            '''),
    }),
    RepoSpec("search", {
        "search.py": _py('''
            def find(items: list[str], needle: str) -> int | None:
                for index, item in enumerate(items):
                    if item == needle:
                        return index
                return None
            '''),
        "tests/test_search.py": _py('''
            from search import find


            def test_find():
                assert find(["a", "b"], "b") == 1
                assert find([], "x") is None
            '''),
    }),
    RepoSpec("legacy-api", {
        "legacy_api.py": _py('''
            from typing import Dict, List


            def tally(items: List[str]) -> Dict[str, int]:
                counts: Dict[str, int] = {}
                for item in items:
                    counts[item] = counts.get(item, 0) + 1
                return counts
            '''),
        "tests/test_legacy_api.py": _py('''
            from legacy_api import tally


            def test_signature_is_published_unchanged():
                # Clients match this API by its published signature text.
                assert str(tally.__annotations__["items"]) == "typing.List[str]"


            def test_tally():
                assert tally(["a", "a"]) == {"a": 2}
            '''),
    }),
    RepoSpec("reports", {
        "reports.py": _py('''
            from typing import List, Optional


            def header(title: str, columns: List[str], note: Optional[str] = None) -> str:
                line = " | ".join(columns)
                return "%s\\n%s%s" % (title, line, "\\n" + note if note else "")
            '''),
        "tests/test_reports.py": _py('''
            from reports import header


            def test_header():
                assert header("T", ["a", "b"]) == "T\\na | b"
                assert header("T", ["a"], "n") == "T\\na\\nn"
            '''),
    }),
]  # fmt: skip

COMMON = {".gitignore": "__pycache__/\n.pytest_cache/\n.ruff_cache/\n", "tests/__init__.py": ""}


def create_repo(root: Path, repo: RepoSpec, owner: str = "acme") -> Path:
    """Create the bare repository `root/owner/name.git` (kept as is when it exists)."""
    bare = root / owner / f"{repo.name}.git"
    if (bare / "HEAD").exists():
        return bare
    bare.parent.mkdir(parents=True, exist_ok=True)
    stamp = "2026-01-01T00:00:00Z"
    env = {
        **author_env("Fleet Maker", "fleet@localhost"),
        "GIT_AUTHOR_DATE": stamp,
        "GIT_COMMITTER_DATE": stamp,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / repo.name
        work.mkdir()
        for rel, text in {**COMMON, **repo.files}.items():
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        run_git(["init", "--quiet", "-b", repo.branch], work)
        run_git(["add", "--all"], work)
        run_git(["commit", "--quiet", "-m", f"Initial {repo.name}"], work, env=env)
        run_git(["clone", "--quiet", "--bare", str(work), str(bare)])
    for name, script in repo.hooks.items():
        hook = bare / "hooks" / name
        hook.write_text(script)
        hook.chmod(0o755)
    return bare


def create_fleet(root: Path, repos: list[RepoSpec] = DEMO_REPOS, owner: str = "acme") -> list[Path]:
    """Create every repository of a fleet under `root`; returns their paths."""
    return [create_repo(Path(root), repo, owner) for repo in repos]


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ".demo")
    paths = create_fleet(target)
    print(f"demo fleet: {len(paths)} repositories under {target}/acme")
