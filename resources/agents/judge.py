"""The LLM judge: a model that compares a change's diff with the request and approves or vetoes.

After the verifiers pass, a change can still do more or less than was asked: refactor what it
should not, disable or weaken tests, or leave part of the request undone. The judge sees the
original request and the diff — never the agent's transcript, so it judges the result, not
the story — and must answer through one tool, `record_verdict`, whose schema makes the verdict
structured: `approve`, or `veto` with reasons of a known kind.

    verdict = judge_change(request_text, diff, model="claude-sonnet-4-5", criteria=[...])
    verdict.vetoed, verdict.reasons, verdict.cost_usd

It calls the Messages API at `ANTHROPIC_BASE_URL` (default the public API) with
`ANTHROPIC_API_KEY` (or `ANTHROPIC_AUTH_TOKEN`), the same endpoint the agent uses, and prices
the tokens itself (`PRICES`), since no CLI reports its cost.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import requests
from pydantic import BaseModel, Field, ValidationError
from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

DEFAULT_MODEL = "claude-sonnet-4-5"
DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
TOOL_NAME = "record_verdict"
MAX_REASONS = 10
DETAIL_CHARS = 600
RETRIED_STATUSES = (408, 409, 429, 500, 502, 503, 504, 529)
BACKOFF = wait_exponential(multiplier=0.5, max=8.0)  # 0.5 s, 1 s, 2 s … at most 8 s

ReasonKind = Literal["scope_creep", "weakened_tests", "unrelated_refactor", "missing_part", "other"]
REASON_KINDS: dict[str, str] = {
    "scope_creep": "changes the request did not ask for",
    "weakened_tests": "tests deleted, skipped or disabled, or assertions loosened",
    "unrelated_refactor": "renames, reformatting or restructuring unrelated to the request",
    "missing_part": "a part of the request that the diff does not do",
    "other": "anything else that should stop this change",
}

# US dollars per million tokens: input, output, cache write (5 min), cache read. Model names
# are matched by prefix, so dated ids (claude-sonnet-4-5-20250929) find their family.
PRICES: dict[str, tuple[float, float, float, float]] = {
    "claude-opus-4-5": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-1": (15.0, 75.0, 18.75, 1.50),
    "claude-opus-4": (15.0, 75.0, 18.75, 1.50),
    "claude-sonnet-4-5": (3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4": (3.0, 15.0, 3.75, 0.30),
    "claude-3-7-sonnet": (3.0, 15.0, 3.75, 0.30),
    "claude-haiku-4-5": (1.0, 5.0, 1.25, 0.10),
    "claude-3-5-haiku": (0.80, 4.0, 1.0, 0.08),
}
FAMILY_PRICES = {"opus": PRICES["claude-opus-4-1"], "sonnet": PRICES["claude-sonnet-4-5"],
                 "haiku": PRICES["claude-haiku-4-5"]}  # fmt: skip

SYSTEM_PROMPT = """\
You review one automated code change of a campaign that applies the same change across many
repositories. You get the request the coding agent was given and the diff it produced; its
tests and checks already pass. Decide whether the diff does what was asked, all of it, and
nothing else. Veto when any of these holds:
{kinds}
Small edits that the requested change needs (imports, a test updated for a renamed name) are
in scope. Do not veto for style. Answer only by calling the `record_verdict` tool once."""


class JudgeError(RuntimeError):
    """The judge could not give a verdict (API error, no structured answer)."""


class JudgeReason(BaseModel):
    """Why the judge vetoed: a kind from REASON_KINDS and what it saw."""

    kind: ReasonKind
    detail: str = Field(max_length=DETAIL_CHARS)


class Verdict(BaseModel):
    """The judge's structured verdict, with what asking for it cost."""

    verdict: Literal["approve", "veto"]
    reasons: list[JudgeReason] = Field(default_factory=list)
    summary: str = ""
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True  # False: the model is not in PRICES; its family's price was used
    duration_s: float = 0.0
    diff_truncated: bool = False

    @property
    def vetoed(self) -> bool:
        """True when the judge vetoed the change."""
        return self.verdict == "veto"

    def feedback(self) -> str:
        """The veto as an instruction for the agent (empty for an approval)."""
        return veto_feedback([r.model_dump() for r in self.reasons]) if self.vetoed else ""


