"""Two likewise nodes sharing a real redis-server as their cluster bus: an emit made
by python-socketio's RedisManager (what Flask-SocketIO's `message_queue` uses) on
that Redis reaches websocket clients on both nodes."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest
import socketio
import websocket

from conftest import register, start_likewise

WAIT_S = 10

# Skipped without redis-server, except where LIKEWISE_TESTS_NEED_REDIS says it must run.
needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None and not os.environ.get("LIKEWISE_TESTS_NEED_REDIS"),
    reason="redis-server is not installed")


@pytest.fixture
def real_redis():
    """A redis-server on a free loopback port, without persistence."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="likewise-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if "Ready to accept connections" in line:
            break
    # Keeps reading so the pipe never fills.
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=WAIT_S)
    shutil.rmtree(workdir, ignore_errors=True)


def wait_healthy(server) -> None:
    """The bus connects in the background; /healthz says ok once it is up."""
    deadline = time.monotonic() + 2 * WAIT_S
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=WAIT_S) as r:
            if json.load(r)["status"] == "ok":
                return
        time.sleep(0.05)
    raise AssertionError("the cluster bus did not connect")


def event_named(ws, name: str) -> dict:
    while True:
        event = json.loads(ws.recv())
        if event["event"] == name:
            return event


@needs_redis_server
def test_a_redis_manager_emit_on_the_cluster_redis_reaches_both_nodes(real_redis):
    nodes = [start_likewise(env={"LIKEWISE_CLUSTER_REDIS": real_redis}, resp=False)
             for _ in range(2)]
    sockets = []
    try:
        for node in nodes:
            wait_healthy(node)
            user = register(node, "reader")
            ws = websocket.create_connection(f"{node.ws_url}/ws?token={user['token']}",
                                             timeout=WAIT_S)
            assert json.loads(ws.recv())["event"] == "ready"
            sockets.append(ws)
        mgr = socketio.RedisManager(real_redis, channel="flask-socketio", write_only=True)
        mgr.emit("flash", {"text": "to everyone"})
        mgr.emit("flash", {"text": "second"})
        for ws in sockets:
            assert event_named(ws, "flash")["data"] == {"text": "to everyone"}
            # Not twice: the next one is the next emit.
            assert event_named(ws, "flash")["data"] == {"text": "second"}
    finally:
        for ws in sockets:
            ws.close()
        for node in nodes:
            node.stop()
