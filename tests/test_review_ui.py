"""The review UI (`orchestrator ui`) in a real browser: Debian's Chromium driven by Selenium.

An agentic campaign with review required runs with the real Claude Code CLI against the scripted
model; the reviewer comments on a diff line and steers from the target page, watches the new
iteration arrive without reloading, approves a subset of files and sees the PR open with only
those. Bad input, cross-site posts and an unauthenticated non-loopback bind are refused.
Screenshots of every page go to the test's folder and to `.ui-screenshots/` in the project.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from orchestrator_assets.demo_fleet import RepoSpec, create_repo
from orchestrator_assets.spec.catalog import load_one
from orchestrator_assets.stages.review import latest_decisions
from tests.conftest import ORCHESTRATOR, Platform, require, statuses
from tests.fake_model import text, tool
from tests.test_agentic import model  # noqa: F401 (the scripted model server fixture)
from tests.test_review import TWO_FILES, branch_files, pulls, reviewed

pytestmark = pytest.mark.usefixtures("bwrap")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHOTS = PROJECT_ROOT / ".ui-screenshots"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT_S = 30


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Headless Chromium from Debian's packages (never a browser Selenium downloads)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, "selenium is not installed (.venv/bin/pip install selenium)")
    require(os.path.exists(CHROMIUM), f"{CHROMIUM} is missing (apt-get install chromium)")
    require(
        os.path.exists(CHROMEDRIVER), f"{CHROMEDRIVER} is missing (apt-get install chromium-driver)"
    )
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--no-proxy-server"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


class Shots:
    """Screenshots of the pages, numbered in the order taken."""

    def __init__(self, folder: Path, prefix: str):
        self.folder, self.prefix, self.count = folder, prefix, 0
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, driver, name: str) -> None:
        self.count += 1
        path = self.folder / f"{self.prefix}-{self.count:02d}-{name}.png"
        driver.save_screenshot(str(path))
        SHOTS.mkdir(exist_ok=True)
        shutil.copy(path, SHOTS / path.name)


@contextmanager
def ui_server(platform: Platform, *args: str, **env: str) -> Iterator[str]:
    """`orchestrator ui` on a free port for the platform's instance; its base URL."""
    log = platform.root / f"ui-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [ORCHESTRATOR, "ui", "--port", "0", *args],
            env={**platform.env, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"http://\S+", log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"orchestrator ui did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield found.group(0)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(driver, css: str, timeout: float = WAIT_S):
    """The element once it is on the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def find(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def flash(driver) -> str:
    return wait_for(driver, "#flash").text


def session() -> requests.Session:
    client = requests.Session()
    client.trust_env = False  # loopback: never through a proxy from the environment
    return client


def csrf(page: str) -> str:
    return html.unescape(re.search(r'name="csrf_token" value="([^"]+)"', page).group(1))


def test_review_an_agentic_change_in_the_browser(platform: Platform, model, browser, tmp_path):  # noqa: F811
    repo = create_repo(
        platform.fleet,
        RepoSpec("alpha", {"app.py": "GREETING = 'OLD'\n", "notes.txt": "OLD notes\n",
                           "tests/test_app.py": "def test_ok():\n    assert True\n"}),
    )  # fmt: skip
    path = platform.write_campaign(
        "uireview",
        targets=[str(repo)],
        transformation={"kind": "agentic", "prompt": "Rename OLD to NEW.", "max_turns": 6},
        review={"policy": "required"},
    )
    model.script = [
        tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py notes.txt", "description": "rename"}),
        text("Renamed OLD to NEW in app.py and notes.txt."),
    ]
    assert statuses(platform.run(path).report) == {"acme__alpha": "awaiting_review"}
    shots = Shots(tmp_path / "screenshots", "agentic")
    driver = browser
    with ui_server(platform, ORCHESTRATOR_ACTOR="dana") as base:
        page = f"{base}/c/uireview/t/acme__alpha"
        driver.get(f"{base}/")
        wait_for(driver, "#campaign-uireview")
        assert "awaiting_review 1" in find(driver, "#campaign-uireview .counts").text
        shots.take(driver, "campaigns")
        driver.get(f"{base}/c/uireview")
        wait_for(driver, "#targets a[href='/c/uireview/t/acme__alpha']")
        shots.take(driver, "campaign")

        driver.get(page)
        wait_for(driver, "#review-form")
        assert find(driver, "#status").text == "awaiting_review"
        picks = [
            e.get_attribute("value") for e in driver.find_elements("css selector", ".file-pick")
        ]
        assert picks == ["app.py", "notes.txt"]
        # Syntax highlighting from Pygments: the Python file's string is a highlighted token.
        assert driver.find_elements("css selector", "#file-app-py td.code.add span.s1")
        assert "sed -i s/OLD/NEW/ app.py notes.txt" in find(driver, "#iterations").text
        shots.take(driver, "target-split")
        driver.get(page + "?view=unified")
        wait_for(driver, "#review-form")
        shots.take(driver, "target-unified")

        # A comment on line 1 of app.py (its new side) and a prompt become the steer.
        find(driver, "#file-app-py td.ln.c[data-line='1']").click()
        wait_for(driver, "tr.comment-editor textarea").send_keys("Add a comment '# renamed' here.")
        find(driver, "tr.comment-editor .add-comment").click()
        wait_for(driver, "tr.comment-row")
        find(driver, "#prompt").send_keys("Keep the rest as it is.")
        shots.take(driver, "target-comment")
        find(driver, "#steer").click()
        prompt = wait_for(driver, "#confirm-prompt").text
        assert "Keep the rest as it is." in prompt
        assert "app.py:1: Add a comment '# renamed' here." in prompt
        shots.take(driver, "confirm-steer")
        find(driver, "#confirm-button").click()
        assert "steered by dana" in flash(driver)
        shots.take(driver, "steered")

        spec = load_one(path, platform.settings()).spec
        with platform.instance() as instance:
            decision = latest_decisions(instance, spec)["acme__alpha"]
        assert decision.decision == "steer" and decision.actor == "dana"
        assert decision.prompt == (
            "Keep the rest as it is.\n\nComments on the diff:\n"
            "  app.py:1: Add a comment '# renamed' here."
        )

        # The run applies the steer while the page is open: the new iteration appears live.
        driver.get(page)
        wait_for(driver, "#iteration-1")
        wait_for(driver, "#live.on")
        model.script = [
            tool("Bash", {"command": "sed -i '1i # renamed' app.py", "description": "comment"}),
            text("Added the comment."),
        ]
        assert statuses(platform.run(path).report) == {"acme__alpha": "awaiting_review"}
        wait_for(driver, "#iteration-2")  # no reload: the live update brought it
        assert "Add a comment '# renamed' here." in find(driver, "#iteration-2").text
        assert "sed -i '1i # renamed' app.py" in find(driver, "#iteration-2").text
        assert not find(driver, "#updated").get_attribute("hidden")  # the diff is old now
        shots.take(driver, "iteration-live")

        # Approve app.py only: the PR opens with just that file.
        driver.get(page)
        wait_for(driver, "#review-form")
        find(driver, ".file-pick[value='app.py']").click()
        find(driver, "#reason-input").send_keys("notes later")
        find(driver, "#approve-files").click()
        assert wait_for(driver, "#confirm-files").text == "app.py"
        shots.take(driver, "confirm-partial")
        find(driver, "#confirm-button").click()
        assert "approved by dana" in flash(driver)
        assert statuses(platform.run(path).report) == {"acme__alpha": "pr_open"}
        assert branch_files(platform, "alpha", "campaign/uireview") == ["app.py"]
        (pr,) = pulls(platform, "alpha")
        driver.get(page)
        link = wait_for(driver, "#pr a")
        assert link.text == f"#{pr['number']}" and "open" in find(driver, "#pr").text
        assert find(driver, "#status").text == "pr_open"
        assert "notes.txt" not in find(driver, "#change").text
        shots.take(driver, "pr-open")
        driver.get(f"{base}/c/uireview")
        wait_for(driver, "#targets")
        shots.take(driver, "campaign-done")
    audit = platform.cli("audit", "uireview").stdout
    assert "dana" in audit and "steer" in audit and "approve" in audit


def test_bad_input_cross_site_posts_and_an_open_bind_are_refused(
    platform: Platform, browser, tmp_path
):
    path = reviewed(
        platform,
        fleet=[RepoSpec("alpha", {"app.py": "GREETING = 'OLD'\n", "notes.txt": "OLD\n",
                                  "tests/test_app.py": "def test_ok():\n    assert True\n"}),
               RepoSpec("gamma", {"app.py": "GREETING = 'NEW'\n"})],
        transformation={"kind": "deterministic", "command": TWO_FILES},
    )  # fmt: skip
    platform.run(path)
    shots = Shots(tmp_path / "screenshots", "refusals")
    driver = browser
    with ui_server(platform) as base:
        for url, words in (
            (f"{base}/c/nope", "no campaign named 'nope'"),
            (f"{base}/c/reviewed/t/nope", "has no target 'nope'"),
        ):
            driver.get(url)
            assert words in wait_for(driver, "#message").text
            assert "Traceback" not in driver.page_source
        shots.take(driver, "unknown-target")
        # An empty steer prompt: a message on the target page, nothing recorded.
        driver.get(f"{base}/c/reviewed/t/acme__alpha")
        wait_for(driver, "#review-form")
        find(driver, "#steer").click()
        assert "steer needs a prompt" in flash(driver)
        shots.take(driver, "empty-steer")
        # A target with nothing to review has no form; a forged post gets the reason.
        driver.get(f"{base}/c/reviewed/t/acme__gamma")
        assert "Not awaiting review" in wait_for(driver, "#not-waiting").text
        client = session()
        token = csrf(client.get(f"{base}/c/reviewed/t/acme__alpha").text)
        answer = client.post(
            f"{base}/c/reviewed/t/acme__gamma/decide",
            data={"csrf_token": token, "action": "approve"},
        )
        assert answer.status_code == 200 and "there is no change to review" in html.unescape(
            answer.text
        )
        # Cross-site: no or a wrong CSRF token, or another site's Origin, is refused.
        decide = f"{base}/c/reviewed/t/acme__alpha/decide"
        for data, headers in (
            ({"action": "approve"}, {}),
            ({"action": "approve", "csrf_token": "forged"}, {}),
            ({"action": "approve", "csrf_token": token}, {"Origin": "http://evil.example"}),
        ):
            refused = client.post(decide, data=data, headers=headers, allow_redirects=False)
            assert refused.status_code == 403 and "refused" in refused.text
        driver.get(f"{base}/c/reviewed/t/acme__alpha")
        assert wait_for(driver, "#review-form")
        with platform.instance() as instance:
            spec = load_one(path, platform.settings()).spec
            assert latest_decisions(instance, spec) == {}  # nothing was recorded

    # Off loopback without a token: refused before anything listens.
    proc = platform.cli("ui", "--host", "0.0.0.0", "--port", "0", check=False)
    assert proc.returncode == 2 and "ORCHESTRATOR_UI_TOKEN" in proc.stderr
    # With a token: a login first; the name given is the actor.
    with ui_server(platform, "--host", "0.0.0.0", ORCHESTRATOR_UI_TOKEN="s3cret") as base:
        base = base.replace("0.0.0.0", "127.0.0.1")
        driver.get(f"{base}/c/reviewed")
        wait_for(driver, "#login")
        find(driver, "input[name=name]").send_keys("erin")
        find(driver, "input[name=token]").send_keys("wrong")
        find(driver, "#login").click()
        assert "not right" in wait_for(driver, ".flash.error").text
        find(driver, "input[name=name]").send_keys("erin")
        find(driver, "input[name=token]").send_keys("s3cret")
        shots.take(driver, "login")
        find(driver, "#login").click()
        assert wait_for(driver, "#actor").text == "erin"
        assert session().get(f"{base}/c/reviewed", allow_redirects=False).status_code == 303
