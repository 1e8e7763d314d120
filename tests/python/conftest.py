"""Starting the real likewise binary for Python client tests, and small HTTP helpers.

`start_likewise()` runs `likewise serve` on free loopback ports with a temporary data
directory, reads the `listening http=` / `listening resp=` lines it logs, and
`Likewise.stop()` sends SIGTERM and checks that it exits 0. The `likewise` fixture
does both around one test; other suites (e.g. Socket.IO clients) reuse it.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("LIKEWISE_BIN", ROOT / "target" / "debug" / "likewise"))
ADMIN_TOKEN = "python-suite-admin-token-0123456789"
PASSWORD = "password123"
LISTENING = re.compile(r"listening (http|resp)=(\S+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
START_TIMEOUT_S = 30


@dataclass
class Likewise:
    """A running likewise process."""

    proc: subprocess.Popen
    data: str
    http: str
    resp: str | None
    admin_token: str
    log: list = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.http}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.http}"

    @property
    def resp_host(self) -> str:
        return self.resp.rsplit(":", 1)[0]

    @property
    def resp_port(self) -> int:
        return int(self.resp.rsplit(":", 1)[1])

    @property
    def redis_url(self) -> str:
        return f"redis://{self.resp}/0"

    def stop(self) -> None:
        """SIGTERM, then wait; the exit status must be 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        shutil.rmtree(self.data, ignore_errors=True)
        assert code == 0, f"likewise exited with {code}; log:\n" + "\n".join(self.log[-50:])


def start_likewise(env: dict | None = None, resp: bool = True,
                   edge_of: "Likewise | None" = None) -> Likewise:
    """Starts the binary on free ports; returns once both addresses are logged.

    With `edge_of`, starts `likewise edge` in front of that primary instead (no data
    directory, no RESP listener; `env` gives it the cluster's Redis)."""
    if not BINARY.exists():
        raise RuntimeError(f"no binary at {BINARY}: run `cargo build` first")
    data = tempfile.mkdtemp(prefix="likewise-py-")
    full_env = dict(os.environ)
    full_env.update({"LIKEWISE_ADMIN_TOKEN": ADMIN_TOKEN, "RUST_LOG": "info", "NO_COLOR": "1"})
    full_env.update(env or {})
    if edge_of is not None:
        resp = False
        args = [str(BINARY), "edge", "--primary", edge_of.base_url, "--http", "127.0.0.1:0"]
    else:
        args = [str(BINARY), "serve", "--data", data, "--http", "127.0.0.1:0",
                "--resp", "127.0.0.1:0" if resp else "off"]
    proc = subprocess.Popen(args, env=full_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    found: dict = {}
    log: list = []
    ready = threading.Event()

    def drain():
        # Keeps reading so the pipe never fills; remembers the lines for failures.
        for line in proc.stderr:
            line = ANSI.sub("", line.rstrip("\n"))
            log.append(line)
            m = LISTENING.search(line)
            if m:
                found[m.group(1)] = m.group(2)
                if "http" in found and ("resp" in found or not resp):
                    ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(START_TIMEOUT_S) or "http" not in found or (resp and "resp" not in found):
        proc.kill()
        raise RuntimeError("likewise did not start; log:\n" + "\n".join(log))
    return Likewise(proc=proc, data=data, http=found["http"], resp=found.get("resp"),
                    admin_token=ADMIN_TOKEN, log=log)


@pytest.fixture
def likewise():
    """A fresh server with the RESP listener, stopped (exit 0 checked) afterwards."""
    server = start_likewise()
    yield server
    server.stop()


def api(server: Likewise, method: str, path: str, token: str | None = None,
        body: dict | None = None) -> tuple[int, dict | None]:
    """One JSON request; returns the status and the decoded body."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.base_url + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else None)


def register(server: Likewise, name: str) -> dict:
    """Registers `name`; returns {"id", "name", "token"}."""
    status, body = api(server, "POST", "/api/users", body={"name": name, "password": PASSWORD})
    assert status == 201, body
    return {"id": body["user"]["id"], "name": name, "token": body["token"]}


def create_post(server: Likewise, user: dict, title: str = "Hello") -> int:
    """Creates a post by `user`; returns its id."""
    status, body = api(server, "POST", "/api/posts", user["token"],
                       {"title": title, "body": "text"})
    assert status == 201, body
    return body["id"]


def like(server: Likewise, user: dict, post_id: int) -> dict:
    """`user` likes the post; returns the answer."""
    status, body = api(server, "PUT", f"/api/posts/{post_id}/like", user["token"])
    assert status == 200, body
    return body
