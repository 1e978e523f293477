// A browser device and a relay cluster: two relay nodes (the `relay` binary with `--cluster`)
// sharing routing through a real `nats-server`, one certificate between them; the host is
// served through both (`agent-host serve --relay A,B`). The page paired through node A moves to
// node B by itself when A is killed, and goes on: requests made after run, answered through B.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { startHost } from "../test-support/host.mjs";
import { CHROMIUM, chromium, skipBrowser } from "../test-support/browser.mjs";

const skip =
  skipBrowser ||
  (spawnSync("nats-server", ["--version"]).status !== 0 && "no nats-server here (the project's test command installs it)") ||
  (spawnSync("openssl", ["version"]).status !== 0 && "no openssl to make the nodes' certificate");

describe("a browser with a relay cluster", { skip }, () => {
  let world;
  let browser;

  before(async () => {
    world = await startHost({ allow: ["Bash(printf *)"] }, { cluster: true });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  });

  after(async () => {
    await browser?.close();
    world?.stop();
  });

  test("the page moves to another node when its node dies, and goes on", async () => {
    const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
    const sockets = [];
    page.on("websocket", (ws) => sockets.push(new URL(ws.url()).host));
    const { link } = await world.offer(["--yes", "--role", "operator"]);
    assert.ok(link.includes(`&relay=${world.nodes.map((n) => n.addr).join(",")}`), link);
    await page.goto(link);
    await page.getByRole("button", { name: "Pair this browser" }).click();
    await page.locator("[data-field=host]", { hasText: "online" }).waitFor();
    await page.getByLabel("Run a command").fill("printf before-the-failover");
    await page.getByRole("button", { name: "Request run" }).click();
    await page.locator("ol.feed li", { hasText: "before-the-failover" }).filter({ hasText: "exit 0" }).waitFor();
    assert.deepEqual([...new Set(sockets)], [world.nodes[0].addr]);

    world.nodes[0].child.kill("SIGKILL");
    await page.getByLabel("Run a command").fill("printf after-the-failover");
    await page.getByRole("button", { name: "Request run" }).click();
    await page.locator("ol.feed li", { hasText: "after-the-failover" }).filter({ hasText: "exit 0" }).waitFor({ timeout: 30000 });
    await page.locator("[data-field=host]", { hasText: "online" }).waitFor();
    assert.ok(sockets.includes(world.nodes[1].addr), `the page never reached node B: ${sockets.join(" ")}`);
    // Once each: the result of the request made meanwhile is there once.
    assert.equal(await page.locator("ol.feed li", { hasText: "after-the-failover" }).count(), 1);
  });
});
