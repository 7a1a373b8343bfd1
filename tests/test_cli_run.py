"""`orchestrator run` as CI and a user rely on it: flags, exit codes, lookups and the report."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import Platform


def _report(stdout: str) -> dict[str, dict]:
    """The JSON report at the end of `run --output json`, by target."""
    return {r["target"]: r for r in json.loads(stdout[stdout.index("[\n") :])}


@pytest.mark.usefixtures("bwrap")
def test_exit_code_does_not_depend_on_the_other_targets(platform: Platform):
    fleet = {p.name.removesuffix(".git"): str(p) for p in platform.make_fleet()}
    alone = platform.write_campaign("alone", targets=[fleet["epsilon"]])
    beside = platform.write_campaign("beside", targets=[fleet["alpha"], fleet["epsilon"]])
    for path in (alone, beside):
        proc = platform.cli("run", "--file", str(path), "--output", "json", check=False)
        # The campaign ran: a target's failure is its status in the report, not an exit code
        # and not a traceback.
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert _report(proc.stdout)["acme__epsilon"]["status"] == "verification_failed"
        assert "DagsterAssetCheckFailedError" not in proc.stdout + proc.stderr
        assert "step failed" not in proc.stdout + proc.stderr
        # --strict (for CI): any failed target exits 1 and says which.
        strict = platform.cli("run", "--file", str(path), "--strict", check=False)
        assert strict.returncode == 1, strict.stdout + strict.stderr
        assert "1 target(s) failed: acme__epsilon (verification_failed)" in strict.stderr
        assert "DagsterAssetCheckFailedError" not in strict.stdout + strict.stderr


def _fleet(platform: Platform) -> dict[str, str]:
    """The shared fleet by repository name (alpha, beta, ...)."""
    return {p.name.removesuffix(".git"): str(p) for p in platform.make_fleet()}


@pytest.mark.usefixtures("bwrap")
def test_run_file_applies_the_command_line_overrides(platform: Platform):
    from resources.forges.local import LocalForge
    from resources.git import run_git

    alpha = _fleet(platform)["alpha"]
    run_git(["branch", "dev", "main"], cwd=alpha)
    (platform.campaigns / "profiles.yaml").parent.mkdir(parents=True, exist_ok=True)
    extra = {"verifiers": [{"name": "extra", "command": "python -c 'print(1)'"}]}
    (platform.campaigns / "profiles.yaml").write_text(
        yaml.safe_dump({"profiles": {"default": {}, "extra": extra}})
    )
    path = platform.write_campaign("over", targets=[alpha])
    text = path.read_text()
    common = ["run", "--file", str(path), "--profile", "extra", "--base", "dev", "--output", "json"]

    proc = platform.cli(*common, "--review", "required")
    row = _report(proc.stdout)["acme__alpha"]
    assert row["status"] == "awaiting_review"  # --review
    assert row["verifiers"] == "extra:pass, test:pass"  # --profile: its verifiers come first

    proc = platform.cli(*common, "--description", "Words from the command line.")
    assert _report(proc.stdout)["acme__alpha"]["status"] == "pr_open"  # the file's review: auto
    [pr] = LocalForge().list_pull_requests(alpha)
    assert pr.base == "dev"  # --base
    assert pr.body.startswith("Words from the command line.")  # --description
    assert path.read_text() == text  # the file itself is left as it was

    # What cannot apply is refused, naming the flag.
    proc = platform.cli("run", "--file", str(path), "--model", "opus", check=False)
    assert proc.returncode == 2
    assert "--model 'opus':" in proc.stderr and "deterministic transformation" in proc.stderr
    proc = platform.cli("run", "--file", str(path), "--profile", "gpu", check=False)
    assert proc.returncode == 2
    assert f"{path} with --profile gpu: profile: unknown profile 'gpu'" in proc.stderr


@pytest.mark.usefixtures("bwrap")
def test_report_and_list_find_a_campaign_run_from_outside_the_campaigns_folder(
    platform: Platform,
):
    alpha = _fleet(platform)["alpha"]
    elsewhere = platform.root / "elsewhere" / "away.yaml"
    elsewhere.parent.mkdir()
    platform.write_campaign("away", targets=[alpha]).rename(elsewhere)
    platform.cli("run", "--file", str(elsewhere))

    report = json.loads(platform.cli("report", "away", "--output", "json").stdout)
    assert [(r["target"], r["status"]) for r in report] == [("acme__alpha", "pr_open")]
    listed = json.loads(platform.cli("list", "--output", "json").stdout)
    assert [(r["campaign"], r["file"], r["targets"]) for r in listed] == [
        ("away", str(elsewhere), 1)
    ]
    assert "verifier test passed" in platform.cli("logs", "away", "acme__alpha").stdout

    elsewhere.unlink()  # a file that is gone is named, not silently forgotten
    proc = platform.cli("report", "away", check=False)
    assert proc.returncode == 2 and f"run before that are gone: {elsewhere}" in proc.stderr


def test_a_failed_blocking_check_is_not_a_run_error_but_a_raising_step_is():
    import dagster as dg

    from orchestrator_assets.assets.runner import _only_checks_failed

    @dg.asset(check_specs=[dg.AssetCheckSpec("test", asset="verified", blocking=True)])
    def verified():
        yield dg.Output(None)
        yield dg.AssetCheckResult(check_name="test", passed=False)

    @dg.asset
    def broken():
        raise RuntimeError("the platform broke")

    checked = dg.materialize([verified], raise_on_error=False)
    assert not checked.success and _only_checks_failed(checked)
    crashed = dg.materialize([broken], raise_on_error=False)
    assert not crashed.success and not _only_checks_failed(crashed)


@pytest.mark.usefixtures("bwrap")
def test_a_failing_command_is_shown_so_it_can_be_pasted_and_the_table_is_not_cut(
    platform: Platform,
):
    import re
    import shlex

    alpha = _fleet(platform)["alpha"]
    command = ". .venv/bin/activate && python -m fix --everything"  # no .venv: bash exits 1
    path = platform.write_campaign(
        "pasteable",
        targets=[alpha],
        transformation={"kind": "deterministic", "command": ["bash", "-c", command]},
    )
    proc = platform.cli("run", "--file", str(path))  # stdout is a pipe here, not a terminal
    quoted = "`bash -c '. .venv/bin/activate && python -m fix --everything'` exited with code 1"
    # The summary table keeps each row on one line: target, status and the whole reason.
    [row] = [line for line in proc.stdout.splitlines() if "acme__alpha" in line and "│" in line]
    assert "change_failed" in row and f"transformation failed: {quoted}" in row
    pasted = re.search(r"`([^`]+)`", row)
    assert pasted and shlex.split(pasted.group(1)) == ["bash", "-c", command]


@pytest.mark.usefixtures("bwrap")
def test_the_report_says_what_the_last_run_did_for_setup_and_duration(platform: Platform):
    alpha = _fleet(platform)["alpha"]
    make_deps = "import pathlib; pathlib.Path('.deps').mkdir(); pathlib.Path('.deps/x').touch()"
    setup = ["python", "-c", make_deps]
    slow = "python -c 'import time; time.sleep(3)'"
    path = platform.write_campaign(
        "timed",
        targets=[alpha],
        setup=[setup],
        cache_paths=[".deps"],
        verifiers=[{"name": "slow", "command": slow}],
    )
    first = platform.run(path).report.set_index("target").loc["acme__alpha"]
    assert first["status"] == "pr_open"
    # the change ran setup (a miss, so it filled the cache); the verification restored it
    assert first["setup"] == "1 command(s): change cache miss, verification cache hit"
    assert first["duration_s"] >= 3

    # Nothing changed: this run reused the change and its verification, and took little time;
    # the report must not repeat the first run's setup and its verifier's three seconds.
    last = platform.run(path).report.set_index("target").loc["acme__alpha"]
    assert last["status"] == "pr_open"
    assert last["setup"] == "reused"
    assert last["duration_s"] < 3


@pytest.mark.usefixtures("bwrap")
def test_a_tools_output_is_printed_as_it_is_never_read_as_markup(platform: Platform):
    alpha = _fleet(platform)["alpha"]
    # Square brackets in a tool's output are what rich takes for styles: "[/tmp]" closes a tag
    # that was never opened (rich raises MarkupError) and "[bold]" would vanish into a style.
    noisy = "python -c \"print('cache in [/tmp] and [bold]plain[/bold] [red]')\""
    transformation = {"kind": "deterministic", "command": noisy}
    path = platform.write_campaign("noisy", targets=[alpha], transformation=transformation)
    proc = platform.cli("run", "--file", str(path), "--output", "json", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cache in [/tmp] and [bold]plain[/bold] [red]" in proc.stdout
    assert "MarkupError" not in proc.stdout + proc.stderr
    assert _report(proc.stdout)["acme__alpha"]["status"] == "no_change"


def test_on_a_terminal_progress_is_styled_and_still_printed_as_it_is():
    import io

    from rich.console import Console

    from orchestrator_assets.cli.options import progress_printer

    screen = io.StringIO()
    emit = progress_printer(Console(file=screen, force_terminal=True, width=200))
    emit("run", "cache in [/tmp] and [bold]plain[/bold]")
    emit("targets", "verifier test FAILED (exit 1)")
    shown = screen.getvalue()
    assert "\x1b[" in shown  # styled: dim stage names, failures in red
    assert "cache in [/tmp] and [bold]plain[/bold]" in shown
    assert "\x1b[31mverifier test FAILED (exit 1)" in shown
