"""Malformed campaign files: each is refused with one line naming the file and where it is wrong.

`orchestrator validate FILE` and `orchestrator run --file FILE` both print that line, exit
non-zero and show no traceback; the loader tests pin the text of each problem.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator_assets.spec.campaign import load_campaign
from orchestrator_assets.spec.errors import SpecError
from tests.conftest import ORCHESTRATOR

CAMPAIGN = """\
name: bad-input
targets:
  - https://github.com/acme/billing
  - repo: https://github.com/acme/ledger
    base: main
transformation:
  kind: deterministic
  command: ruff format .
"""


def write(tmp_path: Path, content: str | bytes, name: str = "c.yaml") -> Path:
    """A campaign file with exactly these bytes."""
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def problems(path: Path) -> list[str]:
    """The lines `orchestrator validate` would print for `path`."""
    with pytest.raises(SpecError) as info:
        load_campaign(path)
    lines = str(info.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    return lines


# duplicate keys -----------------------------------------------------------------------------------


def test_a_duplicate_top_level_key_is_refused_naming_both_lines(tmp_path: Path):
    (line,) = problems(write(tmp_path, CAMPAIGN + "name: other-name\n"))
    assert line == f"{tmp_path / 'c.yaml'}: name: duplicate key 'name' at line 9 (first at line 1)"


def test_duplicate_nested_keys_are_refused_with_their_field_paths(tmp_path: Path):
    text = CAMPAIGN.replace("    base: main\n", "    base: main\n    base: dev\n")
    text = text.replace("  command: ruff format .\n", "  command: ruff format .\n  command: x\n")
    lines = problems(write(tmp_path, text))
    assert [line.split(": ", 1)[1] for line in lines] == [
        "targets.1.base: duplicate key 'base' at line 6 (first at line 5)",
        "transformation.command: duplicate key 'command' at line 10 (first at line 9)",
    ]


def test_a_merge_key_may_be_overridden(tmp_path: Path):
    text = CAMPAIGN.replace(
        "transformation:\n  kind: deterministic\n",
        "x-defaults: &defaults {kind: deterministic, command: black .}\n"
        "transformation:\n  <<: *defaults\n",
    )
    # YAML's merge key is meant to be overridden: only the unknown `x-defaults` is a problem.
    assert [line.split(": ", 1)[1] for line in problems(write(tmp_path, text))] == [
        "x-defaults: unknown field (not allowed here)"
    ]


# not UTF-8, nested too deep ----------------------------------------------------------------------


def test_an_invalid_byte_is_named_with_its_offset_and_line(tmp_path: Path):
    path = write(tmp_path, CAMPAIGN.encode().replace(b"ruff format", b"ruff f\xe9rmat"))
    (line,) = problems(path)
    offset = CAMPAIGN.encode().index(b"ruff format") + 6
    assert line == (
        f"{path}: line 8: not UTF-8 text: byte 0xe9 at byte offset {offset} cannot be decoded "
        "(a campaign file must be UTF-8)"
    )


def test_a_binary_file_is_refused_as_not_utf8(tmp_path: Path):
    path = write(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (line,) = problems(path)
    assert "line 1: not UTF-8 text: byte 0x89 at byte offset 0" in line


def test_a_control_character_is_named_on_one_line(tmp_path: Path):
    path = write(tmp_path, CAMPAIGN.replace("ruff format", "ruff\x00format"))
    (line,) = problems(path)
    assert "line 8: invalid YAML: character #x0000 at character offset" in line


def test_nesting_too_deep_is_refused_with_the_depth(tmp_path: Path):
    path = write(tmp_path, CAMPAIGN + "description: " + "[" * 5000 + "]" * 5000 + "\n")
    (line,) = problems(path)
    assert line.startswith(f"{path}: line 9, column ")
    assert line.endswith(": nested more than 100 levels deep (a campaign file needs far fewer)")


# schedule and budget -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            'schedule: "0 0 6 * * 1"',
            "schedule: '0 0 6 * * 1' is not a valid cron expression: it has 6 fields, a schedule "
            "has five (minute hour day-of-month month day-of-week, e.g. '0 6 * * 1') or is "
            "@daily, @hourly, …",
        ),
        ("budget_usd: 0", "budget_usd: must be a positive amount of US dollars (e.g. 50)"),
        ("budget_usd: -5", "budget_usd: must be a positive amount of US dollars (e.g. 50)"),
        ("budget_usd: .inf", "budget_usd: must be a positive amount of US dollars (e.g. 50)"),
    ],
)
def test_schedule_and_budget_say_what_is_allowed(tmp_path: Path, extra: str, expected: str):
    path = write(tmp_path, CAMPAIGN + extra + "\n")
    assert problems(path) == [f"{path}: {expected}"]


@pytest.mark.parametrize("schedule", ["0 6 * * 1", "*/15 * * * *", "@daily"])
def test_five_field_crons_and_aliases_are_accepted(tmp_path: Path, schedule: str):
    spec = load_campaign(write(tmp_path, CAMPAIGN + f"schedule: '{schedule}'\nbudget_usd: 0.5\n"))
    assert (spec.schedule, spec.budget_usd) == (schedule, 0.5)


# what the CLI prints -----------------------------------------------------------------------------

BAD = {
    "duplicate.yaml": (CAMPAIGN + "name: again\n", "name: duplicate key 'name' at line 9"),
    "latin1.yaml": (CAMPAIGN.encode("latin-1") + b"description: caf\xe9\n", "byte offset"),
    "binary.yaml": (b"\x7fELF\x02\x01\x01\x00\xff\xfe", "not UTF-8 text: byte 0xff"),
    "deep.yaml": (CAMPAIGN + "description: " + "{a: " * 3000 + "}" * 3000, "nested more than"),
    "cron.yaml": (CAMPAIGN + "schedule: '*/5 0 6 * * 1'\n", "schedule: "),
    "budget.yaml": (CAMPAIGN + "budget_usd: 0\n", "budget_usd: must be a positive amount"),
    "owner-name.yaml": (
        CAMPAIGN.replace("https://github.com/acme/billing", "acme/billing"),
        "targets.0.repo: 'acme/billing' is not an existing path",
    ),
}


@pytest.fixture
def bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[Path, str]]:
    """Each malformed file and the text its one error line must contain."""
    monkeypatch.setenv("ORCHESTRATOR_CAMPAIGNS_DIR", str(tmp_path / "campaigns"))
    monkeypatch.setenv("ORCHESTRATOR_DATA_DIR", str(tmp_path / "data"))
    # A file that wrongly validates would run: keep that run out of the project's instance.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("ORCHESTRATOR_FORGE", raising=False)
    return {name: (write(tmp_path, content, name), text) for name, (content, text) in BAD.items()}


def assert_one_clear_line(stderr: str, path: Path, text: str) -> None:
    """The output says, on one line, the file and what is wrong, and nothing else."""
    assert "Traceback" not in stderr and "Error:" not in stderr.replace("error:", ""), stderr
    lines = [line for line in stderr.splitlines() if str(path) in line]
    assert len(lines) == 1 and text in lines[0], stderr
    assert lines[0].split(f"{path}: ", 1)[1].strip(), stderr


def test_validate_prints_one_line_per_bad_file_and_exits_1(bad_files):
    paths = [str(path) for path, _ in bad_files.values()]
    proc = subprocess.run(
        [ORCHESTRATOR, "validate", *paths], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == len(BAD), proc.stderr
    for path, text in bad_files.values():
        assert_one_clear_line(proc.stderr, path, text)


@pytest.mark.parametrize("name", sorted(BAD))
def test_run_file_prints_one_line_and_exits_2(bad_files, name, monkeypatch, capsys):
    from orchestrator_assets.cli.main import main

    path, text = bad_files[name]
    monkeypatch.setattr(sys, "argv", ["orchestrator", "run", "--file", str(path)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert_one_clear_line(err, path, text)
