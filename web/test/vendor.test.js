// The xterm.js the relay serves (web/src/vendor/, built into the relay) is the npm package that
// web/package-lock.json pins, byte for byte: nothing edited, nothing stale.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";

const web = new URL("../", import.meta.url);
const installed = new URL("node_modules/@xterm/xterm/", web);
const skip = !existsSync(installed) && "node_modules/@xterm/xterm is not installed (the project's test command runs `npm ci` in web/)";

const sha256 = (url) => createHash("sha256").update(readFileSync(url)).digest("hex");

test("the vendored xterm.js is the locked npm package's files", { skip }, () => {
  const lock = JSON.parse(readFileSync(new URL("package-lock.json", web), "utf8"));
  const locked = lock.packages["node_modules/@xterm/xterm"];
  const pkg = JSON.parse(readFileSync(new URL("package.json", installed), "utf8"));
  assert.equal(pkg.version, locked.version, "node_modules holds the locked version (run `npm ci` in web/)");
  for (const [served, from] of [
    ["src/vendor/xterm.mjs", "lib/xterm.mjs"],
    ["src/vendor/xterm.css", "css/xterm.css"],
  ]) {
    assert.equal(sha256(new URL(served, web)), sha256(new URL(from, installed)), `${served} is not @xterm/xterm ${locked.version}'s ${from}: copy it again`);
  }
  assert.equal(readFileSync(new URL("src/vendor/LICENSE-xterm", web), "utf8"), readFileSync(new URL("LICENSE", installed), "utf8"));
});
