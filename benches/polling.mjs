// Engine.IO long-polling against the real (release) binary over loopback:
//
// 1. the added latency of an event over long-polling versus the websocket: one
//    socket.io-client on each transport, both in the public room `public:bench`;
//    each event is published by the admin API and timed from just before the
//    publish request to its arrival at each client (median and p99 of both, and
//    of the per-event difference), in the same run;
// 2. memory per idle long-polling session: the server's RSS before and after N
//    sessions that each went through the handshake and CONNECT and keep one GET
//    held on one keep-alive connection, as an idle polling client does (that
//    connection included).
//
// Run: `cargo build --release && (cd tests/node && npm ci) && node benches/polling.mjs`
// LIKEWISE_BIN picks another binary; LIKEWISE_BENCH_SESSIONS (2000) and
// LIKEWISE_BENCH_EVENTS (1000) the sizes; LIKEWISE_BENCH_HOLD=0 measures the
// sessions without their held GETs (and their connections).

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import http from "node:http";
import { startLikewise, api, register, root, ADMIN_TOKEN } from "../tests/node/likewise.mjs";

const require = createRequire(join(root, "tests/node/package.json"));
const { io } = require("socket.io-client");

const SESSIONS = Number(process.env.LIKEWISE_BENCH_SESSIONS || 2000);
const EVENTS = Number(process.env.LIKEWISE_BENCH_EVENTS || 1000);
const HOLD = process.env.LIKEWISE_BENCH_HOLD !== "0";
const binary = process.env.LIKEWISE_BIN || join(root, "target/release/likewise");

function rssKiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(status.match(/VmRSS:\s+(\d+) kB/)[1]);
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function summary(values) {
  const s = [...values].sort((a, b) => a - b);
  return { median: quantile(s, 0.5), p99: quantile(s, 0.99), max: s.at(-1) };
}

const ms = (v) => `${v.toFixed(2)} ms`;

async function connected(socket) {
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
}

