// Drives the bundled demo page and the ops dashboard in Chromium against the real
// binary: two users in two browser contexts, a like that reaches the other's bell
// without a reload, mark-as-read, a dropped connection that resumes without gaps or
// doubles, and the dashboard showing completed tasks. Saves screenshots to out/.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, existsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const binary = process.env.LIKEWISE_BIN || join(root, "target/debug/likewise");
const out = join(here, "out");
const ADMIN_TOKEN = "browser-test-admin-token-0123456789";
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const TIMEOUT = 15000;

let server;
let serverLog = "";
let base;
let browser;
let dataDir;
const consoleErrors = [];

function startServer() {
  dataDir = mkdtempSync(join(tmpdir(), "likewise-browser-"));
  // A webhook nobody listens to: its deliveries fail and end as dead letters, which
  // the dashboard lists with a retry button.
  const config = join(dataDir, "likewise.toml");
  writeFileSync(config, '[[webhooks]]\nurl = "http://127.0.0.1:9/unreachable"\nmax_attempts = 2\n');
  const args = ["serve", "--demo", "--config", config, "--data", join(dataDir, "data"), "--http", "127.0.0.1:0", "--resp", "off"];
  server = spawn(binary, args, {
    env: { ...process.env, LIKEWISE_ADMIN_TOKEN: ADMIN_TOKEN, RUST_LOG: "info" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${serverLog}`)), 30000);
    server.stderr.setEncoding("utf8");
    server.stderr.on("data", (chunk) => {
      serverLog += chunk;
      const m = serverLog.match(/listening http=(\S+)/);
      if (m && !base) {
        clearTimeout(timer);
        base = `http://${m[1]}`;
        resolvePromise();
      }
    });
    server.on("exit", (code) => {
      if (!base) {
        clearTimeout(timer);
        reject(new Error(`server exited with ${code}:\n${serverLog}`));
      }
    });
  });
}

