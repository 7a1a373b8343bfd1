"""What the loopback forge fakes (tests/fake_github.py, fake_gitlab.py, fake_bitbucket.py) share:
the threaded HTTP server and its request reader, the recorded `Call`s, fault rules, git smart HTTP
through `git http-backend`, bare repositories with commits and branch refs, and page arithmetic.

Each fake subclasses `FakeForgeServer` and implements `answer(call)`, its API and git routing;
the shapes of its answers (JSON fields, errors, page headers) stay with the fake, since those are
the contract of the code host it plays.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

from resources.git import author_env, run_git

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # the fakes' clock starts here and ticks per change

Answer = tuple[int, dict[str, str], Any]  # status, headers, body (JSON value, text or bytes)


@dataclass
class Call:
    """One request a fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0

    def json(self) -> Any:
        """The request body parsed as JSON."""
        return json.loads(self.body) if self.body else None


@dataclass
class Fault:
    """A rule that makes matching requests fail as `kind` (what a kind means is the fake's).

    `path` is a regex on the path after the API prefix; `times` caps how many requests it may
    hit (None: unlimited), `per_request` how many times one same request (method, path, body)
    may be hit, `probability` the chance a matching request is hit."""

    kind: str
    methods: set[str]
    path: re.Pattern
    times: int | None = None
    retry_after: int = 1
    reset_in: int = 5
    probability: float = 1.0
    per_request: int | None = None
    hits: int = 0


class FakeForgeServer:
    """A fake code host's server and shared state: serves on a free port of 127.0.0.1 in a
    background thread (a context manager, or `start()`/`stop()`), records every request in
    `calls`, and keeps fault rules, ids and a ticking clock. Subclasses answer requests."""

    first_id = 1000  # ids handed out by `_next_id` start after this

    def __init__(self, token: str, root: Path, api_prefix: str):
        self.token = token
        self.root = Path(root)
        self.git_root = self.root / "git"
        self.git_root.mkdir(parents=True, exist_ok=True)
        self.api_prefix = api_prefix
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.fault_log: list[tuple[str, str, str]] = []  # (kind, method, path)
        self._faulted: dict[str, int] = {}
        self._rng = random.Random(1234)
        self._lock = threading.RLock()
        self._ids = self.first_id
        self._tick = 0
        self._server: ThreadingHTTPServer | None = None

    # lifecycle -----------------------------------------------------------------------------------

    def start(self) -> Self:
        """Serve on a free port of 127.0.0.1 in a background thread."""

        class Handler(ForgeHandler):
            pass

        Handler.fake = self
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port served on."""
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def web(self) -> str:
        """The web root (html URLs and clone URLs live here)."""
        return f"http://127.0.0.1:{self.port}"

    def answer(self, call: Call) -> tuple[int, dict[str, str], bytes]:
        """Answer one request: (status, headers, raw body). Each fake routes git and its API."""
        raise NotImplementedError

    # state ---------------------------------------------------------------------------------------

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _next_tick(self) -> int:
        """One more second on the fake's clock: every change moves its `updated` time."""
        with self._lock:
            self._tick += 1
            return self._tick

    def api_path(self, path: str) -> str:
        """A request path without the API prefix (what faults and `calls_to` match)."""
        return path.removeprefix(self.api_prefix)

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        """Recorded API calls with `method` whose path after the API prefix matches `pattern`."""
        rx = re.compile(pattern)
        calls = list(self.calls)
        return [c for c in calls if c.method == method and rx.fullmatch(self.api_path(c.path))]

    def _add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _fault_for(self, call: Call, path: str) -> Fault | None:
        """The first fault rule that hits this request (`path`: after the API prefix), counted
        and logged in `fault_log`; None when none does."""
        key = f"{call.method} {call.path} {hashlib.sha1(call.body).hexdigest()}"
        with self._lock:
            for fault in self.faults:
                if call.method not in fault.methods or not fault.path.fullmatch(path):
                    continue
                if fault.times is not None and fault.hits >= fault.times:
                    continue
                if fault.per_request is not None and self._faulted.get(key, 0) >= fault.per_request:
                    continue
                if self._rng.random() >= fault.probability:
                    continue
                fault.hits += 1
                self._faulted[key] = self._faulted.get(key, 0) + 1
                self.fault_log.append((fault.kind, call.method, path))
                return fault
        return None


class ForgeHandler(BaseHTTPRequestHandler):
    """Reads a request (chunked bodies too), records it, hands it to the fake, writes the answer."""

    fake: FakeForgeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep quiet: requests are recorded in the fake's `calls` instead."""

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        call = Call(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self._body(),
        )
        with self.fake._lock:
            self.fake.calls.append(call)
        try:
            status, headers, raw = self.fake.answer(call)
        except Exception as exc:  # a bug in the fake: answer 500, visibly
            status, headers, raw = json_answer(500, {}, {"message": f"fake error: {exc!r}"})
        call.status = status
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _handle


def json_answer(status: int, headers: dict[str, str], payload: Any) -> tuple[int, dict, bytes]:
    """An API answer as bytes: text as is, None as no body, anything else as JSON."""
    if isinstance(payload, str):
        return status, headers, payload.encode()
    if payload is None:
        return status, headers, b""
    return (
        status,
        {"Content-Type": "application/json; charset=utf-8", **headers},
        (json.dumps(payload).encode()),
    )