def veto_feedback(reasons: Sequence[Mapping[str, Any]]) -> str:
    """A veto's reasons (`kind`, `detail`) as an instruction for the agent: the one wording both
    a fresh verdict and a recorded one are sent back with."""
    lines = [
        "A reviewer compared your diff with the request and vetoed it:",
        *[f"- {r.get('kind')}: {r.get('detail')}" for r in reasons],
        "Change the diff so that it does what the request asks, all of it and nothing else; "
        "keep every test, and do not weaken any.",
    ]
    return "\n".join(lines)


def price(model: str, usage: dict[str, Any]) -> tuple[float, bool]:
    """The cost of one response's usage in US dollars, and whether the model was priced
    exactly (else its family's price, or Sonnet's, was used)."""
    table = next((p for name, p in PRICES.items() if model.startswith(name)), None)
    exact = table is not None
    if table is None:
        family = next((f for f in FAMILY_PRICES if f in model), "sonnet")
        table = FAMILY_PRICES[family]
    rates = dict(zip(("input_tokens", "output_tokens", "cache_creation_input_tokens",
                      "cache_read_input_tokens"), table, strict=True))  # fmt: skip
    cost = sum(int(usage.get(k) or 0) * rate for k, rate in rates.items()) / 1_000_000
    return round(cost, 6), exact


def verdict_tool() -> dict[str, Any]:
    """The tool the judge must call: its input schema is the verdict's structure."""
    return {
        "name": TOOL_NAME,
        "description": "Record the verdict on the change: approve, or veto with reasons.",
        "input_schema": {
            "type": "object",
            "properties": {
                "verdict": {"type": "string", "enum": ["approve", "veto"]},
                "reasons": {
                    "type": "array",
                    "description": "why the change is vetoed (empty for approve)",
                    "items": {
                        "type": "object",
                        "properties": {
                            "kind": {"type": "string", "enum": list(REASON_KINDS)},
                            "detail": {"type": "string", "description": "what, where"},
                        },
                        "required": ["kind", "detail"],
                    },
                },
                "summary": {"type": "string", "description": "one sentence on the change"},
            },
            "required": ["verdict", "reasons"],
        },
    }


def build_prompt(
    request: str, diff: str, criteria: Sequence[str] = (), max_diff_chars: int = 60_000
) -> tuple[str, bool]:
    """The judge's user message, and whether the diff had to be cut to `max_diff_chars`."""
    truncated = len(diff) > max_diff_chars
    shown = diff[:max_diff_chars] + ("\n… (diff cut here)" if truncated else "")
    parts = [
        "<request>",
        request.strip(),
        "</request>",
        "",
        "<diff>",
        shown.rstrip() or "(empty diff)",
        "</diff>",
    ]
    if criteria:
        parts += ["", "Also veto (kind `other`) when any of these is not met:"]
        parts += [f"- {c}" for c in criteria]
    if truncated:
        parts += ["", f"The diff was longer than {max_diff_chars} characters and is cut."]
    return "\n".join(parts), truncated


