"""The scripted model server, and proof that the REAL claude CLI runs its tool loop against it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests import fake_model
from tests.fake_model import (
    DEFAULT_MODEL,
    ClaudeRun,
    ScriptedModel,
    Usage,
    error,
    is_auxiliary,
    last_user_text,
    run_claude,
    text,
    tool,
    tools,
)

scripted_model = fake_model.scripted_model  # the fixture, shared with other test modules

# claude-sonnet-4-5 list prices in USD per million tokens, as the CLI applies them.
PRICE = {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30}


def cost(usages: list[Usage]) -> float:
    return (
        sum(u.input_tokens for u in usages) * PRICE["input"]
        + sum(u.output_tokens for u in usages) * PRICE["output"]
        + sum(u.cache_creation_input_tokens for u in usages) * PRICE["cache_write"]
        + sum(u.cache_read_input_tokens for u in usages) * PRICE["cache_read"]
    ) / 1e6


def shapes(run: ClaudeRun) -> list[str]:
    """A compact view of the event stream, e.g. ['system/init', 'assistant:tool_use', ...]."""
    out = []
    for e in run.events:
        if e["type"] == "assistant":
            out.append("assistant:" + ",".join(b["type"] for b in e["message"]["content"]))
        elif e["type"] == "user":
            out.append("user:" + ",".join(b["type"] for b in e["message"]["content"]))
        else:
            out.append(f"{e['type']}/{e.get('subtype')}")
    return out


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    return work, home


# ---------------------------------------------------------------------------------------------
# The server on its own (no CLI)


def post(model: ScriptedModel, body: dict, path: str = "/v1/messages") -> tuple[int, dict, str]:
    req = urllib.request.Request(
        model.base_url + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-api-key": "secret"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


AGENT_SYSTEM = [
    {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK."}
]
TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]


def agent_body(prompt: str = "hi", stream: bool = False, **kw) -> dict:
    return {
        "model": "claude-test-model",
        "max_tokens": 32000,
        "system": AGENT_SYSTEM,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
        **kw,
    }


def parse_sse(raw: str) -> list[tuple[str, dict]]:
    events = []
    for chunk in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_server_json_sse_errors_aux_and_unique_ids(scripted_model: ScriptedModel) -> None:
    m = scripted_model
    m.script = [
        tools(("Bash", {"command": "ls"}), ("Read", {"file_path": "/x"}), text="looking"),
        error(429),
        error(529, times=2),
        error(500, "api_error", "boom"),
        tool("Bash", {"command": "pwd"}, usage=Usage(1, 2, 3, 4)),
        lambda body: text("echo: " + last_user_text(body)),  # a step computed per request
    ]
    # Non-streaming JSON, several tool uses, model echoed.
    status, _, raw = post(m, agent_body())
    msg = json.loads(raw)
    assert status == 200 and msg["model"] == "claude-test-model"
    assert [b["type"] for b in msg["content"]] == ["text", "tool_use", "tool_use"]
    assert msg["stop_reason"] == "tool_use" and msg["usage"]["cache_read_input_tokens"] == 50
    # Errors in the Anthropic shape; 429 carries retry-after: 0; times=2 answers twice.
    status, headers, raw = post(m, agent_body())
    assert status == 429 and headers["retry-after"] == "0"
    assert json.loads(raw) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "scripted rate_limit_error (429)"},
    }
    for _ in range(2):
        status, _, raw = post(m, agent_body())
        assert status == 529 and json.loads(raw)["error"]["type"] == "overloaded_error"
    status, _, raw = post(m, agent_body())
    assert status == 500 and json.loads(raw)["error"] == {"type": "api_error", "message": "boom"}
    # Auxiliary requests do not consume the script.
    quota = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "quota"}]}
    title = {"model": "claude-haiku-4-5", "max_tokens": 512, "system": "Generate a title",
             "messages": [{"role": "user", "content": "fix the bug"}]}  # fmt: skip
    for body in (quota, title):
        status, _, raw = post(m, body)
        assert status == 200 and json.loads(raw)["content"][0]["text"] == "ok"
    # Streaming: the full SSE sequence with input_json_delta pieces that concatenate.
    status, headers, raw = post(m, agent_body(stream=True))
    assert status == 200 and headers["content-type"] == "text/event-stream"
    events = parse_sse(raw)
    assert [e for e, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    partial = "".join(d["delta"]["partial_json"] for e, d in events if e == "content_block_delta")
    assert json.loads(partial) == {"command": "pwd"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"] == Usage(1, 2, 3, 4).as_dict()
    status, _, raw = post(m, agent_body("ping"))
    assert json.loads(raw)["content"] == [{"type": "text", "text": "echo: ping"}]
    # Script exhausted -> text("done"), streaming text too.
    status, _, raw = post(m, agent_body(stream=True))
    pieces = [d["delta"]["text"] for e, d in parse_sse(raw) if e == "content_block_delta"]
    assert "".join(pieces) == "done"
    # Other paths.
    status, _, raw = post(m, agent_body(), "/v1/messages/count_tokens")
    assert status == 200 and json.loads(raw)["input_tokens"] > 0
    assert urllib.request.urlopen(urllib.request.Request(m.base_url, method="HEAD")).status == 200
    assert post(m, {}, "/api/whatever")[0] == 404
    # Bookkeeping: everything recorded, auth stripped, ids unique.
    assert [r["kind"] for r in m.requests].count("auxiliary") == 2
    assert len(m.conversation_requests) == 8
    assert all("x-api-key" not in {k.lower() for k in r["headers"]} for r in m.requests)
    ids = [m.sent[0]["id"]] + [b["id"] for b in m.sent[0]["content"] if b["type"] == "tool_use"]
    ids += [m.new_id("msg") for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert ScriptedModel().new_id("msg") != ScriptedModel().new_id("msg")


def test_last_user_text_and_aux_detection() -> None:
    reminder = "<system-reminder>\nctx\n</system-reminder>"
    blocks = [{"type": "text", "text": reminder}, {"type": "text", "text": "do it"}]
    fresh = {"messages": [{"role": "user", "content": blocks}]}
    assert last_user_text(fresh) == "do it"
    # The resume shape: new prompt inside the user message that holds the last tool_result.
    resumed = {
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash"}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "out"},
                    {"type": "text", "text": f"{reminder}second prompt"},
                ],
            },
        ]
    }
    assert last_user_text(resumed) == "second prompt"
    assert last_user_text({"messages": resumed["messages"][:2]}) == "first"
    assert not is_auxiliary(agent_body())
    assert is_auxiliary(agent_body(max_tokens=1))
    assert is_auxiliary({**agent_body(), "tools": []})
    assert is_auxiliary({**agent_body(), "system": "Analyze if this message is a new topic"})


# ---------------------------------------------------------------------------------------------
# The real CLI


@pytest.mark.parametrize("permission", ["dontAsk", "skip"])
def test_bash_tool_edits_file_and_result_sums_usage(
    scripted_model: ScriptedModel, dirs: tuple[Path, Path], permission: str
) -> None:
    work, home = dirs
    (work / "f.txt").write_text("a\n")
    usages = [Usage(1000, 200, 300, 4000), Usage(50, 7, 0, 600)]
    scripted_model.script = [
        tool("Bash", {"command": "sed -i s/a/b/ f.txt", "description": "edit"}, usage=usages[0]),
        text("edited f.txt", usage=usages[1]),
    ]
    sid = str(uuid.uuid4())
    run = run_claude(
        scripted_model, "replace a by b", cwd=work, home=home, session_id=sid, permission=permission
    )
    print(json.dumps(shapes(run)))
    assert run.returncode == 0, run.stderr
    assert (work / "f.txt").read_text() == "b\n"
    assert shapes(run) == [
        "system/init",
        "assistant:tool_use",
        "user:tool_result",
        "assistant:text",
        "result/success",
    ]
    init = run.events[0]
    assert init["session_id"] == sid and init["model"] == DEFAULT_MODEL
    assert {"Bash", "Edit", "Write", "Read"} <= set(init["tools"])
    tool_result = run.of_type("user")[0]["message"]["content"][0]
    assert tool_result["is_error"] is False
    assert tool_result["tool_use_id"] == scripted_model.sent[0]["content"][0]["id"]

    res = run.result
    assert res["is_error"] is False and res["result"] == "edited f.txt"
    assert res["session_id"] == sid and res["num_turns"] == 2  # 1 + one tool_result
    # result.usage is the plain sum of the final (message_delta) usage of each response;
    # message_start's provisional output_tokens=1 is not added on top.
    u = res["usage"]
    assert u["input_tokens"] == 1050 and u["output_tokens"] == 207
    assert u["cache_creation_input_tokens"] == 300 and u["cache_read_input_tokens"] == 4600
    mu = res["modelUsage"][DEFAULT_MODEL]
    assert (mu["inputTokens"], mu["outputTokens"]) == (1050, 207)
    assert (mu["cacheCreationInputTokens"], mu["cacheReadInputTokens"]) == (300, 4600)
    # total_cost_usd = sonnet-4.5 list prices applied to those sums.
    assert res["total_cost_usd"] > 0
    assert res["total_cost_usd"] == pytest.approx(cost(usages), rel=1e-9)
    assert mu["costUSD"] == pytest.approx(res["total_cost_usd"])
    # Both requests were conversation turns; the second carries the tool_result.
    assert len(scripted_model.conversation_requests) == 2
    first, second = (r["json"] for r in scripted_model.conversation_requests)
    assert last_user_text(first) == "replace a by b" and first["model"] == DEFAULT_MODEL
    assert second["messages"][-1]["content"][0]["type"] == "tool_result"
    assert scripted_model.conversation_requests[0]["headers"]["X-Claude-Code-Session-Id"] == sid


def test_read_write_edit_tools(scripted_model: ScriptedModel, dirs: tuple[Path, Path]) -> None:
    work, home = dirs
    f, g = work / "f.txt", work / "g.txt"
    f.write_text("alpha\n")
    scripted_model.script = [
        # Two tool uses in one response; Edit refuses files that were not Read first.
        tools(("Read", {"file_path": str(f)}), ("Write", {"file_path": str(g), "content": "x\n"})),
        tool("Edit", {"file_path": str(f), "old_string": "alpha", "new_string": "beta"}),
        text("done editing"),
    ]
    run = run_claude(scripted_model, "edit", cwd=work, home=home)
    print(json.dumps(shapes(run)))
    assert run.returncode == 0, run.stderr
    assert f.read_text() == "beta\n" and g.read_text() == "x\n"
    results = [b for e in run.of_type("user") for b in e["message"]["content"]]
    assert len(results) == 3 and not any(r.get("is_error") for r in results)
    # num_turns is NOT the number of model calls (3): it is 1 + the number of tool_results.
    assert run.result["is_error"] is False and run.result["num_turns"] == 1 + len(results)
    # Both tool_results of the first response go back in one user message.
    second = scripted_model.conversation_requests[1]["json"]["messages"][-1]["content"]
    assert [b["type"] for b in second] == ["tool_result", "tool_result"]
    assert last_user_text(scripted_model.conversation_requests[1]["json"]) == ""


def test_tool_outside_allowed_tools_is_denied(
    scripted_model: ScriptedModel, dirs: tuple[Path, Path]
) -> None:
    work, home = dirs
    scripted_model.script = [tool("Bash", {"command": "touch made.txt"}), text("ok")]
    run = run_claude(scripted_model, "x", cwd=work, home=home, allowed_tools=("Read",))
    assert not (work / "made.txt").exists()
    result_block = run.of_type("user")[0]["message"]["content"][0]
    assert result_block["is_error"] is True and "denied" in result_block["content"]
    assert [d["tool_name"] for d in run.result["permission_denials"]] == ["Bash"]


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (500, "API Error: 500"),
        (429, "API Error: Request rejected (429)"),
        (529, "API Error: 529"),
    ],
)
def test_repeated_api_errors_end_the_run(
    scripted_model: ScriptedModel, dirs: tuple[Path, Path], status: int, message: str
) -> None:
    work, home = dirs
    scripted_model.script = [error(status, forever=True)]
    # Default is 10 retries with 0.5 s * 2**n backoff capped at 32 s: ~175 s. Two retries: ~2 s.
    run = run_claude(scripted_model, "hi", cwd=work, home=home, max_retries=2)
    print(f"{status}: {run.seconds:.1f}s", json.dumps(shapes(run)))
    assert run.returncode == 1
    res = run.result
    assert res["is_error"] is True and res["api_error_status"] == status
    assert res["result"].startswith(message) and f"scripted {error(status).type}" in res["result"]
    assert res["total_cost_usd"] == 0
    synthetic = run.of_type("assistant")[-1]
    assert synthetic["message"]["model"] == "<synthetic>"
    assert synthetic["error"] == {429: "rate_limit"}.get(status, "server_error")
    retries = run.of_type("system", "api_retry")
    assert [r["attempt"] for r in retries] == [1, 2]
    assert [r["error_status"] for r in retries] == [status, status]
    delays = [r["retry_delay_ms"] for r in retries]  # 500 ms * 2**(n-1) plus up to 25 % jitter
    assert 500 <= delays[0] <= 625 and 1000 <= delays[1] <= 1250
    assert len(scripted_model.conversation_requests) == 3  # 1 + 2 retries
    assert run.seconds < 15


def test_transient_error_is_retried_then_succeeds(
    scripted_model: ScriptedModel, dirs: tuple[Path, Path]
) -> None:
    work, home = dirs
    scripted_model.script = [error(529), text("recovered")]
    run = run_claude(scripted_model, "hi", cwd=work, home=home, max_retries=2)
    assert run.result["is_error"] is False and run.result["result"] == "recovered"
    assert len(run.of_type("system", "api_retry")) == 1


def test_max_turns(scripted_model: ScriptedModel, dirs: tuple[Path, Path]) -> None:
    work, home = dirs
    scripted_model.script = [tool("Bash", {"command": "echo hi", "description": "x"})] * 5
    run = run_claude(scripted_model, "loop", cwd=work, home=home, max_turns=1)
    print(json.dumps(shapes(run)))
    assert run.returncode == 1
    res = run.result
    assert res["subtype"] == "error_max_turns" and res["is_error"] is True
    assert res["stop_reason"] == "tool_use"
    # One model call was made (and paid for); the tool ran; num_turns = 1 + one tool_result.
    assert len(scripted_model.conversation_requests) == 1 and res["num_turns"] == 2
    assert "result" not in res and len(run.of_type("user")) == 1
    assert res["usage"]["input_tokens"] == Usage().input_tokens


def test_resume_resends_conversation(
    scripted_model: ScriptedModel, dirs: tuple[Path, Path]
) -> None:
    work, home = dirs
    (work / "f.txt").write_text("content-of-f\n")
    # The first run stops right after a tool_result (max turns), the hardest case to resume.
    scripted_model.script = [tool("Bash", {"command": "cat f.txt", "description": "read"})]
    first = run_claude(scripted_model, "first prompt", cwd=work, home=home, max_turns=1)
    assert first.result["subtype"] == "error_max_turns"
    first_tool_id = scripted_model.sent[0]["content"][0]["id"]

    scripted_model.script = [text("second answer")]
    run = run_claude(scripted_model, "second prompt", cwd=work, home=home, resume=first.session_id)
    print(json.dumps(shapes(run)))
    assert run.returncode == 0, run.stderr
    assert run.result["is_error"] is False and run.result["result"] == "second answer"
    assert run.result["session_id"] == first.session_id
    body = scripted_model.conversation_requests[-1]["json"]
    assert last_user_text(body) == "second prompt"
    flat = json.dumps(body["messages"])
    assert "first prompt" in flat and "content-of-f" in flat and first_tool_id in flat
    tool_uses = [
        b["id"]
        for msg in body["messages"]
        if isinstance(msg["content"], list)
        for b in msg["content"]
        if b.get("type") == "tool_use"
    ]
    assert tool_uses == [first_tool_id]
    # Every id the server ever handed out is distinct.
    sent_ids = [s["id"] for s in scripted_model.sent]
    sent_ids += [b["id"] for s in scripted_model.sent for b in s["content"] if "id" in b]
    assert len(set(sent_ids)) == len(sent_ids)