/** A new browser context and page whose console errors are recorded. */
async function newPage(label) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (msg) => {
    if (msg.type() === "error") consoleErrors.push(`${label}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => consoleErrors.push(`${label}: uncaught ${err.message}`));
  return { context, page };
}

async function badgeCount(page) {
  const badge = page.locator("#badge");
  if (await badge.isHidden()) return 0;
  return Number(await badge.textContent());
}

async function waitForBadge(page, n) {
  await page.waitForFunction(
    (expected) => {
      const b = document.getElementById("badge");
      return (b.hidden ? 0 : Number(b.textContent)) === expected;
    },
    n,
    { timeout: TIMEOUT },
  );
}

before(async () => {
  assert.ok(existsSync(binary), `build the binary first: ${binary}`);
  mkdirSync(out, { recursive: true });
  await startServer();
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
  if (server && server.exitCode === null) {
    server.kill("SIGTERM");
    await new Promise((r) => server.once("exit", r));
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test("a like reaches the author's bell live, is marked read, and the dashboard shows the work", async () => {
  // A: the demo user alice, signed in through the demo account chip.
  const a = await newPage("alice");
  await a.page.goto(base + "/");
  await a.page.getByRole("button", { name: "Fill in the demo account alice" }).click();
  await a.page.locator("#auth-submit").click();
  await a.page.locator("#status[data-state=live]").waitFor();
  const hello = a.page.locator("article.post", { hasText: "Hello from likewise" });
  await hello.waitFor();
  assert.equal(await a.page.evaluate(() => localStorage.getItem("likewise.token") !== null), true);

  // B: a new account created through the form.
  const b = await newPage("erin");
  await b.page.goto(base + "/");
  await b.page.getByRole("tab", { name: "Create account" }).click();
  await b.page.getByLabel("Name").fill("erin");
  await b.page.getByLabel("Password").fill("erin-password");
  await b.page.locator("#auth-submit").click();
  await b.page.locator("#status[data-state=live]").waitFor();

  // Wait for the seeded tasks to settle so the starting numbers are stable.
  await a.page.waitForTimeout(500);
  await a.page.reload();
  await a.page.locator("#status[data-state=live]").waitFor();
  const startBadge = await badgeCount(a.page);
  const likesBefore = Number(await hello.locator("button.like .count").textContent());

  // B likes A's post; A sees the badge, the notification and the count, no reload.
  const bHello = b.page.locator("article.post", { hasText: "Hello from likewise" });
  await bHello.locator("button.like").click();
  assert.equal(await bHello.locator("button.like").getAttribute("aria-pressed"), "true");
  await waitForBadge(a.page, startBadge + 1);
  await a.page.waitForFunction(
    ([sel, n]) => Number(document.querySelector(sel).textContent) === n,
    [`article.post[data-post-id="${await hello.getAttribute("data-post-id")}"] button.like .count`, likesBefore + 1],
  );
  assert.match(await a.page.locator("#bell").getAttribute("aria-label"), new RegExp(`${startBadge + 1} unread`));
  await a.page.locator("#bell").click();
  const fromErin = a.page.locator("#notif-list li.notif", { hasText: "erin liked" });
  await fromErin.waitFor();
  assert.equal(await fromErin.count(), 1);
  assert.ok((await fromErin.getAttribute("class")).includes("unread"));

  // A marks it read: the badge drops by one and the item is no longer unread.
  await fromErin.getByRole("button", { name: /Mark as read/ }).click();
  await waitForBadge(a.page, startBadge);
  assert.ok(!(await fromErin.getAttribute("class")).includes("unread"));

  // A's connection drops; B comments meanwhile; A resumes with ?since= and gets the
  // comment exactly once.
  await a.page.locator("#bell").click(); // close the dropdown
  await a.context.setOffline(true);
  await a.page.locator("#status[data-state=offline]").waitFor();
  await bHello.getByRole("button", { name: "Comments" }).click();
  await bHello.getByPlaceholder("Write a comment").fill("Lovely post, Alice!");
  await bHello.getByRole("button", { name: "Comment", exact: true }).click();
  await bHello.locator(".comment", { hasText: "Lovely post, Alice!" }).waitFor();
  await a.context.setOffline(false);
  await waitForBadge(a.page, startBadge + 1);
  await a.page.locator("#status[data-state=live]").waitFor();
  await a.page.locator("#bell").click();
  const commentNote = a.page.locator("#notif-list li.notif", { hasText: "erin commented" });
  await commentNote.waitFor();
  await a.page.waitForTimeout(300);
  assert.equal(await commentNote.count(), 1, "the missed notification arrives exactly once");
  await a.page.locator("#bell").click(); // close the dropdown

  // A lively screenshot: unread notifications, comments open, a conversation open.
  await hello.getByRole("button", { name: "Comments" }).click();
  await hello.locator(".comment", { hasText: "Lovely post, Alice!" }).waitFor();
  await a.page.locator("#people button", { hasText: "bob" }).click();
  await a.page.locator("#thread li.msg", { hasText: "before I even reloaded" }).waitFor();
  await a.page.evaluate(() => window.scrollTo(0, 0));
  await a.page.locator("#bell").click();
  await a.page.locator("#notif-panel").waitFor();
  await a.page.screenshot({ path: join(out, "demo.png"), fullPage: true });

  // Mark all as read empties the badge.
  await a.page.getByRole("button", { name: "Mark all as read" }).click();
  await waitForBadge(a.page, 0);
  assert.equal(await a.page.locator("#notif-list li.unread").count(), 0);

  // The dashboard: the admin token, then live numbers from the event stream.
  const d = await newPage("dashboard");
  await d.page.goto(base + "/dashboard");
  await d.page.getByLabel("Admin token").fill(ADMIN_TOKEN);
  await d.page.getByRole("button", { name: "Open dashboard" }).click();
  await d.page.locator("#status[data-state=live]").waitFor();
  await d.page.waitForFunction(() => Number(document.getElementById("kpi-completed").textContent.replace(/,/g, "")) > 0);
  assert.equal(await d.page.evaluate(() => sessionStorage.getItem("likewise.admin-token")), ADMIN_TOKEN);
  await d.page.locator("#recent tr td .pill.success").first().waitFor();
  await d.page.locator("#names tr", { hasText: "deliver_webhook" }).first().waitFor();
  const dead = d.page.locator("#dead tr", { hasText: "webhook" }).first();
  await dead.waitFor();
  await d.page.waitForTimeout(2500); // a few points on the live chart
  await d.page.evaluate(() => window.scrollTo(0, 0));
  await d.page.screenshot({ path: join(out, "dashboard.png"), fullPage: true });
  await dead.getByRole("button", { name: /Retry task/ }).click();
  await d.page.locator(".toast", { hasText: "queued again" }).waitFor();

  assert.deepEqual(consoleErrors, [], "no console errors on either page");
});

test("sockets and the admin stream open with tickets, and signing out ends the session", async () => {
  const c = await newPage("carol");
  const urls = [];
  c.page.on("websocket", (ws) => urls.push(ws.url()));
  c.page.on("request", (r) => urls.push(r.url()));
  await c.page.goto(base + "/");
  await c.page.getByRole("button", { name: "Fill in the demo account carol" }).click();
  await c.page.locator("#auth-submit").click();
  await c.page.locator("#status[data-state=live]").waitFor();
  const token = await c.page.evaluate(() => localStorage.getItem("likewise.token"));
  assert.ok(urls.some((u) => u.includes("/ws?ticket=")), urls.join("\n"));
  assert.deepEqual(urls.filter((u) => u.includes(token) || u.includes("token=")), []);

  await c.page.locator("#sign-out").click();
  await c.page.locator("#auth-submit").waitFor();
  // The page does not wait for the server's answer; the token stops working soon after.
  let answer;
  for (let i = 0; i < 50; i++) {
    const r = await fetch(base + "/api/me", { headers: { Authorization: `Bearer ${token}` } });
    answer = { status: r.status, body: await r.json() };
    if (r.status === 401) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(answer.status, 401, JSON.stringify(answer));
  assert.match(answer.body.error.message, /session revoked/);

  const d = await newPage("dashboard-tickets");
  const dashUrls = [];
  d.page.on("request", (r) => dashUrls.push(r.url()));
  await d.page.goto(base + "/dashboard");
  await d.page.getByLabel("Admin token").fill(ADMIN_TOKEN);
  await d.page.getByRole("button", { name: "Open dashboard" }).click();
  await d.page.locator("#status[data-state=live]").waitFor();
  assert.ok(dashUrls.some((u) => u.includes("/api/admin/stream?ticket=")), dashUrls.join("\n"));
  assert.deepEqual(dashUrls.filter((u) => u.includes(ADMIN_TOKEN)), []);
  assert.deepEqual(consoleErrors, [], "no console errors on either page");
});
