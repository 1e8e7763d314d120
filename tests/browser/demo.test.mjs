// Drives the bundled demo page and the ops dashboard in Chromium against the real
// binary: two users in two browser contexts, a like that reaches the other's bell
// without a reload, mark-as-read, a dropped connection that resumes without gaps or
// doubles, and the dashboard showing completed tasks; a new post and its author's
// online dot reaching another user's page live; avatar colours that follow the
// user, a long notification list scrolled to its oldest item, and the dashboard's
// started / running / busy figures adding up under load. Saves screenshots to out/.

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
  // The periodic tasks' successes are kept, so that the dashboard lists one.
  writeFileSync(
    config,
    '[queue]\nkeep_unowned_results = true\n\n[[webhooks]]\nurl = "http://127.0.0.1:9/unreachable"\nmax_attempts = 2\n',
  );
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
async function newPage(label, viewport = { width: 1280, height: 860 }) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (msg) => {
    if (msg.type() === "error") consoleErrors.push(`${label}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => consoleErrors.push(`${label}: uncaught ${err.message}`));
  return { context, page };
}

/** A JSON API call from the test itself. */
async function apiCall(method, path, token, body) {
  const r = await fetch(base + path, {
    method,
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await r.json();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${JSON.stringify(answer)}`);
  return answer;
}

