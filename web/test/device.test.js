// The browser's device code against the real host and its embedded relay (`agent-host up`),
// run in Node with the relay's self-signed certificate trusted.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { agentHost, missingBinaries, startHost } from "../test-support/host.mjs";

const hasWebSocket =
  spawnSync(process.execPath, ["--experimental-websocket", "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"]).status === 0;
const skip = missingBinaries() || (!hasWebSocket && "this Node.js has no WebSocket client (Node 20.10 or later has one)");

test("the browser's device code pairs, requests, and approves through a real host", { skip }, async () => {
  const world = await startHost({ allow: ["Bash(printf *)"] });
  try {
    const { link } = await world.offer(["--yes"]);
    const scenario = spawn(
      process.execPath,
      ["--experimental-websocket", "--no-warnings", fileURLToPath(new URL("../test-support/device-scenario.mjs", import.meta.url)), link, agentHost],
      { cwd: world.ws, env: { ...world.env, NODE_EXTRA_CA_CERTS: join(world.home, "config/relay-cert.pem") } },
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
    assert.ok(existsSync(join(world.ws, "approved-from-the-browser")));
  } finally {
    world.stop();
  }
});
