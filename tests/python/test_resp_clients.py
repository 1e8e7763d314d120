"""likewise's RESP listener driven by real Redis clients: redis-cli, redis-py (sync
and asyncio, RESP2 and RESP3), and python-socketio / Flask-SocketIO publishing
through their Redis message-queue managers to websocket and Socket.IO clients."""

import asyncio
import http.client
import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import pytest
import redis
import redis.asyncio
import socketio
import websocket

from conftest import create_post, like, register

WAIT_S = 10


def redis_cli(server, *args: str) -> str:
    out = subprocess.run(["redis-cli", "-h", server.resp_host, "-p", str(server.resp_port), *args],
                         capture_output=True, text=True, timeout=WAIT_S, check=True)
    return out.stdout.strip()


needs_redis_cli = pytest.mark.skipif(shutil.which("redis-cli") is None,
                                     reason="redis-cli (Debian redis-tools) is not installed")


@needs_redis_cli
def test_redis_cli_pings_publishes_and_subscribes(likewise):
    assert redis_cli(likewise, "PING") == "PONG"
    assert redis_cli(likewise, "PUBLISH", "news", "nobody") == "0"
    sub = subprocess.Popen(["redis-cli", "-h", likewise.resp_host, "-p", str(likewise.resp_port),
                            "SUBSCRIBE", "news"], stdout=subprocess.PIPE, text=True)
    try:
        # The confirmation: subscribe / news / 1, one per line.
        assert [sub.stdout.readline().strip() for _ in range(3)] == ["subscribe", "news", "1"]
        assert redis_cli(likewise, "PUBLISH", "news", "hello there") == "1"
        assert [sub.stdout.readline().strip() for _ in range(3)] == ["message", "news",
                                                                     "hello there"]
    finally:
        sub.kill()
        sub.wait()
    assert "redis_version:7" in redis_cli(likewise, "INFO", "server")


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_subscribes_and_publishes(likewise, protocol):
    r = redis.Redis(host=likewise.resp_host, port=likewise.resp_port, protocol=protocol)
    assert r.ping() is True
    p = r.pubsub()
    p.subscribe("news")
    confirmation = p.get_message(timeout=WAIT_S)
    assert confirmation["type"] == "subscribe" and confirmation["channel"] == b"news"
    p.psubscribe("user:*")
    assert p.get_message(timeout=WAIT_S)["type"] == "psubscribe"
    assert r.publish("news", "hi") == 1
    assert r.publish("user:1", "you") == 1
    assert r.pubsub_numsub("news") == [(b"news", 1)]
    assert r.pubsub_numpat() == 1
    got = p.get_message(timeout=WAIT_S)
    assert (got["type"], got["channel"], got["data"]) == ("message", b"news", b"hi")
    got = p.get_message(timeout=WAIT_S)
    assert (got["type"], got["pattern"], got["channel"], got["data"]) == (
        "pmessage", b"user:*", b"user:1", b"you")
    p.close()
    r.close()


async def test_redis_py_asyncio_speaks_resp3(likewise):
    r = redis.asyncio.Redis(host=likewise.resp_host, port=likewise.resp_port, protocol=3)
    try:
        assert await r.ping() is True
        p = r.pubsub()
        await p.subscribe("async-news")
        assert (await p.get_message(timeout=WAIT_S))["type"] == "subscribe"
        assert await r.publish("async-news", "fresh") == 1
        msg = await p.get_message(ignore_subscribe_messages=True, timeout=WAIT_S)
        assert msg["data"] == b"fresh"
        await p.aclose()
        info = await r.info()
        assert info["loading"] == 0
    finally:
        await r.aclose()


def test_a_like_reaches_a_redis_py_subscriber_as_new_notification(likewise):
    alice, bob = register(likewise, "alice"), register(likewise, "bob")
    post = create_post(likewise, alice)
    r = redis.Redis(host=likewise.resp_host, port=likewise.resp_port)
    p = r.pubsub(ignore_subscribe_messages=True)
    p.subscribe(f"user:{alice['id']}")
    assert p.get_message(timeout=WAIT_S) is None  # the confirmation, ignored
    like(likewise, bob, post)
    msg = p.get_message(timeout=WAIT_S)
    envelope = json.loads(msg["data"])
    assert envelope["event"] == "new_notification"
    assert envelope["data"]["kind"] == "like_post"
    assert envelope["data"]["actor_id"] == bob["id"]
    p.close()
    r.close()


def test_an_http_post_to_the_resp_port_is_closed_before_its_body_runs(likewise):
    """What a web page can make a browser send: its body must never run as commands."""
    r = redis.Redis(host=likewise.resp_host, port=likewise.resp_port)
    p = r.pubsub(ignore_subscribe_messages=True)
    p.subscribe("user:1")
    assert p.get_message(timeout=WAIT_S) is None  # the confirmation, ignored
    body = b'PUBLISH user:1 {"event":"new_notification","data":"fake"}\r\n'
    request = urllib.request.Request(f"http://{likewise.resp_host}:{likewise.resp_port}/",
                                     data=body, method="POST")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen(request, timeout=WAIT_S)
    assert r.publish("user:1", "honest") == 1
    msg = p.get_message(timeout=WAIT_S)
    assert msg["data"] == b"honest"
    p.close()
    r.close()


def ws_connect(server, user) -> websocket.WebSocket:
    ws = websocket.create_connection(f"{server.ws_url}/ws?token={user['token']}", timeout=WAIT_S)
    ready = json.loads(ws.recv())
    assert ready == {"event": "ready", "data": {"user_id": user["id"]}}
    return ws


