// The unchanged socket.io-client@4 (Node) against the real binary: with its
// DEFAULT options (long-polling first, then the upgrade to websocket) and with
// long-polling only. Events must arrive before and after the upgrade, on the
// same session.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { io } from "socket.io-client";
import { startLikewise, api, register, createPost, stats } from "./likewise.mjs";

const WAIT = 10000;
let server;

before(async () => {
  server = await startLikewise();
});

after(async () => {
  await server?.stop();
});

/** Resolves with the next `event` on `emitter`, or rejects after WAIT. */
function next(emitter, event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${WAIT} ms`)), WAIT);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

/**
 * A loopback proxy that forwards plain HTTP requests at once and holds websocket
 * upgrades until release() is called: the test decides when the client's upgrade
 * may happen, so "before the upgrade" is not a race.
 */
async function upgradeGate(target) {
  const { hostname, port } = new URL(target);
  const held = [];
  let open = false;
  const sockets = new Set();
  const forward = (req, socket, head) => {
    const upstream = net.connect(Number(port), hostname, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(lines.join("\r\n") + "\r\n\r\n");
      if (head.length) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on("error", () => socket.destroy());
    socket.on("error", () => upstream.destroy());
  };
  const proxy = http.createServer((req, res) => {
    const up = http.request(
      { host: hostname, port, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      },
    );
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  proxy.on("connection", (s) => sockets.add(s));
  proxy.on("upgrade", (req, socket, head) => {
    if (open) forward(req, socket, head);
    else held.push([req, socket, head]);
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${proxy.address().port}`,
    heldUpgrades: () => held.length,
    release() {
      open = true;
      for (const [req, socket, head] of held.splice(0)) forward(req, socket, head);
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => proxy.close(r));
    },
  };
}

test("default options: long-polling first, events before and after the upgrade on one session", async () => {
  const author = await register(server.base, "author");
  const fan = await register(server.base, "fan");
  const post = await createPost(server.base, author, "Hello");
  const gate = await upgradeGate(server.base);
  const socket = io(gate.url, { auth: { token: author.token }, reconnection: false });
  try {
    const notifications = [];
    socket.on("new_notification", (n) => notifications.push([n, socket.io.engine.transport.name]));
    await next(socket, "connect");
    assert.equal(socket.io.engine.transport.name, "polling");

    // Before the upgrade: the websocket is held at the gate.
    const first = next(socket, "new_notification");
    assert.equal((await api(server.base, "PUT", `/api/posts/${post}/like`, fan.token)).status, 200);
    const [n1] = await first;
    assert.equal(n1.kind, "like_post");
    assert.equal(notifications[0][1], "polling");
    const ack = await socket.timeout(WAIT).emitWithAck("subscribe", `post:${post}`);
    assert.deepEqual(ack, { ok: true, room: `post:${post}` });
    assert.equal(gate.heldUpgrades(), 1, "the client asked to upgrade");
    const before = await stats(server.base);
    assert.equal(before.connections["socket.io"], 1);

    // The upgrade: same session id, same subscription.
    const sid = socket.io.engine.id;
    const upgraded = next(socket.io.engine, "upgrade");
    gate.release();
    await upgraded;
    assert.equal(socket.io.engine.transport.name, "websocket");
    assert.equal(socket.io.engine.id, sid);

    // After the upgrade: a notification and a room event arrive on the websocket.
    const second = next(socket, "new_notification");
    assert.equal((await api(server.base, "DELETE", `/api/posts/${post}/like`, fan.token)).status, 200);
    const other = await register(server.base, "other");
    assert.equal((await api(server.base, "PUT", `/api/posts/${post}/like`, other.token)).status, 200);
    const [n2] = await second;
    assert.equal(n2.actor_id, other.id);
    assert.equal(notifications.at(-1)[1], "websocket");
    const ack2 = await socket.timeout(WAIT).emitWithAck("subscribe", "public:lobby");
    assert.deepEqual(ack2, { ok: true, room: "public:lobby" });

    const afterUpgrade = await stats(server.base);
    assert.equal(afterUpgrade.connections["socket.io"], 1, "not subscribed twice");
    assert.equal(afterUpgrade.realtime.polling.sessions, 0);
    assert.ok(afterUpgrade.realtime.polling.upgrades >= 1);
  } finally {
    socket.disconnect();
    await gate.close();
  }
});

test("transports: ['polling'] only: connect, acks, a notification, a clean disconnect", async () => {
  const author = await register(server.base, "poller");
  const fan = await register(server.base, "fan2");
  const post = await createPost(server.base, author, "Polling");
  const socket = io(server.base, { auth: { token: author.token }, transports: ["polling"], reconnection: false });
  try {
    await next(socket, "connect");
    assert.equal(socket.io.engine.transport.name, "polling");
    const ack = await socket.timeout(WAIT).emitWithAck("subscribe", `post:${post}`);
    assert.deepEqual(ack, { ok: true, room: `post:${post}` });
    const got = next(socket, "new_notification");
    assert.equal((await api(server.base, "PUT", `/api/posts/${post}/like`, fan.token)).status, 200);
    const [n] = await got;
    assert.equal(n.kind, "like_post");
    assert.equal(n.actor_id, fan.id);
    assert.equal(socket.io.engine.transport.name, "polling");
    assert.equal((await stats(server.base)).realtime.polling.sessions, 1);
  } finally {
    socket.disconnect();
  }
  // The client's close packet frees the session at once.
  const deadline = Date.now() + WAIT;
  while ((await stats(server.base)).realtime.polling.sessions !== 0) {
    assert.ok(Date.now() < deadline, "the session was not freed");
    await new Promise((r) => setTimeout(r, 20));
  }
});

test("a bad token is refused with connect_error over long-polling", async () => {
  const socket = io(server.base, { auth: { token: "nope" }, transports: ["polling"], reconnection: false });
  try {
    const [err] = await next(socket, "connect_error");
    assert.match(err.message, /unauthorized/);
  } finally {
    socket.disconnect();
  }
});

test("default options, no gate: the upgrade races the CONNECT and nothing is lost", async () => {
  const author = await register(server.base, "racer");
  const post = await createPost(server.base, author, "Race");
  for (let i = 0; i < 5; i++) {
    const socket = io(server.base, { auth: { token: author.token }, reconnection: false, forceNew: true });
    try {
      await next(socket, "connect");
      if (socket.io.engine.transport.name !== "websocket") await next(socket.io.engine, "upgrade");
      const got = next(socket, "new_notification");
      const fan = await register(server.base, `racer-fan-${i}`);
      assert.equal((await api(server.base, "PUT", `/api/posts/${post}/like`, fan.token)).status, 200);
      const [n] = await got;
      assert.equal(n.actor_id, fan.id);
    } finally {
      socket.disconnect();
    }
  }
});