def judge_change(
    request: str,
    diff: str,
    *,
    model: str = DEFAULT_MODEL,
    criteria: Sequence[str] = (),
    base_url: str | None = None,
    api_key: str | None = None,
    max_diff_chars: int = 60_000,
    max_tokens: int = 2000,
    timeout_s: float = 120,
    max_retries: int = 2,
    session: requests.Session | None = None,
) -> Verdict:
    """Ask the judge model for a verdict on `diff` made for `request`; raises JudgeError when
    no verdict can be had. `base_url`/`api_key` default to ANTHROPIC_BASE_URL and
    ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN)."""
    started = time.monotonic()
    prompt, truncated = build_prompt(request, diff, criteria, max_diff_chars)
    kinds = "\n".join(f"- {k}: {v}" for k, v in REASON_KINDS.items() if k != "other")
    body = {
        "model": model,
        "max_tokens": max_tokens,
        "system": SYSTEM_PROMPT.format(kinds=kinds),
        "messages": [{"role": "user", "content": prompt}],
        "tools": [verdict_tool()],
        "tool_choice": {"type": "tool", "name": TOOL_NAME},
    }
    message = _post(body, base_url, api_key, timeout_s, max_retries, session)
    usage = message.get("usage") or {}
    cost, exact = price(model, usage)
    answer = next(
        (b.get("input") for b in message.get("content") or []
         if b.get("type") == "tool_use" and b.get("name") == TOOL_NAME),
        None,
    )  # fmt: skip
    if not isinstance(answer, dict):
        raise JudgeError(f"the judge ({model}) answered without calling {TOOL_NAME}")
    reasons = []
    for item in (answer.get("reasons") or [])[:MAX_REASONS]:
        if not isinstance(item, dict):
            continue
        kind = item.get("kind") if item.get("kind") in REASON_KINDS else "other"
        reasons.append(JudgeReason(kind=kind, detail=str(item.get("detail") or "")[:DETAIL_CHARS]))
    if answer.get("verdict") == "veto" and not reasons:
        reasons = [JudgeReason(kind="other", detail="the judge gave no reason")]
    try:
        return Verdict(
            verdict=answer.get("verdict"),
            reasons=reasons if answer.get("verdict") == "veto" else [],
            summary=str(answer.get("summary") or "")[:DETAIL_CHARS],
            model=str(message.get("model") or model),
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            cache_read_tokens=int(usage.get("cache_read_input_tokens") or 0),
            cache_write_tokens=int(usage.get("cache_creation_input_tokens") or 0),
            cost_usd=cost,
            priced=exact,
            duration_s=round(time.monotonic() - started, 3),
            diff_truncated=truncated,
        )
    except ValidationError:
        raise JudgeError(
            f"the judge ({model}) gave no valid verdict: {str(answer.get('verdict'))[:80]!r}"
        ) from None


def _post(
    body: dict[str, Any],
    base_url: str | None,
    api_key: str | None,
    timeout_s: float,
    max_retries: int,
    session: requests.Session | None,
) -> dict[str, Any]:
    """POST /v1/messages with retries on overload and server errors; the response JSON."""
    # Read by name, not as a Dagster EnvVar: the judge uses the agent's own credentials (which
    # the CLI reads from its environment in the sandbox), either of two variables may carry
    # them, and campaigns without `judge:` need none, whereas an unset EnvVar fails every run.
    url = (base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    headers = {"anthropic-version": API_VERSION, "content-type": "application/json"}
    key = api_key or os.environ.get("ANTHROPIC_API_KEY")
    token = os.environ.get("ANTHROPIC_AUTH_TOKEN")
    if key:
        headers["x-api-key"] = key
    elif token:
        headers["authorization"] = f"Bearer {token}"
    else:
        raise JudgeError("the judge needs ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN)")
    http = session or requests.Session()
    retrying = Retrying(
        retry=retry_if_exception_type(requests.RequestException)
        | retry_if_result(lambda response: response.status_code in RETRIED_STATUSES),
        stop=stop_after_attempt(max_retries + 1),
        wait=BACKOFF,
        sleep=time.sleep,
        # Out of attempts: the last answer is judged below, the last exception raised here.
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )
    try:
        response = retrying(
            http.post, f"{url}/v1/messages", json=body, headers=headers, timeout=timeout_s
        )
    except requests.RequestException as exc:
        # The exception's text names the URL, never the key (it is in a header).
        raise JudgeError(f"the judge could not reach {url}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise JudgeError(f"the judge's API answered {response.status_code}: "
                         f"{_error_message(response)}")  # fmt: skip
    try:
        data = response.json()
    except ValueError:
        raise JudgeError("the judge's API answered with something that is not JSON") from None
    if not isinstance(data, dict):
        raise JudgeError("the judge's API answered with an unexpected shape")
    return data


def _error_message(response: requests.Response) -> str:
    try:
        error = response.json().get("error") or {}
        return str(error.get("message") or error.get("type") or "")[:300]
    except (ValueError, AttributeError):
        return response.text[:300]
