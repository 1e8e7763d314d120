// Starting the real likewise binary for Node client tests and benches, plus a few
// HTTP helpers. The server listens on a free loopback port with a temporary data
// directory; stop() sends SIGTERM and waits for the exit.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, "../..");
export const ADMIN_TOKEN = "node-suite-admin-token-0123456789";

/** Starts `likewise serve`; `config` is TOML written to its config file. */
export async function startLikewise({ config = "", binary } = {}) {
  const bin = binary || process.env.LIKEWISE_BIN || join(root, "target/debug/likewise");
  const dir = mkdtempSync(join(tmpdir(), "likewise-node-"));
  const configPath = join(dir, "likewise.toml");
  writeFileSync(configPath, config);
  const args = ["serve", "--config", configPath, "--data", join(dir, "data"), "--http", "127.0.0.1:0", "--resp", "off"];
  const proc = spawn(bin, args, {
    env: { ...process.env, LIKEWISE_ADMIN_TOKEN: ADMIN_TOKEN, RUST_LOG: "info", NO_COLOR: "1" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  const base = await new Promise((resolveBase, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log}`)), 30000);
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (chunk) => {
      log += chunk;
      const m = log.match(/listening http=(\S+)/);
      if (m) {
        clearTimeout(timer);
        resolveBase(`http://${m[1]}`);
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${log}`));
    });
  });
  return {
    base,
    pid: proc.pid,
    log: () => log,
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A JSON API call; resolves to { status, body }. */
export async function api(base, method, path, token, body) {
  const r = await fetch(base + path, {
    method,
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

/** Registers a user; resolves to { id, token }. */
export async function register(base, name) {
  const { status, body } = await api(base, "POST", "/api/users", null, { name, password: "password123" });
  if (status !== 201) throw new Error(`register ${name}: ${status} ${JSON.stringify(body)}`);
  return { id: body.user.id, token: body.token };
}

/** Creates a post; resolves to its id. */
export async function createPost(base, user, title) {
  const { status, body } = await api(base, "POST", "/api/posts", user.token, { title, body: "text" });
  if (status !== 201) throw new Error(`post: ${status} ${JSON.stringify(body)}`);
  return body.id;
}

/** The admin stats. */
export async function stats(base) {
  return (await api(base, "GET", "/api/admin/stats", ADMIN_TOKEN)).body;
}
