"""The Slack notifier against a local webhook that drops connections, as a busy host does."""

from __future__ import annotations

import json
import socket
import threading

from resources.notify import SlackNotifier


class FlakyWebhook:
    """A webhook on loopback that drops the first `drops` connections unanswered, then answers
    200 and keeps each posted body."""

    def __init__(self, drops: int) -> None:
        self.drops = drops
        self.connections = 0
        self.bodies: list[dict] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/services/T/B/X"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                if self.connections <= self.drops:
                    # A reset, not a clean close: the client sees the connection torn down.
                    conn.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    continue
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, body = data.split(b"\r\n\r\n", 1)
                length = int(
                    next(
                        line.split(b":", 1)[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                while len(body) < length:
                    body += conn.recv(65536)
                self.bodies.append(json.loads(body))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def close(self) -> None:
        self.sock.close()


def test_a_dropped_connection_is_retried_and_the_message_arrives_once():
    hook = FlakyWebhook(drops=1)
    try:
        assert SlackNotifier(hook.url)("campaign_finished", "pr_open: 1") is True
        assert [b["text"] for b in hook.bodies] == ["pr_open: 1"]
        assert hook.connections == 2
    finally:
        hook.close()


def test_a_webhook_that_keeps_dropping_fails_quietly_after_a_bounded_number_of_tries(caplog):
    hook = FlakyWebhook(drops=100)
    try:
        assert SlackNotifier(hook.url)("campaign_finished", "pr_open: 1") is False
        assert hook.bodies == [] and hook.connections == 3
        failed = [r.getMessage() for r in caplog.records if "slack notification" in r.getMessage()]
        assert len(failed) == 1 and "campaign_finished" in failed[0]
        assert "/services/" not in failed[0]  # the webhook URL is a secret
    finally:
        hook.close()


def test_an_http_error_answer_is_not_retried():
    """Slack answered (e.g. 404 for a revoked webhook): posting again would not help."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Gone(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gone)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        assert SlackNotifier(url)("merged", "merged") is False
        assert len(hits) == 1
    finally:
        server.shutdown()
        server.server_close()
