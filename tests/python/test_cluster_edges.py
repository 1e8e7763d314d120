"""A primary and two edges (`likewise edge`) on a real redis-server, with the
unchanged python-socketio client: a like sent through one edge reaches a client on
the other, and an emit of python-socketio's RedisManager (what Flask-SocketIO's
`message_queue` uses) on the cluster's Redis reaches clients on both edges, once."""

import asyncio

import socketio

from conftest import api, create_post, register, start_likewise
from test_cluster_socketio import needs_redis_server, real_redis, wait_healthy  # noqa: F401

WAIT_S = 10


async def connect(edge, token, events, transports=("websocket",)):
    """A python-socketio client on `edge`; each of `events` goes to its own queue."""
    client = socketio.AsyncClient(reconnection=False)
    queues = {name: asyncio.Queue() for name in events}
    for name, queue in queues.items():
        client.on(name, handler=lambda data, q=queue: q.put_nowait(data))
    await client.connect(edge.base_url, transports=list(transports), auth={"token": token},
                         wait_timeout=WAIT_S)
    return client, queues


@needs_redis_server
async def test_python_socketio_clients_on_two_edges_get_likes_and_redis_manager_emits(real_redis):
    env = {"LIKEWISE_CLUSTER_REDIS": real_redis}
    primary = start_likewise(env=env, resp=False)
    edges = []
    clients = []
    try:
        edges = [start_likewise(env=env, edge_of=primary) for _ in range(2)]
        for node in [primary, *edges]:
            wait_healthy(node)
        a, b = edges
        alice = register(a, "alice")
        bob = register(a, "bob")
        alice_b, alice_q = await connect(b, alice["token"], ["new_notification", "flash"])
        bob_a, bob_q = await connect(a, bob["token"], ["new_notification", "flash"])
        # The client's default: long-polling first, then the upgrade, on the edge.
        carol = register(b, "carol")
        carol_b, carol_q = await connect(b, carol["token"], ["flash"],
                                         transports=("polling", "websocket"))
        clients = [alice_b, bob_a, carol_b]

        post = create_post(a, alice, "through edge A")
        status, body = api(a, "PUT", f"/api/posts/{post}/like", bob["token"])
        assert status == 200, body
        note = await asyncio.wait_for(alice_q["new_notification"].get(), WAIT_S)
        assert (note["kind"], note["post_id"], note["actor_id"]) == ("like_post", post, bob["id"])

        mgr = socketio.RedisManager(real_redis, channel="flask-socketio", write_only=True)
        mgr.emit("flash", {"text": "to everyone"})
        mgr.emit("flash", {"text": "second"})
        for q in (alice_q["flash"], bob_q["flash"], carol_q["flash"]):
            assert await asyncio.wait_for(q.get(), WAIT_S) == {"text": "to everyone"}
            # Not twice: the next one is the next emit.
            assert await asyncio.wait_for(q.get(), WAIT_S) == {"text": "second"}
        assert bob_q["new_notification"].empty()
    finally:
        for client in clients:
            await client.disconnect()
        for node in [*edges, primary]:
            node.stop()
