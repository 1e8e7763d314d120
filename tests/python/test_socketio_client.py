"""The unchanged python-socketio client against likewise's Socket.IO endpoint."""

import asyncio

import pytest
import socketio

from conftest import api, create_post, register

WAIT_S = 10


async def connect(server, token, since=None):
    client = socketio.AsyncClient(reconnection=False)
    received: asyncio.Queue = asyncio.Queue()

    @client.on("new_notification")
    async def on_notification(data):
        await received.put(data)

    auth = {"token": token}
    if since is not None:
        auth["since"] = since
    await client.connect(server.base_url, transports=["websocket"], auth=auth,
                         wait_timeout=WAIT_S)
    return client, received


async def test_a_like_reaches_a_python_socketio_client_as_new_notification(likewise):
    alice = register(likewise, "alice")
    bob = register(likewise, "bob")
    post = create_post(likewise, alice, "Hello sockets")
    client, received = await connect(likewise, alice["token"])
    try:
        status, body = api(likewise, "PUT", f"/api/posts/{post}/like", bob["token"])
        assert status == 200, body
        data = await asyncio.wait_for(received.get(), WAIT_S)
        assert data["kind"] == "like_post"
        assert data["actor_id"] == bob["id"]
        assert data["post_id"] == post
        assert data["receiver_id"] == alice["id"]

        # Following a post's room with an acknowledged emit.
        ack = await client.call("subscribe", f"post:{post}", timeout=WAIT_S)
        assert ack == {"ok": True, "room": f"post:{post}"}
        denied = await client.call("subscribe", f"user:{bob['id']}", timeout=WAIT_S)
        assert denied["ok"] is False and denied["code"] == "forbidden"
        # Rooms are public only under documented names: the bridge's channels and
        # made-up names are refused, public:... rooms are open.
        for room in ("flask-socketio", "socketio", "lobby"):
            denied = await client.call("subscribe", room, timeout=WAIT_S)
            assert denied["ok"] is False and denied["code"] == "forbidden", room
        ack = await client.call("subscribe", "public:lobby", timeout=WAIT_S)
        assert ack == {"ok": True, "room": "public:lobby"}
    finally:
        await client.disconnect()


async def test_resuming_with_since_replays_missed_notifications(likewise):
    alice = register(likewise, "alice")
    bob = register(likewise, "bob")
    posts = [create_post(likewise, alice, f"p{i}") for i in range(3)]
    for p in posts:
        api(likewise, "PUT", f"/api/posts/{p}/like", bob["token"])
    # Wait until the three notifications are stored.
    for _ in range(200):
        _, body = api(likewise, "GET", "/api/notifications", alice["token"])
        if len(body["notifications"]) == 3:
            break
        await asyncio.sleep(0.05)
    ids = sorted(n["id"] for n in body["notifications"])
    client, received = await connect(likewise, alice["token"], since=ids[0])
    try:
        got = [(await asyncio.wait_for(received.get(), WAIT_S))["id"] for _ in ids[1:]]
        assert got == ids[1:]
    finally:
        await client.disconnect()


async def test_a_bad_token_is_refused_with_connect_error(likewise):
    client = socketio.AsyncClient(reconnection=False)
    errors = []

    @client.event
    async def connect_error(data):
        errors.append(data)

    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(likewise.base_url, transports=["websocket"],
                             auth={"token": "not-a-token"}, wait_timeout=WAIT_S)
    assert errors and "unauthorized" in errors[0]["message"]


async def test_an_emit_to_everyone_reaches_every_connected_client(likewise):
    alice = register(likewise, "alice")
    bob = register(likewise, "bob")
    clients = []
    queues = []
    for user in (alice, bob):
        client = socketio.AsyncClient(reconnection=False)
        q: asyncio.Queue = asyncio.Queue()
        client.on("announcement", handler=lambda data, q=q: q.put_nowait(data))
        await client.connect(likewise.base_url, transports=["websocket"],
                             auth={"token": user["token"]}, wait_timeout=WAIT_S)
        clients.append(client)
        queues.append(q)
    try:
        mgr = socketio.AsyncRedisManager(likewise.redis_url, channel="flask-socketio",
                                         write_only=True)
        await mgr.emit("announcement", {"text": "maintenance at noon"})
        for q in queues:
            assert await asyncio.wait_for(q.get(), WAIT_S) == {"text": "maintenance at noon"}
    finally:
        for client in clients:
            await client.disconnect()


async def test_an_emit_to_a_public_room_reaches_its_members_only(likewise):
    alice = register(likewise, "alice")
    bob = register(likewise, "bob")
    clients, queues = [], []
    for user in (alice, bob):
        client = socketio.AsyncClient(reconnection=False)
        q: asyncio.Queue = asyncio.Queue()
        client.on("chat", handler=lambda data, q=q: q.put_nowait(data))
        await client.connect(likewise.base_url, transports=["websocket"],
                             auth={"token": user["token"]}, wait_timeout=WAIT_S)
        clients.append(client)
        queues.append(q)
    try:
        ack = await clients[0].call("subscribe", "public:lobby", timeout=WAIT_S)
        assert ack["ok"] is True
        mgr = socketio.AsyncRedisManager(likewise.redis_url, channel="flask-socketio",
                                         write_only=True)
        await mgr.emit("chat", {"text": "lobby only"}, room="public:lobby")
        await mgr.emit("chat", {"text": "everyone"})
        assert await asyncio.wait_for(queues[0].get(), WAIT_S) == {"text": "lobby only"}
        assert await asyncio.wait_for(queues[0].get(), WAIT_S) == {"text": "everyone"}
        # Bob, outside the room, receives only the emit to everyone.
        assert await asyncio.wait_for(queues[1].get(), WAIT_S) == {"text": "everyone"}
    finally:
        for client in clients:
            await client.disconnect()