# git ---------------------------------------------------------------------------------------------


def basic_credentials(call: Call) -> tuple[str, str] | None:
    """(user, password) of the request's HTTP Basic authorization; None without one."""
    scheme, _, value = call.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def unauthorized_git(realm: str) -> tuple[int, dict[str, str], bytes]:
    """The 401 that makes git ask for (or give up on) credentials."""
    return 401, {"WWW-Authenticate": f'Basic realm="{realm}"'}, b"Unauthorized\n"


def git_http_backend(
    call: Call, fake: FakeForgeServer, path_info: str, remote_user: str
) -> tuple[int, dict[str, str], bytes]:
    """Answer a git smart HTTP request (already authenticated) through `git http-backend`,
    serving the bare repositories under `fake.git_root`, pushes allowed."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(fake.root),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_PROJECT_ROOT": str(fake.git_root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.receivepack",
        "GIT_CONFIG_VALUE_0": "true",
        "PATH_INFO": path_info,
        "QUERY_STRING": urlencode({k: v[0] for k, v in call.query.items()}),
        "REQUEST_METHOD": call.method,
        "CONTENT_TYPE": call.headers.get("content-type", ""),
        "CONTENT_LENGTH": str(len(call.body)),
        "REMOTE_USER": remote_user,
        "REMOTE_ADDR": "127.0.0.1",
        "GATEWAY_INTERFACE": "CGI/1.1",
    }
    if "git-protocol" in call.headers:
        env["GIT_PROTOCOL"] = call.headers["git-protocol"]
    if "content-encoding" in call.headers:
        env["HTTP_CONTENT_ENCODING"] = call.headers["content-encoding"]
    proc = subprocess.run(
        ["git", "http-backend"], input=call.body, env=env, capture_output=True, timeout=60
    )
    head, sep, body = proc.stdout.partition(b"\r\n\r\n")
    if not sep:
        head, _, body = proc.stdout.partition(b"\n\n")
    status, headers = 200, {}
    for line in head.decode("latin-1").splitlines():
        key, _, val = line.partition(":")
        if key.lower() == "status":
            status = int(val.strip().split()[0])
        elif key:
            headers[key.strip()] = val.strip()
    return status, headers, body


def init_bare(bare: Path, branch: str) -> Path:
    """A new bare repository at `bare` whose initial branch is `branch`."""
    bare.parent.mkdir(parents=True, exist_ok=True)
    run_git(["init", "--quiet", "--bare", f"--initial-branch={branch}", str(bare)])
    return bare


def commit_files(bare: Path, branch: str, files: dict[str, str], parent: str | None) -> str:
    """Commit `files` on top of `parent` (or as a root commit) to `branch` of the bare
    repository; returns the new commit's sha."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_git(["init", "--quiet", str(work)])
        if parent:
            run_git(["fetch", "--quiet", str(bare), parent], work)
            run_git(["checkout", "--quiet", "--detach", "FETCH_HEAD"], work)
        for rel, text in files.items():
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        run_git(["add", "-A"], work)
        env = author_env("Fake", "fake@example.com")
        run_git(["commit", "--quiet", "-m", f"update {branch}"], work, env=env)
        sha = run_git(["rev-parse", "HEAD"], work).strip()
        run_git(["push", "--quiet", str(bare), f"HEAD:refs/heads/{branch}"], work)
    return sha


def branch_refs(bare: Path | None) -> dict[str, str]:
    """Branch name -> sha of a bare repository ({} without one)."""
    if bare is None:
        return {}
    out = run_git(["for-each-ref", "--format=%(refname:strip=2) %(objectname)", "refs/heads"], bare)
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def merge_tree(bare: Path | None, base: str | None, head: str | None) -> str | None:
    """The tree `git merge-tree` makes of merging `head` into `base`; None when either is
    missing or they conflict."""
    if not base or not head or bare is None:
        return None
    out = run_git(["merge-tree", "--write-tree", base, head], bare, check=False)
    return out.split()[0] if out and "CONFLICT" not in out else None


# pages -------------------------------------------------------------------------------------------


@dataclass
class Page:
    """One page of a list asked for with `per_page`/`page` (GitHub and GitLab alike)."""

    number: int
    per_page: int
    pages: int
    chunk: list


def page_of(call: Call, items: list, default_per_page: int) -> Page:
    """The page of `items` the request asks for (`per_page` capped at 100)."""
    per_page = min(int(call.query.get("per_page", [str(default_per_page)])[0]), 100)
    number = max(int(call.query.get("page", ["1"])[0]), 1)
    pages = max((len(items) + per_page - 1) // per_page, 1)
    return Page(number, per_page, pages, items[(number - 1) * per_page : number * per_page])


def page_link(web: str, call: Call, page: int, rel: str) -> str:
    """One `Link` header entry: the request again, for page `page`."""
    query = {k: v[-1] for k, v in call.query.items()}
    query["page"] = str(page)
    return f'<{web}{call.path}?{urlencode(query)}>; rel="{rel}"'
