"""The review UI's campaign page at fleet size: 2,000 targets (default), served over HTTP.

Seeds one run of records per target (change, verification, pull request; 1 in 10 failing
verification) into a fresh instance the way `benchmarks/scale.py` does, starts the UI's app in
this process on a loopback port (it reads each campaign's report once at start), and times
GET /c/<campaign>: the first request, later ones (median of 5; the report is cached until the
event log moves) and one after a new event (the report is rebuilt from the event log). The
bare baseline renders the same rows as a plain HTML table from a list in the same process,
with no instance, no report and no HTTP.

    .venv/bin/python benchmarks/ui_campaign_page.py [N]
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SEED_BATCH = 3000
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def seed(instance, spec, keys: list[str]) -> None:
    """One run's records per target, written in bulk into the event log."""
    import dagster as dg

    from orchestrator_assets.assets.dagster_private import store_runless_materializations
    from orchestrator_assets.assets.metadata import (
        change_metadata,
        pull_request_metadata,
        verification_metadata,
    )
    from orchestrator_assets.stages.records import (
        ChangeRecord,
        PullRequestRecord,
        VerificationRecord,
        VerifierResult,
    )
    from orchestrator_assets.stages.status import ChangeOutcome

    pending: list[dg.AssetMaterialization] = []
    for i, key in enumerate(keys):
        head, passed = f"{i:040x}", i % 10 != 0
        change = ChangeRecord(
            outcome=ChangeOutcome.CHANGED, repo=f"/srv/fleet/{key}.git", branch=spec.branch_name,
            base_branch="main", base_sha="0" * 40, head_sha=head,
            files=[f"pkg/mod{j}.py" for j in range(1 + i % 4)], insertions=2, deletions=2,
            diff="-from typing import List\n+\n" * 5, fingerprint=spec.transformation_fingerprint(),
            duration_s=0.4 + (i % 7) / 10, cost_usd=0.01 * (i % 13), total_cost_usd=0.01 * (i % 13),
        )  # fmt: skip
        verification = VerificationRecord(
            head_sha=head,
            results=[VerifierResult(name="test", passed=passed, exit_code=0 if passed else 1,
                                    duration_s=0.3, output_tail="3 passed in 0.02s\n")],
        )  # fmt: skip
        pr = PullRequestRecord(outcome="opened", number=1, url=f"file:///srv/{key}/pulls/1.json",
                               state="open", head_sha=head)  # fmt: skip
        for stage, meta in (
            ("change", change_metadata(change)),
            ("verification", verification_metadata(verification)),
            ("pull_request", pull_request_metadata(pr)),
        ):
            pending.append(dg.AssetMaterialization([spec.id, stage], partition=key, metadata=meta))
        if len(pending) >= SEED_BATCH:
            store_runless_materializations(instance, pending)
            pending = []
    store_runless_materializations(instance, pending)


def _get(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with HTTP.open(url, timeout=120) as resp:
        body = resp.read()
    return time.perf_counter() - started, len(body)


def baseline(rows: list[dict]) -> float:
    """Seconds to render the same rows as a bare HTML table with Jinja, from a list."""
    from jinja2 import Environment

    template = Environment(autoescape=True).from_string(
        "<table>{% for r in rows %}<tr><td><a href='/t/{{ r.target }}'>{{ r.target }}</a></td>"
        "<td>{{ r.status }}</td><td>{{ r.files_changed }}</td><td>{{ r.cost_usd }}</td>"
        "<td>{{ r.duration_s }}</td><td>{{ r.pr_url }}</td><td>{{ r.reason }}</td></tr>"
        "{% endfor %}</table>"
    )
    started = time.perf_counter()
    template.render(rows=rows)
    return time.perf_counter() - started


def main(n: int = 2000) -> dict:
    """Seed `n` targets, serve the UI, time the campaign page against the bare baseline."""
    work = Path(tempfile.mkdtemp(prefix="ui-bench-"))
    campaigns = work / "campaigns"
    campaigns.mkdir()
    os.environ.update(
        DAGSTER_HOME=str(work / "home"),
        ORCHESTRATOR_DATA_DIR=str(work / "data"),
        ORCHESTRATOR_CAMPAIGNS_DIR=str(campaigns),
    )
    sys.path.insert(0, str(ROOT))
    import uvicorn

    from orchestrator_assets.cli.options import open_instance
    from orchestrator_assets.spec.campaign import load_campaign
    from orchestrator_assets.ui.app import build_app
    from orchestrator_assets.ui.settings import UISettings

    path = campaigns / "bench.yaml"
    path.write_text(yaml.safe_dump({
        "name": "bench", "targets": [f"/srv/fleet/repo{i:05d}.git" for i in range(n)],
        "transformation": {"kind": "deterministic", "command": "true"},
        "verifiers": [{"name": "test", "command": "true"}],
    }))  # fmt: skip
    spec = load_campaign(path)
    instance = open_instance()
    instance.add_dynamic_partitions(spec.partitions_name, [t.key for t in spec.targets])
    started = time.perf_counter()
    seed(instance, spec, [t.key for t in spec.targets])
    result: dict = {"targets": n, "seed_s": round(time.perf_counter() - started, 2)}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = build_app(instance, UISettings(), default_actor="bench")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    started = time.perf_counter()
    app.state.warmed.wait(120)  # the UI reads every campaign's report once when it starts
    result["startup_warm_s"] = round(time.perf_counter() - started, 3)
    url = f"http://127.0.0.1:{port}/c/bench"
    first, size = _get(url)
    warm = [_get(url)[0] for _ in range(5)]
    sorted_page = [_get(url + "?sort=cost&order=desc")[0] for _ in range(3)]
    # Something recorded (as during a run): the next request rebuilds the report.
    from orchestrator_assets.stages.records import ReviewDecision
    from orchestrator_assets.stages.review import record_decision

    record_decision(instance, spec, ReviewDecision(decision="reject", target=spec.targets[0].key,
                                                   actor="bench"))  # fmt: skip
    after_event, _ = _get(url)
    server.should_exit = True
    thread.join(10)

    frame = app.state.data.report(spec)
    rows = frame.to_dict("records")
    bare = statistics.median(baseline(rows) for _ in range(5))
    result.update(
        first_request_s=round(first, 3),
        request_after_new_event_s=round(after_event, 3),
        cached_request_s=round(statistics.median(warm), 3),
        sorted_by_cost_s=round(statistics.median(sorted_page), 3),
        page_kb=round(size / 1024),
        bare_table_render_s=round(bare, 4),
        cached_over_bare=round(statistics.median(warm) / bare, 1) if bare else None,
    )
    return result


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))
