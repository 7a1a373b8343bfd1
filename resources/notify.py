"""Notifications to people: a Slack incoming webhook, optional and off by default.

The platform posts when targets await review (with the start of their diff), when a campaign
finishes (counts and cost), on budget alerts, when pull requests merge, when a rollout wave
opens or the rollout halts, when a failing PR is repaired and when a default branch fails after
a merge. A connection dropped before any answer is tried again (twice); a post that still
fails is logged and never fails the work that caused it.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import dagster as dg
from pydantic import Field

from resources.dagster_resources import field_value

log = logging.getLogger(__name__)
Notify = Callable[[str, str], bool]  # (event kind, message) -> posted
KINDS = (
    "awaiting_review", "review_timeout", "campaign_finished", "budget", "merged",
    # rollout waves, CI-driven repair, the post-merge watch (stages/rollout.py, ci_repair.py)
    "rollout_wave", "rollout_halted", "ci_repair", "post_merge_failure",
)  # fmt: skip
TEXT_LIMIT = 3000  # Slack truncates a section's text beyond this
WEBHOOK_ENV = "ORCHESTRATOR_SLACK_WEBHOOK_URL"  # the variable holding the webhook URL
TRIES = 3  # a connection torn down before any answer is tried again, up to this many times
# Connection-level failures with no answer from the host: worth another try. An HTTP error
# answer (404 for a revoked webhook, 400 for a bad payload) is final.
TRANSIENT = (ConnectionError, TimeoutError)  # http.client.RemoteDisconnected is a ConnectionError


class SlackNotifier:
    """Posts messages to one Slack incoming webhook."""

    def __init__(self, webhook_url: str, kinds: tuple[str, ...] = KINDS, timeout_s: float = 10):
        self.webhook_url = webhook_url
        self.kinds = kinds
        self.timeout_s = timeout_s

    def __call__(self, kind: str, message: str) -> bool:
        """Post `message` (Slack mrkdwn) for an event of `kind`; False when it did not go."""
        if kind not in self.kinds:
            return False
        text = message if len(message) <= TEXT_LIMIT else message[: TEXT_LIMIT - 1] + "…"
        payload = {
            "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
            "metadata": {"event_type": f"campaign_{kind}", "event_payload": {"kind": kind}},
        }
        request = urllib.request.Request(
            self.webhook_url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        for attempt in range(1, TRIES + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return 200 <= response.status < 300
            except urllib.error.HTTPError as exc:
                return self._failed(kind, f"HTTP {exc.code}")
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                if attempt < TRIES and isinstance(reason, TRANSIENT):
                    time.sleep(0.2 * attempt)  # a busy host drops connections for a moment
                    continue
                return self._failed(kind, reason)
        return False

    @staticmethod
    def _failed(kind: str, reason: object) -> bool:
        # The webhook URL is a secret: say where it failed without it.
        log.warning("slack notification (%s) failed: %s", kind, reason)
        return False


def no_notifier(kind: str, message: str) -> bool:
    """Notifications off: nothing is posted."""
    return False


class NotifierResource(dg.ConfigurableResource):
    """Where notifications go: a Slack incoming webhook, configured as `dg.EnvVar`, so the URL
    (a secret) is read when a run starts and shown in the UI by its variable's name only.

    Off when the URL is empty. The default, `dg.EnvVar(WEBHOOK_ENV)`, serves plain code (the
    sensors build `NotifierResource()` outside any run); Dagster fails a run whose EnvVar is
    unset, so definitions pass `webhook_url=""` when the variable is unset (resources/build.py).
    """

    webhook_url: str = Field(
        default=dg.EnvVar(WEBHOOK_ENV),
        description=f"the Slack incoming webhook URL, as dg.EnvVar (default {WEBHOOK_ENV}); "
        "empty: notifications off",
    )
    kinds: list[str] = list(KINDS)

    def get(self) -> Notify:
        """The notifier to call with (kind, message)."""
        url = field_value(self.webhook_url).strip()
        return SlackNotifier(url, tuple(self.kinds)) if url else no_notifier
