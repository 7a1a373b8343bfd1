"""Talking to the Kubernetes API for the cluster providers: calls retried on throttling and server
errors, one-line error messages, raw JSON bodies, objects created under fresh names, and watching
one object until it is ready.

Calls pass `_preload_content=False` and read the JSON themselves (`json_body`): objects stay
plain dicts, never the client's strict models (a custom resource has none).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

log = logging.getLogger(__name__)

RETRIED = (429, 500, 502, 503, 504)
BACKOFF = wait_exponential(multiplier=0.25, max=8.0)  # 0.25 s, 0.5 s, 1 s … at most 8 s
RETRY_AFTER_CAP_S = 30.0  # a server asking for longer is not waited for longer than this
NAME_DRAWS = 3  # fresh names tried when the one drawn is taken

T = TypeVar("T")


class SandboxNotReady(RuntimeError):
    """A pod or claim did not become ready; the message names it and says why."""


def api_error(exc: Exception) -> str:
    """One line for an API error: status, reason and the server's message."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    message, reason = "", getattr(exc, "reason", "") or ""
    if body:
        with suppress(ValueError, TypeError, AttributeError):
            status_body = json.loads(body)
            message = status_body.get("message", "")
            reason = status_body.get("reason") or reason  # the API's word (Invalid, Forbidden)
    return f"{status} {reason}: {message}".strip(": ") if status else str(exc)[:300]


def retry_after(exc: Any) -> float | None:
    """The server's Retry-After (seconds), if it sent one."""
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    with suppress(TypeError, ValueError):
        return max(0.0, float(value)) if value is not None else None
    return None


def has_status(*statuses: int) -> Callable[[BaseException], bool]:
    """A test for an API error answered with one of `statuses`."""

    def test(exc: BaseException) -> bool:
        from kubernetes.client.exceptions import ApiException

        return isinstance(exc, ApiException) and exc.status in statuses

    return test


def _server_wait(state: RetryCallState) -> float:
    """How long to wait before the next try: the server's Retry-After when it sent one (capped),
    else exponential backoff."""
    exc = state.outcome.exception() if state.outcome else None
    asked = retry_after(exc)
    return BACKOFF(state) if asked is None else min(asked, RETRY_AFTER_CAP_S)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    delay = state.next_action.sleep if state.next_action else 0.0
    log.info("Kubernetes API answered %s; retrying in %.1fs", getattr(exc, "status", "?"), delay)


def call(fn: Callable[..., T], *args: Any, attempts: int = 6, **kwargs: Any) -> T:
    """Call the API, retrying throttling (429, honouring Retry-After) and 5xx answers with
    backoff; anything else raises at once, and so does the last failure."""
    # time.sleep, as before: these waits are short and not tied to a worker's cancel scope.
    retrying = Retrying(
        retry=retry_if_exception(has_status(*RETRIED)),
        stop=stop_after_attempt(attempts),
        wait=_server_wait,
        before_sleep=_log_retry,
        sleep=time.sleep,
        reraise=True,
    )
    return retrying(fn, *args, **kwargs)


def delete_quietly(delete: Callable[[], Any], what: str) -> None:
    """Run `delete` for a cleanup that must not raise: an object already gone (404) is fine, any
    other failure is logged (`what` names the object)."""
    from kubernetes.client.exceptions import ApiException

    try:
        delete()
    except ApiException as exc:
        if exc.status != 404:
            log.warning("cannot delete %s: %s", what, api_error(exc))
    except Exception as exc:
        log.warning("cannot delete %s: %s", what, exc)


def json_body(response: Any) -> dict:
    """The JSON body of a raw (not preloaded) API response."""
    data = response.data if hasattr(response, "data") else response
    return json.loads(data) if isinstance(data, bytes | str) else dict(data)


def create_named(
    draw: Callable[[], str], create: Callable[[str], Any], what: str, where: str, detail: str
) -> tuple[str, dict]:
    """Create an object under a name from `draw`, drawing another when it is taken (409); the
    name and the created object. Raises SandboxNotReady saying what (`what` in namespace
    `where`, `detail`) could not be created."""
    from kubernetes.client.exceptions import ApiException

    names: list[str] = []

    def attempt() -> tuple[str, dict]:
        names.append(draw())
        return names[-1], json_body(call(create, names[-1]))

    try:
        return Retrying(
            retry=retry_if_exception(has_status(409)),
            stop=stop_after_attempt(NAME_DRAWS),
            reraise=True,
        )(attempt)
    except ApiException as exc:
        if exc.status == 409:
            raise SandboxNotReady(
                f"cannot create a {what} in {where}: every name drawn was taken"
            ) from None
        raise SandboxNotReady(
            f"cannot create {what} {where}/{names[-1]} ({detail}): {api_error(exc)}"
        ) from None


def wait_for(
    list_fn: Any,
    list_args: Sequence[Any],
    name: str,
    first: Mapping[str, Any],
    judge: Any,
    timeout_s: float,
    what: str,
    read: Any,
) -> Mapping[str, Any]:
    """Watch one object (by name, from `first`'s resourceVersion) until `judge` says it is
    ready; raise SandboxNotReady when it never will be or `timeout_s` passes. A watch whose
    resourceVersion is too old (410 Gone) starts again from a fresh read."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + timeout_s
    obj = first
    ready, fatal, doing = judge(obj)
    while not ready:
        if fatal:
            raise SandboxNotReady(f"{what} will not become ready: {fatal}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SandboxNotReady(f"{what} was not ready after {timeout_s:.0f}s: {doing}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        try:
            # return_type "object": events stay dicts, never strict client models.
            for event in watch.Watch(return_type="object").stream(
                list_fn,
                *list_args,
                field_selector=f"metadata.name={name}",
                resource_version=rv,
                timeout_seconds=max(1, int(min(remaining, 60))),
                _request_timeout=min(remaining, 60) + 15,
            ):
                # (deserialize=False would break the client's own handling of ERROR events.)
                kind, current = event.get("type"), event.get("raw_object") or {}
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    raise SandboxNotReady(f"{what} was deleted while it was starting")
                obj = current
                ready, fatal, doing = judge(obj)
                if ready or fatal or time.monotonic() > deadline:
                    break
        except ApiException as exc:
            if exc.status == 410:  # our resourceVersion is gone: start again from now
                obj = read()
                ready, fatal, doing = judge(obj)
            elif exc.status in RETRIED:
                time.sleep(0.5)
            else:
                raise
    return obj
