"""python-socketio's default AsyncClient (long-polling first, then the upgrade to
websocket) and a long-polling-only client against likewise's Socket.IO endpoint."""

import asyncio

import socketio

from conftest import api, create_post, register

WAIT_S = 10


async def connect(server, token, **kwargs):
    client = socketio.AsyncClient(reconnection=False)
    received: asyncio.Queue = asyncio.Queue()
    client.on("new_notification", handler=lambda data: received.put_nowait(data))
    await client.connect(server.base_url, auth={"token": token}, wait_timeout=WAIT_S,
                         **kwargs)
    return client, received


def stats(server):
    status, body = api(server, "GET", "/api/admin/stats", server.admin_token)
    assert status == 200, body
    return body


async def test_the_default_client_upgrades_and_receives_notifications(likewise):
    alice = register(likewise, "alice")
    bob = register(likewise, "bob")
    post = create_post(likewise, alice, "Hello polling")
    client, received = await connect(likewise, alice["token"])
    try:
        assert client.transport() == "websocket"
        status, body = api(likewise, "PUT", f"/api/posts/{post}/like", bob["token"])
        assert status == 200, body
        data = await asyncio.wait_for(received.get(), WAIT_S)
        assert data["kind"] == "like_post" and data["actor_id"] == bob["id"]
        ack = await client.call("subscribe", f"post:{post}", timeout=WAIT_S)
        assert ack == {"ok": True, "room": f"post:{post}"}
        st = stats(likewise)
        assert st["connections"]["socket.io"] == 1
        assert st["realtime"]["polling"]["upgrades"] == 1
        assert st["realtime"]["polling"]["sessions"] == 0
    finally:
        await client.disconnect()


async def test_a_polling_only_client_receives_notifications_and_acks(likewise):
    alice = register(likewise, "alice")
    bob = register(likewise, "bob")
    post = create_post(likewise, alice, "Hello polling")
    client, received = await connect(likewise, alice["token"], transports=["polling"])
    try:
        assert client.transport() == "polling"
        ack = await client.call("subscribe", f"post:{post}", timeout=WAIT_S)
        assert ack == {"ok": True, "room": f"post:{post}"}
        status, body = api(likewise, "PUT", f"/api/posts/{post}/like", bob["token"])
        assert status == 200, body
        data = await asyncio.wait_for(received.get(), WAIT_S)
        assert data["kind"] == "like_post" and data["post_id"] == post
        assert stats(likewise)["realtime"]["polling"]["sessions"] == 1
    finally:
        await client.disconnect()