/** The computed background colour of an avatar. */
function avatarColor(locator) {
  return locator.evaluate((el) => getComputedStyle(el).backgroundColor);
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
  const aliceChip = a.page.getByRole("button", { name: "Fill in the demo account alice" });
  const chipColors = {};
  for (const name of ["alice", "bob", "carol"]) {
    const chip = a.page.getByRole("button", { name: `Fill in the demo account ${name}` });
    chipColors[name] = await avatarColor(chip.locator(".avatar"));
  }
  assert.equal(new Set(Object.values(chipColors)).size, 3, `each demo account its own colour: ${JSON.stringify(chipColors)}`);
  await aliceChip.click();
  await a.page.locator("#auth-submit").click();
  await a.page.locator("#status[data-state=live]").waitFor();
  const hello = a.page.locator("article.post", { hasText: "Hello from likewise" });
  await hello.waitFor();
  // A user's avatar has one colour: on the sign-in button, in the feed, in the top bar.
  assert.equal(await hello.locator(".post-head .who").textContent(), "alice");
  assert.equal(await avatarColor(hello.locator(".post-head .avatar")), chipColors.alice, "alice: sign-in button and feed");
  assert.equal(await avatarColor(a.page.locator("#me-avatar")), chipColors.alice, "alice: sign-in button and top bar");
  for (const name of ["bob", "carol"]) {
    const post = a.page.locator("article.post").filter({ has: a.page.locator(".post-head .who", { hasText: name }) }).first();
    await post.waitFor();
    assert.equal(await avatarColor(post.locator(".post-head .avatar")), chipColors[name], `${name}: sign-in button and feed`);
  }
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

/** A page signed in as a new account made through the API. */
async function signedInPage(name) {
  const session = await apiCall("POST", "/api/users", null, { name, password: `${name}-password` });
  const p = await newPage(name);
  await p.page.goto(base + "/");
  await p.page.evaluate((token) => localStorage.setItem("likewise.token", token), session.token);
  await p.page.reload();
  await p.page.locator("#status[data-state=live]").waitFor();
  return { ...p, user: session.user };
}

test("a post by another user and that user's online dot appear without a reload", async () => {
  const b = await signedInPage("frank");
  // Set on B's page now: a reload would lose it.
  await b.page.evaluate(() => { window.__sameDocument = true; });
  const a = await signedInPage("dana");
  const danaDot = (page) => page.locator(`.presence-dot[data-presence-user="${a.user.id}"]`);
  const visibleDot = (page, shown) => page.waitForFunction(
    ([id, want]) => {
      const dots = [...document.querySelectorAll(`article.post .presence-dot[data-presence-user="${id}"]`)];
      return dots.length > 0 && dots.every((d) => d.hidden === !want);
    },
    [a.user.id, shown],
    { timeout: TIMEOUT },
  );

  // A writes a post through the page; B's feed shows it, and A online.
  await a.page.locator("#post-title").fill("Fresh from dana");
  await a.page.locator("#post-body").fill("Posted while frank was looking.");
  await a.page.locator("#post-form button[type=submit]").click();
  await a.page.locator("article.post", { hasText: "Fresh from dana" }).waitFor();
  const fresh = b.page.locator("article.post", { hasText: "Fresh from dana" });
  await fresh.waitFor();
  assert.equal(await fresh.count(), 1, "the post is shown once");
  assert.equal(await fresh.locator(".post-head .who").textContent(), "dana");
  const first = await b.page.locator("#feed article.post").first().getAttribute("data-post-id");
  assert.equal(first, await fresh.getAttribute("data-post-id"), "the new post is at the top");
  await visibleDot(b.page, true);
  assert.ok(await danaDot(b.page).first().isVisible());
  assert.equal(await b.page.evaluate(() => window.__sameDocument), true, "no reload");

  // A hides; B's dot goes out; A shows again; it comes back.
  const toggle = a.page.locator("#show-online");
  assert.equal(await toggle.isChecked(), true);
  await toggle.uncheck();
  await visibleDot(b.page, false);
  await a.page.waitForFunction(() => !document.getElementById("show-online").disabled);
  await toggle.check();
  await visibleDot(b.page, true);
  await b.page.screenshot({ path: join(out, "presence.png") });

  // A's page closes: the dot goes out on B's page.
  await a.context.close();
  await visibleDot(b.page, false);
  assert.equal(await b.page.evaluate(() => window.__sameDocument), true, "no reload");
  await b.context.close();
  assert.deepEqual(consoleErrors, [], "no console errors");
});

test("the notification list scrolls to its oldest notification, on a laptop and on phones", async () => {
  const user = await apiCall("POST", "/api/users", null, { name: "noteworthy", password: "noteworthy-password" });
  const total = 45; // more than one page of the bell's list
  for (let i = 1; i <= total; i++) {
    await apiCall("POST", "/api/admin/notifications", ADMIN_TOKEN, { user_id: user.user.id, kind: "custom", text: `Note ${i} of ${total}` });
  }
  for (const viewport of [{ width: 1280, height: 720 }, { width: 390, height: 844 }, { width: 844, height: 390 }]) {
    const label = `notes ${viewport.width}x${viewport.height}`;
    const { context, page } = await newPage(label, viewport);
    await page.goto(base + "/");
    await page.evaluate((token) => localStorage.setItem("likewise.token", token), user.token);
    await page.reload();
    await page.locator("#status[data-state=live]").waitFor();
    await waitForBadge(page, total);
    await page.locator("#bell").click();
    await page.locator("#notif-list li.notif").first().waitFor();
    // Scroll the list to its end until the oldest notification is there: the rest
    // of the list loads as it is scrolled.
    const oldest = page.locator("#notif-list li.notif", { hasText: `Note 1 of ${total}` });
    for (let i = 0; i < 20 && (await oldest.count()) === 0; i++) {
      await page.locator("#notif-list").evaluate((el) => { el.scrollTop = el.scrollHeight; });
      await page.waitForTimeout(200);
    }
    assert.equal(await oldest.count(), 1, `${label}: the oldest notification is listed`);
    await page.locator("#notif-list").evaluate((el) => { el.scrollTop = el.scrollHeight; });
    assert.equal(await page.locator("#notif-list li.notif").count(), total, `${label}: every notification is listed once`);
    const boxes = await page.evaluate(() => {
      const box = (el) => { const r = el.getBoundingClientRect(); return { top: r.top, bottom: r.bottom }; };
      const items = document.querySelectorAll("#notif-list li.notif");
      return {
        panel: box(document.getElementById("notif-panel")),
        list: box(document.getElementById("notif-list")),
        last: box(items[items.length - 1]),
        viewport: { top: 0, bottom: window.innerHeight },
      };
    });
    const inside = (inner, outer) => inner.top >= outer.top - 0.5 && inner.bottom <= outer.bottom + 0.5;
    assert.ok(inside(boxes.last, boxes.list), `${label}: the oldest item fits in the list: ${JSON.stringify(boxes)}`);
    assert.ok(inside(boxes.list, boxes.panel), `${label}: the list fits in the dropdown: ${JSON.stringify(boxes)}`);
    assert.ok(inside(boxes.panel, boxes.viewport), `${label}: the dropdown fits in the window: ${JSON.stringify(boxes)}`);
    assert.match(await oldest.textContent(), new RegExp(`Note 1 of ${total}`));
    if (viewport.width === 390) await page.screenshot({ path: join(out, "notifications-mobile.png") });
    await context.close();
  }
  assert.deepEqual(consoleErrors, [], "no console errors");
});

test("the dashboard's started tasks are the running ones plus those recording an outcome, under load", async (t) => {
  const d = await newPage("dashboard-load");
  await d.page.goto(base + "/dashboard");
  await d.page.getByLabel("Admin token").fill(ADMIN_TOKEN);
  await d.page.getByRole("button", { name: "Open dashboard" }).click();
  await d.page.locator("#status[data-state=live]").waitFor();

  // Every figure the dashboard shows, read together: one render writes them all.
  const read = () => d.page.evaluate(() => {
    const n = (id) => Number(document.getElementById(id).textContent.replace(/,/g, ""));
    const [busy, total] = document.getElementById("kpi-workers").textContent.split("/").map((x) => Number(x.replace(/,/g, "")));
    return { started: n("kpi-started"), running: n("kpi-running"), recording: n("kpi-recording"), waiting: n("kpi-waiting"), busy, total };
  });
  const check = (f) => {
    assert.equal(f.running, f.busy, `"running" is the busy workers: ${JSON.stringify(f)}`);
    assert.ok(f.busy <= f.total, `never more busy workers than workers: ${JSON.stringify(f)}`);
    assert.equal(f.started, f.running + f.recording, `started = running + recording: ${JSON.stringify(f)}`);
  };

  // Load: every notification is a webhook delivery task (to a port nobody listens on).
  const user = await apiCall("POST", "/api/users", null, { name: "busybody", password: "busybody-password" });
  let serverDisagreed = 0;
  let sawStarted = 0;
  const load = (async () => {
    for (let round = 0; round < 10; round++) {
      await Promise.all(Array.from({ length: 25 }, (_, i) =>
        apiCall("POST", "/api/admin/notifications", ADMIN_TOKEN, { user_id: user.user.id, kind: "custom", text: `Load ${round}.${i}` })));
      const stats = await apiCall("GET", "/api/admin/stats", ADMIN_TOKEN);
      if (stats.queue.started !== stats.workers.busy) serverDisagreed += 1;
    }
  })();
  let done = false;
  load.then(() => { done = true; }, () => { done = true; });
  const samples = [];
  try {
    while (!done) {
      const f = await read();
      samples.push(f);
      sawStarted = Math.max(sawStarted, f.started);
      await d.page.waitForTimeout(100);
    }
  } finally {
    await load.catch(() => {});
  }
  await load;
  for (let i = 0; i < 30; i++) {
    samples.push(await read());
    await d.page.waitForTimeout(100);
  }
  t.diagnostic(`${samples.length} dashboard samples, most started ${sawStarted}; stats with started != busy: ${serverDisagreed} of 10`);
  for (const f of samples) check(f);

  // Once nothing waits and the last outcomes are recorded, every figure is 0 again.
  await d.page.waitForFunction(() => ["kpi-waiting", "kpi-started"].every((id) => document.getElementById(id).textContent === "0"), null, { timeout: 30000 });
  const idle = await read();
  check(idle);
  assert.deepEqual([idle.started, idle.running, idle.recording, idle.busy], [0, 0, 0, 0]);
  assert.deepEqual(consoleErrors, [], "no console errors");
});
