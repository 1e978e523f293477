// The browser's device code against the real host and its embedded relay (`agent-host up`),
// run in Node with the relay's self-signed certificate trusted. Needs the workspace's binaries
// built (the project's test command builds them first).

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const root = fileURLToPath(new URL("../../", import.meta.url));
const agentHost = join(root, "target/debug/agent-host");

function lines(stream) {
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

const hasWebSocket =
  spawnSync(process.execPath, ["--experimental-websocket", "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"]).status === 0;
const skip = !existsSync(agentHost)
  ? "agent-host is not built (the project's test command builds it first)"
  : !hasWebSocket && "this Node.js has no WebSocket client (Node 20.10 or later has one)";

test("the browser's device code pairs, requests, and approves through a real host", { skip }, async () => {
  const base = mkdtempSync(join(tmpdir(), "web-device-"));
  const home = join(base, "home");
  const ws = join(base, "ws");
  mkdirSync(ws);
  writeFileSync(join(base, "settings.json"), JSON.stringify({ permissions: { allow: ["Bash(printf *)"] } }));
  const env = { ...process.env, AGENT_HOST_HOME: home };
  const sandbox = spawnSync(agentHost, ["doctor"], { env }).status === 0 ? [] : ["--allow-unsandboxed"];
  const host = spawn(agentHost, ["up", "--no-pair", "--port", "0", "--settings", join(base, "settings.json"), ...sandbox], { cwd: ws, env });
  let offer;
  try {
    await lines(host.stdout)(/^relay: /);
    offer = spawn(agentHost, ["pair", "--yes"], { cwd: ws, env });
    const link = (await lines(offer.stdout)(/https:\/\/\S+\/pair#/)).match(/https:\/\/\S+?(?='|$|\s)/)[0];
    const scenario = spawn(
      process.execPath,
      ["--experimental-websocket", "--no-warnings", fileURLToPath(new URL("../test-support/device-scenario.mjs", import.meta.url)), link, agentHost],
      { cwd: ws, env: { ...env, NODE_EXTRA_CA_CERTS: join(home, "config/relay-cert.pem") } },
    );
    let out = "";
    let err = "";
    scenario.stdout.on("data", (d) => (out += d));
    scenario.stderr.on("data", (d) => (err += d));
    const code = await new Promise((resolve) => scenario.on("exit", resolve));
    assert.equal(code, 0, `${out}\n${err}`);
    assert.match(out, /paired as operator/);
    assert.match(out, /status: role operator/);
    assert.match(out, /result: hi from the browser \(exit 0\)/);
    assert.match(out, /decided: approve; the host's command exited 0/);
    assert.ok(existsSync(join(ws, "approved-from-the-browser")));
  } finally {
    offer?.kill();
    host.kill();
  }
});
