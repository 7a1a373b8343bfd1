"""Model-only egress: a container without a network reaches exactly one endpoint, the model's.

The container runs with `--network none`. On the host, a `ModelProxy` listens on a Unix socket in
a directory mounted into the container and forwards each connection, byte for byte, to the model
endpoint's host and port (TLS passes through untouched: the agent still checks the real
certificate). Inside the container a `socat` forwarder listens on 127.0.0.1:<port> and the
endpoint's host name resolves to 127.0.0.1, so the agent uses its usual URL and nothing else can
be reached.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import socket
import socketserver
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

SOCKET_DIR = "/run/orchestrator-model"  # where the proxy's socket is mounted in the container
SOCKET_NAME = "model.sock"
DEFAULT_MODEL_URL = "https://api.anthropic.com"


def endpoint_of(url: str | None) -> tuple[str, int]:
    """The host and port of a model endpoint URL (the Anthropic API when none is set)."""
    parsed = urlparse(url or DEFAULT_MODEL_URL)
    if not parsed.hostname:
        raise ValueError(f"{url!r} is not a model endpoint URL")
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def is_ip(host: str) -> bool:
    """True for a literal IP address (which needs no name in the container's hosts file)."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return True
    return False


def wrap_command(argv: list[str], port: int) -> list[str]:
    """`argv` run after a forwarder from 127.0.0.1:`port` to the proxy socket is listening.
    The argv is passed as positional parameters, never interpolated into the script."""
    script = (
        f"socat TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr "
        f"UNIX-CONNECT:{SOCKET_DIR}/{SOCKET_NAME} & "
        # Wait until the forwarder listens, so the agent's first request is not refused.
        f"for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; "
        "sleep 0.1; done; "
        'exec "$@"'
    )
    return ["bash", "-c", script, "agent", *argv]


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        proxy: ModelProxy = self.server.proxy  # type: ignore[attr-defined]
        try:
            upstream = socket.create_connection((proxy.host, proxy.port), timeout=30)
        except OSError:
            return
        upstream.settimeout(None)
        proxy.connections += 1
        pump = threading.Thread(target=_copy, args=(upstream, self.request), daemon=True)
        pump.start()
        _copy(self.request, upstream)
        pump.join()
        upstream.close()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class ModelProxy:
    """Forwards connections from a Unix socket to one host and port, for one container."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.connections = 0
        self.directory = Path(tempfile.mkdtemp(prefix="model-proxy-"))
        self.directory.chmod(0o755)
        self._server = socketserver.ThreadingUnixStreamServer(
            str(self.directory / SOCKET_NAME), _Handler
        )
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        (self.directory / SOCKET_NAME).chmod(0o777)  # the container may run as another uid
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop forwarding and remove the socket."""
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)
