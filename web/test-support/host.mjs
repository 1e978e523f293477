// The real host for the web tests: `agent-host up` (host and embedded relay) in a fresh home
// and workspace, with the `remote` CLI beside it. Needs the workspace's binaries built (the
// project's test command builds them first).

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

export const root = fileURLToPath(new URL("../../", import.meta.url));
export const agentHost = join(root, "target/debug/agent-host");
export const remoteBin = join(root, "target/debug/remote");

/** Why the binaries cannot be used, or false. */
export function missingBinaries() {
  return [agentHost, remoteBin].some((b) => !existsSync(b)) && "the workspace's binaries are not built (the project's test command builds them first)";
}

/** Follows a stream's lines; the function returned waits for the first line matching `pattern`. */
export function lines(stream) {
  const rl = createInterface({ input: stream });
  const seen = [];
  const waiters = [];
  rl.on("line", (line) => {
    seen.push(line);
    for (const w of waiters.splice(0)) w();
  });
  return async (pattern, ms = 20000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = seen.find((l) => pattern.test(l));
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`no line matching ${pattern} in ${JSON.stringify(seen)}`);
      await new Promise((r) => {
        waiters.push(r);
        setTimeout(r, 200);
      });
    }
  };
}

/** Runs a command to its end; resolves to { code, stdout, stderr }. */
export function run(command, args, options) {
  return new Promise((resolve) => {
    const child = spawn(command, args, options);
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d) => (stdout += d));
    child.stderr?.on("data", (d) => (stderr += d));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * Starts `agent-host up` with `permissions` as its settings. The result runs `agent-host` and
 * `remote` commands in that world, makes pairing offers, and stops everything.
 */
export async function startHost(permissions) {
  const base = mkdtempSync(join(tmpdir(), "web-host-"));
  const home = join(base, "home");
  const ws = join(base, "ws");
  mkdirSync(ws);
  const settings = join(base, "settings.json");
  writeFileSync(settings, JSON.stringify({ permissions }));
  const env = { ...process.env, AGENT_HOST_HOME: home, REMOTE_HOME: join(base, "devices"), RUST_LOG: "info" };
  const sandbox = spawnSync(agentHost, ["doctor"], { env }).status === 0 ? [] : ["--allow-unsandboxed"];
  // The host's log goes beside the workspace, for a failing test to look at.
  const log = openSync(join(base, "host.log"), "w");
  const host = spawn(agentHost, ["up", "--no-pair", "--port", "0", "--host-name", "workstation", "--settings", settings, ...sandbox], { cwd: ws, env, stdio: ["pipe", "pipe", log] });
  const children = [host];
  const relay = (await lines(host.stdout)(/^relay:\s+wss:\/\/\S+/)).match(/wss:\/\/(\S+)/)[1];
  const world = {
    base,
    home,
    ws,
    env,
    relay,
    /** `agent-host ARGS` in the workspace, to its end. */
    agentHost: (args) => run(agentHost, args, { cwd: ws, env }),
    /** `agent-host ARGS`, still running. */
    spawnHost: (args) => {
      const child = spawn(agentHost, args, { cwd: ws, env });
      children.push(child);
      return child;
    },
    /** `remote --profile NAME ARGS`, still running; `done` resolves when it ends. */
    remote: (profile, args) => {
      const child = spawn(remoteBin, ["--profile", profile, ...args], { cwd: ws, env, stdio: ["ignore", "pipe", "pipe"] });
      children.push(child);
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.done = new Promise((resolve) => child.on("exit", (code) => resolve({ code, stdout, stderr })));
      return child;
    },
    /** `agent-host pair ARGS`: resolves to { link, child, line } once the link is printed. */
    offer: async (args) => {
      const child = spawn(agentHost, ["pair", ...args], { cwd: ws, env, stdio: ["pipe", "pipe", "inherit"] });
      children.push(child);
      const line = lines(child.stdout);
      const link = (await line(/https:\/\/\S+\/pair#/)).match(/https:\/\/\S+?(?='|$|\s)/)[0];
      return { link, child, line };
    },
    stop: () => {
      for (const child of children) child.kill();
    },
  };
  return world;
}