def ws_event(ws: websocket.WebSocket, name: str) -> dict:
    while True:
        event = json.loads(ws.recv())
        if event["event"] == name:
            return event


def test_python_socketio_redis_manager_emit_reaches_a_websocket_client(likewise):
    alice = register(likewise, "alice")
    ws = ws_connect(likewise, alice)
    try:
        mgr = socketio.RedisManager(likewise.redis_url, channel="flask-socketio",
                                    write_only=True)
        mgr.emit("new_notification", {"text": "from a worker"}, room=str(alice["id"]))
        assert ws_event(ws, "new_notification")["data"] == {"text": "from a worker"}
        # python-socketio's own default channel works too.
        mgr = socketio.RedisManager(likewise.redis_url, write_only=True)
        mgr.emit("custom", {"n": 2}, room=f"user:{alice['id']}")
        assert ws_event(ws, "custom")["data"] == {"n": 2}
    finally:
        ws.close()


def test_flask_socketio_message_queue_emit_reaches_a_websocket_client(likewise):
    from flask_socketio import SocketIO

    alice = register(likewise, "alice")
    ws = ws_connect(likewise, alice)
    try:
        # What a Celery worker of the seeds does, unchanged.
        external = SocketIO(message_queue=likewise.redis_url)
        external.emit("new_notification", {"kind": "like_post"}, to=str(alice["id"]))
        assert ws_event(ws, "new_notification")["data"] == {"kind": "like_post"}
    finally:
        ws.close()


async def test_redis_manager_emit_reaches_a_socketio_client(likewise):
    alice = register(likewise, "alice")
    client = socketio.AsyncClient()
    received: asyncio.Queue = asyncio.Queue()

    @client.on("new_notification")
    async def on_notification(data):
        await received.put(data)

    await client.connect(likewise.base_url, transports=["websocket"],
                         auth={"token": alice["token"]}, wait_timeout=WAIT_S)
    try:
        mgr = socketio.AsyncRedisManager(likewise.redis_url, channel="flask-socketio",
                                         write_only=True)
        await mgr.emit("new_notification", {"text": "hello sio"}, room=str(alice["id"]))
        data = await asyncio.wait_for(received.get(), WAIT_S)
        assert data == {"text": "hello sio"}
    finally:
        await client.disconnect()


def raw_client(server) -> tuple[socket.socket, int]:
    """A plain socket connection and its client id."""
    sock = socket.create_connection((server.resp_host, server.resp_port), timeout=WAIT_S)
    sock.sendall(b"CLIENT ID\r\n")
    reply = b""
    while not reply.endswith(b"\r\n"):
        reply += sock.recv(64)
    return sock, int(reply[1:-2])


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes `sock` (end of stream) within the wait."""
    try:
        return sock.recv(64) == b""
    except ConnectionResetError:
        return True
    finally:
        sock.close()


@needs_redis_cli
def test_redis_cli_lists_every_client_and_kills_another(likewise):
    victim, victim_id = raw_client(likewise)
    lines = redis_cli(likewise, "CLIENT", "LIST").splitlines()
    # The victim and redis-cli's own connection.
    assert len(lines) == 2, lines
    assert any(line.startswith(f"id={victim_id} addr=") for line in lines), lines
    assert any(" cmd=client|list " in line for line in lines), lines
    assert redis_cli(likewise, "CLIENT", "KILL", "ID", str(victim_id)) == "1"
    assert closed_by_server(victim)
    assert len(redis_cli(likewise, "CLIENT", "LIST").splitlines()) == 1
    assert redis_cli(likewise, "CLIENT", "KILL", "ID", str(victim_id)) == "0"


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_client_reply_off_suppresses_replies_until_on(likewise, protocol):
    # redis-cli waits for a reply to CLIENT REPLY OFF (from Redis too): drive it the
    # way redis-py documents, on one connection, reading only the replies expected.
    r = redis.Redis(host=likewise.resp_host, port=likewise.resp_port, protocol=protocol)
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command("CLIENT", "REPLY", "OFF")
        conn.send_command("PING")
        conn.send_command("ECHO", "hidden")
        conn.send_command("CLIENT", "REPLY", "ON")
        assert conn.read_response() == b"OK"
        conn.send_command("CLIENT", "REPLY", "SKIP")
        conn.send_command("ECHO", "skipped")
        conn.send_command("ECHO", "shown")
        assert conn.read_response() == b"shown"
        assert not conn.can_read(timeout=0.2)
    finally:
        r.connection_pool.release(conn)


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_harness_commands(likewise, protocol):
    r = redis.Redis(host=likewise.resp_host, port=likewise.resp_port, protocol=protocol,
                    decode_responses=True)
    assert r.flushall() is True
    assert r.flushdb(asynchronous=True) is True
    assert r.function_flush("SYNC") in (True, "OK")
    config = r.config_get("*")
    assert config["maxclients"] == "10000"
    assert config["port"] == str(likewise.resp_port)
    assert r.config_get("maxclients") == {"maxclients": "10000"}
    other = redis.Redis(host=likewise.resp_host, port=likewise.resp_port, protocol=protocol)
    other.client_setname("other")
    other_id = other.client_id()
    clients = r.client_list()
    assert len(clients) == 2, clients
    listed = {int(c["id"]): c for c in clients}
    assert listed[other_id]["name"] == "other"
    assert listed[r.client_id()]["resp"] == str(protocol)
    assert r.client_kill_filter(_id=other_id) == 1
    assert [int(c["id"]) for c in r.client_list()] == [r.client_id()]
    other.close()
