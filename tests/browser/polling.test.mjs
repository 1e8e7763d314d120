// The socket.io client in Chromium, with its default options (long-polling first,
// then the upgrade to websocket), against the real binary: the page is served
// from another origin by this test (the client script from node_modules), so the
// long-polling requests are cross-origin and rely on the CORS headers likewise
// sends. A like by another user reaches the page as new_notification.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const binary = process.env.LIKEWISE_BIN || join(root, "target/debug/likewise");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const CLIENT = join(here, "node_modules/socket.io-client/dist/socket.io.min.js");
const TIMEOUT = 15000;

let server;
let dataDir;
let base;
let pageServer;
let pageOrigin;
let browser;
let log = "";

function startServer() {
  dataDir = mkdtempSync(join(tmpdir(), "likewise-browser-polling-"));
  const args = ["serve", "--data", join(dataDir, "data"), "--http", "127.0.0.1:0", "--resp", "off"];
  server = spawn(binary, args, {
    env: { ...process.env, LIKEWISE_ADMIN_TOKEN: "browser-polling-admin-token-0123456789", RUST_LOG: "info" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log}`)), 30000);
    server.stderr.setEncoding("utf8");
    server.stderr.on("data", (chunk) => {
      log += chunk;
      const m = log.match(/listening http=(\S+)/);
      if (m && !base) {
        clearTimeout(timer);
        base = `http://${m[1]}`;
        resolvePromise();
      }
    });
    server.on("exit", (code) => {
      if (!base) reject(new Error(`server exited with ${code}:\n${log}`));
    });
  });
}

/** The test page and the client script, on an origin of their own. */
async function startPageServer() {
  const script = readFileSync(CLIENT);
  const page = `<!doctype html><meta charset="utf-8"><title>polling</title>
<script src="/socket.io.min.js"></script><pre id="log"></pre>`;
  pageServer = http.createServer((req, res) => {
    if (req.url === "/socket.io.min.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(script);
    } else {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(page);
    }
  });
  await new Promise((r) => pageServer.listen(0, "127.0.0.1", r));
  pageOrigin = `http://127.0.0.1:${pageServer.address().port}`;
}

async function api(method, path, token, body) {
  const r = await fetch(base + path, {
    method,
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

before(async () => {
  assert.ok(existsSync(binary), `build the binary first: ${binary}`);
  assert.ok(existsSync(CLIENT), "npm ci first: the socket.io client comes from node_modules");
  await startServer();
  await startPageServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (pageServer) await new Promise((r) => pageServer.close(r));
  if (server && server.exitCode === null) {
    server.kill("SIGTERM");
    await new Promise((r) => server.once("exit", r));
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test("the browser's socket.io client connects with default options and receives a notification", async () => {
  const author = (await api("POST", "/api/users", null, { name: "browserauthor", password: "password123" })).body;
  const fan = (await api("POST", "/api/users", null, { name: "browserfan", password: "password123" })).body;
  const post = (await api("POST", "/api/posts", author.token, { title: "Seen in a browser", body: "text" })).body;

  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(pageOrigin + "/");

  // Connect with default options. The transport is read when Engine.IO opens: the
  // upgrade probe starts right after that, so by the time Socket.IO's CONNECT is
  // answered the session may already have moved to the websocket.
  const first = await page.evaluate(
    ([url, token]) =>
      new Promise((resolve, reject) => {
        const socket = io(url, { auth: { token }, reconnection: false });
        let opened = null;
        socket.io.on("open", () => {
          opened = socket.io.engine.transport.name;
        });
        window.socket = socket;
        window.notifications = [];
        socket.on("new_notification", (n) => window.notifications.push(n));
        socket.on("connect_error", (e) => reject(new Error(e.message)));
        socket.on("connect", () => resolve(opened));
      }),
    [base, author.token],
  );
  assert.equal(first, "polling", "default options start with long-polling");
  await page.waitForFunction(() => window.socket.io.engine.transport.name === "websocket");

  assert.equal((await api("PUT", `/api/posts/${post.id}/like`, fan.token)).status, 200);
  await page.waitForFunction(() => window.notifications.length === 1);
  const n = await page.evaluate(() => window.notifications[0]);
  assert.equal(n.kind, "like_post");
  assert.equal(n.actor_id, fan.user.id);
  assert.deepEqual(errors, []);
  await page.evaluate(() => window.socket.disconnect());
  await context.close();
});