async function latency(base) {
  const a = await register(base, "bench-polling");
  const b = await register(base, "bench-ws");
  const polling = io(base, { auth: { token: a.token }, transports: ["polling"], reconnection: false });
  const ws = io(base, { auth: { token: b.token }, transports: ["websocket"], reconnection: false });
  await Promise.all([connected(polling), connected(ws)]);
  for (const s of [polling, ws]) {
    const ack = await s.timeout(5000).emitWithAck("subscribe", "public:bench");
    if (!ack.ok) throw new Error(JSON.stringify(ack));
  }
  const arrivals = { polling: new Map(), ws: new Map() };
  const waiters = new Map();
  const arrived = (kind) => ({ i }) => {
    arrivals[kind].set(i, performance.now());
    const w = waiters.get(i);
    if (w && arrivals.polling.has(i) && arrivals.ws.has(i)) w();
  };
  polling.on("tick", arrived("polling"));
  ws.on("tick", arrived("ws"));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const publish = (i) =>
    new Promise((resolve, reject) => {
      const body = JSON.stringify({ room: "public:bench", event: "tick", data: { i } });
      const req = http.request(
        `${base}/api/admin/publish`,
        {
          method: "POST",
          agent,
          headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN_TOKEN}`, "content-length": Buffer.byteLength(body) },
        },
        (res) => {
          res.resume();
          res.on("end", resolve);
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  const sent = new Map();
  const warmup = 50;
  for (let i = 0; i < EVENTS + warmup; i++) {
    const both = new Promise((resolve) => waiters.set(i, resolve));
    sent.set(i, performance.now());
    await publish(i);
    await both;
    waiters.delete(i);
  }
  const lat = { polling: [], ws: [], added: [] };
  for (let i = warmup; i < EVENTS + warmup; i++) {
    const p = arrivals.polling.get(i) - sent.get(i);
    const w = arrivals.ws.get(i) - sent.get(i);
    lat.polling.push(p);
    lat.ws.push(w);
    lat.added.push(p - w);
  }
  polling.disconnect();
  ws.disconnect();
  agent.destroy();
  return { polling: summary(lat.polling), ws: summary(lat.ws), added: summary(lat.added) };
}

/**
 * One idle long-polling session: handshake, CONNECT, then a GET left held, all
 * on one keep-alive connection (as a client whose POSTs are done).
 */
async function idleSession(base, token) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  agents.push(agent);
  const request = (method, path, body) =>
    new Promise((resolve, reject) => {
      const req = http.request(`${base}${path}`, { method, agent, headers: body ? { "content-type": "text/plain;charset=UTF-8" } : {} }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode, text }));
      });
      req.on("error", reject);
      req.end(body);
    });
  const open = await request("GET", "/socket.io/?EIO=4&transport=polling");
  if (open.status !== 200) throw new Error(`handshake: ${open.status} ${open.text}`);
  const sid = JSON.parse(open.text.slice(1)).sid;
  const path = `/socket.io/?EIO=4&transport=polling&sid=${sid}`;
  const posted = await request("POST", path, `40{"token":"${token}"}`);
  if (posted.text !== "ok") throw new Error(`connect: ${posted.status} ${posted.text}`);
  const reply = await request("GET", path);
  if (!reply.text.startsWith("40")) throw new Error(`connect reply: ${reply.text}`);
  if (HOLD) {
    // Held until the next ping: the idle state of a polling client.
    request("GET", path).catch(() => {});
  } else {
    // The session alone, without the connection of its held GET.
    agent.destroy();
  }
}

const agents = [];

async function memory(server, base) {
  const users = [];
  for (let i = 0; i < 20; i++) users.push(await register(base, `idle-${i}`));
  // Warm the allocator and the code paths with a few sessions first.
  for (let i = 0; i < 20; i++) await idleSession(base, users[i % users.length].token);
  await new Promise((r) => setTimeout(r, 1000));
  const before = rssKiB(server.pid);
  const batch = 100;
  for (let i = 0; i < SESSIONS; i += batch) {
    const n = Math.min(batch, SESSIONS - i);
    await Promise.all(Array.from({ length: n }, (_, j) => idleSession(base, users[(i + j) % users.length].token)));
  }
  // Let the last held GETs reach the server, then read RSS until it settles.
  let after = 0;
  for (let i = 0; i < 10; i++) {
    await new Promise((r) => setTimeout(r, 300));
    const now = rssKiB(server.pid);
    if (Math.abs(now - after) < 64) break;
    after = now;
  }
  after = rssKiB(server.pid);
  const st = (await api(base, "GET", "/api/admin/stats", ADMIN_TOKEN)).body;
  for (const a of agents) a.destroy();
  return { before, after, open: st.realtime.polling.sessions, connected: st.connections["socket.io"], tcp: st.http.open }; // places under the caps: connections + polling sessions
}

const config = "[limits]\nmax_connections_per_ip = 0\nping_interval_ms = 120000\nping_timeout_ms = 60000\n";
const server = await startLikewise({ config, binary });
try {
  console.log(`binary: ${binary}`);
  const lat = await latency(server.base);
  console.log(`\nevent latency, publish request sent -> event at the client (${EVENTS} events, one at a time):`);
  console.log(`  websocket:     median ${ms(lat.ws.median)}  p99 ${ms(lat.ws.p99)}  max ${ms(lat.ws.max)}`);
  console.log(`  long-polling:  median ${ms(lat.polling.median)}  p99 ${ms(lat.polling.p99)}  max ${ms(lat.polling.max)}`);
  console.log(`  added by long-polling (per event): median ${ms(lat.added.median)}  p99 ${ms(lat.added.p99)}`);

  const mem = await memory(server, server.base);
  const per = ((mem.after - mem.before) * 1024) / SESSIONS;
  console.log(`\nidle long-polling sessions: ${mem.open} open, ${mem.connected} Socket.IO sessions connected, ${mem.tcp - mem.open} HTTP connections open`);
  console.log(`  server RSS ${(mem.before / 1024).toFixed(1)} MiB -> ${(mem.after / 1024).toFixed(1)} MiB`);
  const what = HOLD ? "its held GET's connection included" : "no GET held, no connection";
  console.log(`  per idle session (${what}): ${(per / 1024).toFixed(1)} KiB`);
} finally {
  await server.stop();
}
