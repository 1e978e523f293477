// The web UI in a real browser (Debian's Chromium driven by playwright-core) against the real
// host and its embedded relay (`agent-host up`), with the `remote` CLI as a second device.
// The browser accepts the relay's self-signed certificate as a person would after comparing
// its fingerprint (here: told to ignore certificate errors; the pin is in the pairing link).
//
// Set UPDATE_DOCS=1 to write the phone-size screenshot of a pending action to docs/.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { agentHost, root, run, startHost } from "../test-support/host.mjs";
import { loadNoiseVectors, runNoiseVectors } from "../test-support/noise-vectors.mjs";
import { checkScreen } from "../test-support/screen.mjs";
import { importKeyPair, pattern as noisePattern } from "../src/noise.js";
import { CHROMIUM, chromium, skipBrowser } from "../test-support/browser.mjs";

const skip = skipBrowser;

/** The lines a terminal on the page holds (rows that wrap joined again), as xterm.js has them. */
function termLines(terminal) {
  return terminal.evaluate((el) => {
    const b = el.terminal.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) {
      const line = b.getLine(i);
      const text = line.translateToString(true);
      if (line.isWrapped && lines.length > 0) lines[lines.length - 1] += text;
      else lines.push(text);
    }
    while (lines.length > 0 && lines.at(-1) === "") lines.pop();
    return lines;
  });
}

/** Waits until a terminal on the page shows a line matching `pattern`; resolves to its lines. */
async function termShows(terminal, pattern, ms = 20000) {
  await terminal.waitFor();
  const deadline = Date.now() + ms;
  for (;;) {
    const lines = await termLines(terminal);
    if (lines.some((l) => pattern.test(l))) return lines;
    if (Date.now() > deadline) throw new Error(`no line matching ${pattern} in ${JSON.stringify(lines)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("the web UI in Chromium", { skip }, () => {
  let world;
  let browser;
  let page;
  let browserId;
  const dialogs = [];

  before(async () => {
    world = await startHost({ allow: ["Bash(printf *)", "Bash(ls *)"], deny: ["Bash(rm *)"] });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    page = await context.newPage();
    page.on("dialog", (dialog) => {
      dialogs.push(dialog.message());
      dialog.accept();
    });
    // A CLI device beside the browser, to ask for things the browser then answers.
    const offer = await world.offer(["--yes", "--role", "operator"]);
    const cli = world.remote("cli", ["pair", offer.link, "--name", "cli"]);
    const paired = await cli.done;
    assert.equal(paired.code, 0, paired.stderr);
  });

  after(async () => {
    await browser?.close();
    world?.stop();
  });

  test("an unpaired browser says how to pair", async () => {
    await page.goto(`https://${world.relay}/`);
    await page.getByRole("heading", { name: "This browser is not paired" }).waitFor();
    assert.match(await page.locator("main").innerText(), /agent-host pair/);
    await checkScreen(page, "the unpaired screen");
  });

  test("the page's Noise over Chromium's WebCrypto passes the known-answer vectors", async () => {
    await page.goto(`https://${world.relay}/`);
    const vectors = loadNoiseVectors(noisePattern);
    const results = await page.evaluate(runNoiseVectors, { modulePath: "/noise.js", vectors });
    assert.deepEqual(results.filter((r) => r.error), []);
    assert.equal(results.length, vectors.length);
    assert.ok(results.some((r) => r.name === "Noise_KK_25519_AESGCM_SHA256"));
  });

  test("the relay serves the page with a strict content security policy", async () => {
    const response = await page.goto(`https://${world.relay}/`);
    const headers = response.headers();
    assert.match(headers["content-security-policy"], /script-src 'self'/);
    assert.match(headers["content-security-policy"], /frame-ancestors 'none'/);
    assert.equal(headers["x-content-type-options"], "nosniff");
  });

  test("pairing from the link, with the host's yes after comparing fingerprints", async () => {
    const offer = await world.offer(["--role", "operator"]);
    await page.goto(offer.link);
    await page.getByLabel("Name for this browser").fill("Test phone");
    // The secret has left the address bar.
    assert.equal(new URL(page.url()).hash, "");
    const shown = (await page.locator("#my-fingerprint").innerText()).trim();
    await checkScreen(page, "the pairing screen");
    await page.getByRole("button", { name: "Pair this browser" }).click();
    const asked = await offer.line(/^pair "Test phone", fingerprint /);
    assert.ok(asked.includes(`fingerprint ${shown} (`), `${asked} vs ${shown}`);
    browserId = asked.match(/\((dev1\w+)\)/)[1];
    offer.child.stdin.write("y\n");
    await offer.line(/paired "Test phone"/);
    await page.getByRole("heading", { name: "Needs you" }).waitFor();
    await page.locator("[data-field=host]", { hasText: "online" }).waitFor();
    assert.match(await page.locator("[data-field=workspace]").innerText(), /ws$/);
    // The private key is a CryptoKey the page itself cannot read out.
    const stored = await page.evaluate(
      () =>
        new Promise((resolve, reject) => {
          const open = indexedDB.open("agent-bridge");
          open.onerror = () => reject(open.error);
          open.onsuccess = () => {
            // One record for each host, under its host key.
            const get = open.result.transaction("device").objectStore("device").getAll();
            get.onsuccess = () => {
              if (get.result.length !== 1) return reject(new Error(`${get.result.length} records`));
              const r = get.result[0];
              const hex = (b) => Array.from(b ?? [], (x) => x.toString(16).padStart(2, "0")).join("");
              resolve({
                extractable: r.keyPair.privateKey.extractable,
                channelExtractable: r.channelKeyPair.privateKey.extractable,
                channelKey: hex(r.channelKeyPair.publicKey),
                hostChannelKey: hex(r.hostChannelKey),
                role: r.role,
                sent: r.sent,
              });
            };
          };
        }),
    );
    assert.equal(stored.extractable, false);
    assert.equal(stored.channelExtractable, false);
    // The channel keys went both ways in the signed pairing messages: the host keeps this
    // browser's, the browser the host's.
    const registry = readFileSync(join(world.home, "state", "devices.json"), "utf8");
    assert.ok(stored.channelKey.length === 64 && registry.includes(`"channel_key": "${stored.channelKey}"`), registry);
    const hostChannel = await importKeyPair(new Uint8Array(readFileSync(join(world.home, "config", "channel.key"))));
    assert.equal(stored.hostChannelKey, Buffer.from(hostChannel.publicKey).toString("hex"));
    assert.equal(stored.role, "operator");
    assert.ok(stored.sent >= 2, "the pairing hello and the first sync used counters 1 and 2");
  });

  test("a command asked by the CLI device is approved in the browser, and its result shows", async () => {
    const run = world.remote("cli", ["run", "--", "sh", "-c", "echo approved-from-the-phone > approved.txt; echo done"]);
    const card = page.locator("article.pending", { hasText: "approved-from-the-phone" });
    await card.waitFor();
    // The device by its name; its id and fingerprint when asked for.
    assert.match(await card.innerText(), /Asked by\s+cli\b/);
    assert.doesNotMatch(await card.innerText(), /dev1/);
    await card.locator("summary", { hasText: "cli" }).click();
    await card.locator("details.actor dd", { hasText: /^dev1\w{50,}$/ }).waitFor();
    await card.locator("details.actor dd", { hasText: /^[A-Z2-7]{4}(-[A-Z2-7]{4}){3}$/ }).waitFor();
    assert.match(await card.innerText(), /Time left\s+\d+:\d\d/);
    // The page in view says it was shown; the host tells every device how far it got.
    await card.locator(".reached", { hasText: "this browser: shown" }).waitFor();
    await card.getByRole("button", { name: "Approve" }).click();
    await card.getByText("Approved by you.").waitFor();
    await card.locator(".reached", { hasText: "this browser: applied" }).waitFor();
    assert.ok(await card.getByRole("button", { name: "Approve" }).isDisabled(), "an answer can be given once");
    const done = await run.done;
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stdout, /done/);
    assert.ok(existsSync(join(world.ws, "approved.txt")));
    await page.locator("ol.feed li", { hasText: "exit 0" }).filter({ hasText: "done" }).waitFor();
  });

  test("an edit is shown with its diff and denied in the browser", async () => {
    const { writeFileSync, readFileSync } = await import("node:fs");
    writeFileSync(join(world.ws, "notes.txt"), "keep this line\n");
    const edit = world.remote("cli", ["edit", "notes.txt", "--old", "keep this line", "--new", "replace it"]);
    const card = page.locator("article.pending", { hasText: "notes.txt" });
    await card.waitFor();
    assert.match(await card.locator("pre.diff").innerText(), /-keep this line\n\+replace it/);
    // The approved card gives way to this one after showing its outcome.
    await page.locator("article.pending", { hasText: "approved-from-the-phone" }).waitFor({ state: "detached" });
    await page.evaluate(() => window.scrollTo(0, 0));
    assert.equal(await page.title(), "(1) Agent bridge", "the tab counts what waits for an answer");
    assert.equal((await card.locator("pre.diff .del").innerText()).trim(), "-keep this line");
    const shot = join(world.base, "pending-action.png");
    await page.screenshot({ path: shot });
    if (process.env.UPDATE_DOCS === "1") copyFileSync(shot, join(root, "docs/pending-action.png"));
    // With a reason, which whoever asked is told; by keyboard this time: real buttons.
    await card.getByLabel("Reason or note (optional)").fill("keep the line as it is");
    await card.getByRole("button", { name: "Deny" }).focus();
    await page.keyboard.press("Enter");
    await card.getByText("Denied by you. “keep the line as it is”").waitFor();
    // Nothing on the page is wider than the phone.
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
    const done = await edit.done;
    assert.notEqual(done.code, 0, "a denied edit must fail at the CLI");
    assert.match(done.stderr, /denied by Test phone.*who says: \\?"keep the line as it is\\?"/);
    assert.equal(readFileSync(join(world.ws, "notes.txt"), "utf8"), "keep this line\n");
  });

  test("several pending actions are answered together after one confirmation, each on its own", async () => {
    const runs = ["one-of-two", "two-of-two"].map((name) => world.remote("cli", ["run", "--", "touch", name]));
    const cards = ["one-of-two", "two-of-two"].map((name) => page.locator("article.pending", { hasText: name }));
    for (const card of cards) {
      await card.waitFor();
      await card.getByLabel("Select, to answer with others").check();
    }
    const ids = await Promise.all(cards.map((card) => card.getAttribute("data-request")));
    await page.getByRole("button", { name: "Approve selected (2)" }).click();
    for (const card of cards) await card.getByText("Approved by you.").waitFor();
    // One confirmation, naming each.
    assert.match(dialogs.at(-1), /^Approve these 2\?\n\n• [0-9a-f]{8} "run `touch (one|two)-of-two` [^"\n]*"\n• [0-9a-f]{8} "run `touch (one|two)-of-two` [^"\n]*"$/);
    for (const run of runs) assert.equal((await run.done).code, 0);
    assert.ok(existsSync(join(world.ws, "one-of-two")) && existsSync(join(world.ws, "two-of-two")));
    // Two answers, each signed on its own and bound to its own action.
    const log = await world.agentHost(["audit", "tail", "-n", "30"]);
    for (const id of ids) assert.match(log.stdout, new RegExp(`request ${id}: approve by "Test phone"`));
    await page.getByRole("button", { name: /Approve selected/ }).waitFor({ state: "hidden" });
  });

  test("the operator form runs a command and reads a file", async () => {
    await page.getByLabel("Run a command").fill(`printf '%s\\n' "hello from the form"`);
    await page.getByRole("button", { name: "Request run" }).click();
    await page.locator("ol.feed li", { hasText: "hello from the form" }).filter({ hasText: "exit 0" }).waitFor();
    // A result reads as the terminal would show it: one line per line.
    await page.getByLabel("Run a command").fill("ls -la");
    await page.getByRole("button", { name: "Request run" }).click();
    const listing = page.locator("ol.feed li", { hasText: "ls -la" }).filter({ hasText: "exit 0" });
    const lines = await termShows(listing.locator(".term"), /notes\.txt$/);
    assert.match(lines[0], /^total \d+$/);
    assert.ok(lines.length >= 4, JSON.stringify(lines));
    for (const line of lines.slice(1)) assert.match(line, /^[-dl][rwxsStT-]{9}\S* +\d+ /, JSON.stringify(lines));
    // Denied by policy: a clear message, nothing run.
    await page.getByLabel("Run a command").fill("rm notes.txt");
    await page.getByRole("button", { name: "Request run" }).click();
    await page.locator("ol.feed li", { hasText: "Denied by the host's policy" }).waitFor();
    assert.ok(existsSync(join(world.ws, "notes.txt")));
    await page.getByLabel("Read a file").fill("notes.txt");
    await page.getByRole("button", { name: "Request read" }).click();
    await page.locator("ol.feed li", { hasText: "read notes.txt" }).filter({ hasText: "keep this line" }).waitFor();
  });

  test("cargo test asked from the phone, approved, runs with the toolchain in the user's home and reads as at a terminal", async (t) => {
    const { mkdirSync, writeFileSync } = await import("node:fs");
    const { spawnSync } = await import("node:child_process");
    if (spawnSync("cargo", ["--version"], { env: world.env }).status !== 0) return t.skip("no cargo here");
    const dir = join(world.ws, "tiny");
    mkdirSync(join(dir, "src"), { recursive: true });
    writeFileSync(join(dir, "Cargo.toml"), '[package]\nname = "tiny"\nversion = "0.1.0"\nedition = "2021"\n\n[workspace]\n');
    writeFileSync(join(dir, "src/lib.rs"), "#[test]\nfn adds() { assert_eq!(2 + 2, 4); }\n");
    // Colours as at a terminal: cargo's own, and the test harness's.
    const line = "cargo test --color always -- --color always";
    await page.getByLabel("Run a command").fill(line);
    await page.getByLabel("In (relative to the workspace)").fill("tiny");
    await page.getByRole("button", { name: "Request run" }).click();
    await page.getByLabel("In (relative to the workspace)").fill(".");
    const card = page.locator("article.pending").filter({ has: page.locator("code.line", { hasText: line }) });
    await card.getByRole("button", { name: "Approve" }).click();
    const result = page.locator("ol.feed li", { hasText: "cargo test" }).filter({ hasText: "exit 0" });
    const lines = await termShows(result.locator(".term"), /^test result: ok\. 1 passed/, 120000);
    assert.ok(lines.some((l) => /^test adds \.\.\. ok$/.test(l)), JSON.stringify(lines));
    // In colour, as cargo prints to a terminal that takes it: the "ok" is drawn green.
    const green = await result.locator(".term").evaluate((el) => {
      const b = el.terminal.buffer.active;
      for (let i = 0; i < b.length; i++) {
        const line = b.getLine(i);
        if (!line.translateToString(true).startsWith("test adds ... ok")) continue;
        const cell = line.getCell("test adds ... ".length);
        return [cell.getChars(), cell.isFgPalette(), cell.getFgColor()];
      }
      return null;
    });
    assert.deepEqual(green, ["o", true, 2], "the ok is not green");
  });

  test("the run box is a line for bash: judged as its parts, run as bash runs it", async () => {
    const line = "echo hi | tr a-z A-Z > out.txt; cat out.txt";
    await page.getByLabel("Run a command").fill(line);
    await page.getByRole("button", { name: "Request run" }).click();
    // Not every part is allowed (only printf is): the host asks, and the card shows the line.
    const card = page.locator("article.pending").filter({ has: page.locator("code.line", { hasText: line }) });
    await card.waitFor();
    assert.match(await card.innerText(), /Shell line\s+echo hi \| tr a-z A-Z > out\.txt; cat out\.txt/);
    await card.getByRole("button", { name: "Approve" }).click();
    const result = page.locator("ol.feed li", { hasText: "tr a-z A-Z" }).filter({ hasText: "exit 0" });
    assert.deepEqual(await termShows(result.locator(".term"), /^HI$/), ["HI"]);
    assert.equal(readFileSync(join(world.ws, "out.txt"), "utf8"), "HI\n");
  });

  test("a shell session shows in the browser; input typed there is approved there and reaches it", async () => {
    world.spawnHost(["run", "--shell", "--", "bash", "--norc"]);
    const session = page.locator("article.session", { hasText: "bash --norc" });
    await session.waitFor();
    await session.getByText("running (a shell").waitFor();
    // From its first byte: the prompt bash printed before anything was typed.
    await termShows(session.locator(".term"), /^bash-[\d.]+[$#] $/);
    const type = async (line, needle, check = async () => {}) => {
      await session.getByLabel("Type into the session").fill(line);
      await session.getByRole("button", { name: "Send" }).click();
      // Typing into a shell is performing: the host asks, and this browser may answer, at the
      // session (and "Needs you" leads there).
      const card = session.locator("article.pending", { hasText: needle });
      await page.locator(".pointer", { hasText: "waits at the session" }).waitFor();
      await check();
      await card.getByRole("button", { name: "Approve" }).click();
      await card.getByText("Approved by you.").waitFor();
    };
    // The host screen with all it shows at once fits a phone and reads well.
    await type("echo from-the-phone-$((6*7))", "from-the-phone", () => checkScreen(page, "the host screen"));
    await termShows(session.locator(".term"), /^from-the-phone-42$/);
    // Ctrl-C is allowed without asking, and reaches the program: the sleep ends at once.
    await type("sleep 300", "sleep 300");
    await session.getByRole("button", { name: "Interrupt (Ctrl-C)" }).click();
    await type("echo after-$((20+1))", "after-");
    await termShows(session.locator(".term"), /^after-21$/);
    // While input waits for an answer, its card interrupts the session without answering it.
    await type("sleep 301", "sleep 301");
    await session.getByLabel("Type into the session").fill("echo never-typed");
    await session.getByRole("button", { name: "Send" }).click();
    const waiting = session.locator("article.pending", { hasText: "never-typed" });
    await waiting.getByRole("button", { name: "Interrupt the session" }).click();
    await waiting.getByRole("button", { name: "Deny" }).click();
    await waiting.getByText("Denied by you.").waitFor();
    await type("echo then-$((1+1))", "then-");
    await termShows(session.locator(".term"), /^then-2$/);
  });

  test("a session in a terminal of 100 columns at the host is drawn with 100 columns, and the page still fits", async (t) => {
    const { spawnSync, spawn } = await import("node:child_process");
    if (spawnSync("script", ["--version"]).error) return t.skip("no `script` here to give the session a terminal");
    const line = `stty cols 100 rows 30; exec '${agentHost}' run --shell -- bash --noprofile --norc -i`;
    const child = spawn("script", ["-qfec", line, "/dev/null"], { cwd: world.ws, env: world.env, stdio: ["pipe", "ignore", "ignore"] });
    try {
      const session = page.locator("article.session", { hasText: "bash --noprofile --norc -i" });
      await session.waitFor();
      const term = session.locator(".term");
      await termShows(term, /^bash-[\d.]+[$#] $/);
      assert.deepEqual(await term.evaluate((el) => [el.terminal.cols, el.terminal.rows]), [100, 30]);
      for (const width of [320, 430]) {
        await page.setViewportSize({ width, height: 800 });
        await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
        const [wide, screen] = await page.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
        assert.ok(wide <= screen, `at ${width} px the page is ${wide} px wide`);
        assert.equal(await term.evaluate((el) => el.terminal.cols), 100);
      }
    } finally {
      await page.setViewportSize({ width: 390, height: 844 });
      child.kill();
    }
  });

  test("an agent's hook call is approved in the browser, and the agent proceeds", async () => {
    const { writeFileSync } = await import("node:fs");
    const call = JSON.stringify({
      session_id: "s1",
      transcript_path: join(world.base, "transcript.jsonl"),
      cwd: world.ws,
      permission_mode: "default",
      hook_event_name: "PreToolUse",
      tool_name: "Bash",
      tool_input: { command: "touch agent-did-it", description: "Leave a mark" },
      tool_use_id: "toolu_01",
    });
    writeFileSync(join(world.base, "call.json"), call);
    // A stand-in for a coding agent: it asks its PreToolUse hook, and acts only on an allow.
    const script = join(world.base, "agent.sh");
    writeFileSync(
      script,
      `#!/bin/sh
answer=$("$AGENT_HOST" hook claude-code < "$1")
case "$answer" in
  *'"permissionDecision":"allow"'*) touch agent-did-it; echo proceeded ;;
  *) echo "stopped: $answer"; exit 1 ;;
esac
`,
    );
    const agent = run("sh", [script, join(world.base, "call.json")], { cwd: world.ws, env: { ...world.env, AGENT_HOST: agentHost } });
    const card = page.locator("article.pending", { hasText: "touch agent-did-it" });
    assert.match(await card.innerText(), /Asked by\s+hook claude-code/);
    await card.getByRole("button", { name: "Approve" }).click();
    const done = await agent;
    assert.equal(done.code, 0, done.stdout + done.stderr);
    assert.match(done.stdout, /proceeded/);
    assert.ok(existsSync(join(world.ws, "agent-did-it")));
  });

  test("a lost link shows a banner and resumes by itself", async () => {
    await world.stopHost(); // `up`: its relay goes with it
    await page.getByRole("alert").filter({ hasText: "connection to the relay is lost" }).waitFor();
    await world.startHost();
    await page.locator("#banner").waitFor({ state: "hidden" });
    await page.getByLabel("Run a command").fill("printf after-the-restart");
    await page.getByRole("button", { name: "Request run" }).click();
    await page.locator("ol.feed li", { hasText: "after-the-restart" }).filter({ hasText: "exit 0" }).waitFor();
    // The restarted host does not have the session of before: no ghost that takes input. (The
    // `agent-host run` of it shares it again with the restarted host, as a new session, which
    // may come as soon as it is back.)
    const session = page.locator("article.session", { hasText: "bash --norc" }).filter({ hasText: "ended" }).first();
    await session.getByText("ended").waitFor();
    assert.equal(await session.getByLabel("Type into the session").isVisible(), false);
  });

  test("a reload keeps the key and the pairing", async () => {
    const before = await page.locator("#about-fingerprint").innerText();
    await page.reload();
    await page.locator("[data-field=host]", { hasText: "online" }).waitFor();
    assert.equal(await page.locator("#about-fingerprint").innerText(), before);
    // And the host still takes its requests (counters carried over the reload).
    await page.getByLabel("Run a command").fill("printf after-reload");
    await page.getByRole("button", { name: "Request run" }).click();
    await page.locator("ol.feed li", { hasText: "after-reload" }).filter({ hasText: "exit 0" }).waitFor();
    // Activity was kept: what happened before the reload, with its output.
    await page.locator("ol.feed li", { hasText: "printf after-the-restart: exit 0" }).waitFor();
    const listing = page.locator("ol.feed li", { hasText: "ls -la: exit 0" });
    assert.ok((await termLines(listing.locator(".term"))).some((l) => l.endsWith(" notes.txt")));
  });

  test("a revoked browser is refused and says so", async () => {
    const revoked = await world.agentHost(["devices", "revoke", browserId]);
    assert.equal(revoked.code, 0, revoked.stderr);
    // Told at once, while the page is open.
    await page.getByRole("alert").filter({ hasText: "The host revoked this browser" }).waitFor();
    // And after a reload, by the relay, which no longer carries its messages.
    await page.reload();
    await page.getByRole("alert").filter({ hasText: "revoked this browser" }).waitFor();
    await page.getByLabel("Run a command").fill("printf should-not-run");
    await page.getByRole("button", { name: "Request run" }).click();
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await page.locator("ol.feed li", { hasText: "should-not-run" }).filter({ hasText: "exit" }).count(), 0);
    // Forgetting it leaves an unpaired browser.
    await page.getByRole("button", { name: "Forget this host" }).click();
    await page.getByRole("heading", { name: "This browser is not paired" }).waitFor();
  });
});

describe("the web UI in Chromium, with a separate relay", { skip }, () => {
  let world;
  let browser;
  let context;
  let page;
  let link;

  before(async () => {
    world = await startHost({ allow: ["Bash(printf *)"] }, { separateRelay: true });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    context = await browser.newContext({ ignoreHTTPSErrors: true });
    page = await context.newPage();
  });

  after(async () => {
    await browser?.close();
    world?.stop();
  });

  test("the relay serves the page, and pairing through it works", async () => {
    ({ link } = await world.offer(["--yes", "--role", "operator"]));
    await page.goto(link);
    await page.getByRole("button", { name: "Pair this browser" }).click();
    await page.locator("[data-field=host]", { hasText: "online" }).waitFor();
  });

  test("a used pairing link says so in another browser", async () => {
    const other = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
    await other.goto(link);
    await other.getByRole("button", { name: "Pair this browser" }).click();
    await other.getByRole("alert").filter({ hasText: "Not paired: the relay refused" }).waitFor();
    assert.match(await other.locator("main").innerText(), /the link was used, or it expired/);
  });

  test("an expired pairing link says so before anything is sent", async () => {
    const { link } = await world.offer(["--expires", "1s"]);
    await new Promise((r) => setTimeout(r, 1500));
    const other = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
    await other.goto(link);
    await other.getByRole("heading", { name: "This pairing link expired" }).waitFor();
    assert.equal(await other.getByRole("button", { name: "Pair this browser" }).count(), 0);
  });

  test("an offline host is shown, and a request made meanwhile goes when it is back", async () => {
    // Killed: the relay tells the page (a hint it shows), within seconds.
    await world.stopHost("SIGKILL");
    await page.locator("[data-field=host]", { hasText: "offline" }).waitFor({ timeout: 5000 });
    await page.getByRole("alert").filter({ hasText: "Your host is offline" }).waitFor();
    await page.getByLabel("Run a command").fill("printf made-while-away");
    await page.getByRole("button", { name: "Request run" }).click();
    const item = page.locator("ol.feed li", { hasText: "made-while-away" });
    await item.getByText("queued: the host is offline").waitFor();
    // The banner stays in view when the page scrolls.
    await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
    const banner = await page.locator("#banner").boundingBox();
    assert.ok(banner && banner.y >= 0 && banner.y < 5, `the banner is at ${JSON.stringify(banner)}`);
    await world.startHost();
    await page.locator("[data-field=host]", { hasText: "online" }).waitFor({ timeout: 5000 });
    await item.filter({ hasText: "exit 0" }).waitFor();
    await page.locator("#banner").waitFor({ state: "hidden" });
  });
});

describe("the web UI in Chromium, from an origin apart from the relay's", { skip }, () => {
  let world;
  let browser;

  before(async () => {
    world = await startHost({ allow: ["Bash(printf *)"] }, { pageElsewhere: true });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  });

  after(async () => {
    await browser?.close();
    world?.stop();
  });

  test("the relay serves no page; the link names the page and the relay apart; both transports work across origins", async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const atRelay = await page.goto(`https://${world.relay}/`);
    assert.equal(atRelay.status(), 404, "the relay served a page");
    const { link } = await world.offer(["--yes", "--role", "operator"]);
    assert.ok(link.startsWith(`https://${world.page}/pair#`), link);
    assert.ok(link.includes(`&relay=${world.relay}`), link);
    const sockets = [];
    page.on("websocket", (ws) => sockets.push(ws.url()));
    await page.goto(link);
    // The page names the relay, which is not its own.
    assert.equal(await page.locator("#link-relay").innerText(), world.relay);
    await page.getByRole("button", { name: "Pair this browser" }).click();
    await page.locator("[data-field=host]", { hasText: "online" }).waitFor();
    assert.ok(sockets.length > 0 && sockets.every((url) => url === `wss://${world.relay}/ws`), sockets.join(" "));
    await page.getByLabel("Run a command").fill("printf across-origins");
    await page.getByRole("button", { name: "Request run" }).click();
    await page.locator("ol.feed li", { hasText: "across-origins" }).filter({ hasText: "exit 0" }).waitFor();
    // The event-stream fallback reaches the relay across origins too.
    await page.goto(`https://${world.page}/?transport=event-stream`);
    await page.locator("#link-state[data-transport=event-stream]").waitFor();
    await page.locator("[data-field=host]", { hasText: "online" }).waitFor();
    await page.getByLabel("Run a command").fill("printf over-the-stream-across-origins");
    await page.getByRole("button", { name: "Request run" }).click();
    await page.locator("ol.feed li", { hasText: "over-the-stream-across-origins" }).filter({ hasText: "exit 0" }).waitFor();
  });
});

describe("the web UI in Chromium, when the browser will not open a WebSocket", { skip }, () => {
  let world;
  let browser;

  before(async () => {
    world = await startHost({ allow: ["Bash(printf *)"] });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  });

  after(async () => {
    await browser?.close();
    world?.stop();
  });

  test("the page falls back to the relay's event stream: pairing, requests and approvals work", async () => {
    const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
    // As iOS Safari does with a self-signed relay: every WebSocket fails at once (until `allow`).
    let refused = 0;
    let allow = false;
    await page.routeWebSocket(/\/ws$/, (ws) => {
      if (allow) return ws.connectToServer();
      refused++;
      ws.close();
    });
    const { link } = await world.offer(["--yes", "--role", "operator"]);
    await page.goto(link);
    await page.getByRole("button", { name: "Pair this browser" }).click();
    await page.locator("[data-field=host]", { hasText: "online" }).waitFor();
    assert.ok(refused >= 2, `the WebSocket was tried first (${refused} attempts)`);
    await page.getByLabel("Run a command").fill("printf through-the-event-stream");
    await page.getByRole("button", { name: "Request run" }).click();
    await page.locator("ol.feed li", { hasText: "through-the-event-stream" }).filter({ hasText: "exit 0" }).waitFor();
    // An action asked at the host, approved from this page.
    const exec = world.agentHost(["exec", "--", "sh", "-c", "echo approved > over-sse.txt"]);
    const card = page.locator("article.pending", { hasText: "over-sse.txt" });
    await card.getByRole("button", { name: "Approve" }).click();
    await card.getByText("Approved by you.").waitFor();
    assert.equal((await exec).code, 0);
    assert.ok(existsSync(join(world.ws, "over-sse.txt")));
    // A reload goes straight back to the event stream's host screen.
    await page.reload();
    await page.locator("[data-field=host]", { hasText: "online" }).waitFor();
    await page.locator("#link-state[data-transport=event-stream]").waitFor();
    // After an outage the page returns to the WebSocket once it works, and carries on: a
    // request sent over it is answered once.
    allow = true;
    await world.stopHost();
    await world.startHost();
    await page.locator("#link-state[data-transport=websocket]").waitFor();
    await page.getByLabel("Run a command").fill("printf back-on-the-websocket");
    await page.getByRole("button", { name: "Request run" }).click();
    const result = page.locator("ol.feed li", { hasText: "back-on-the-websocket" });
    await result.filter({ hasText: "exit 0" }).waitFor();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await result.count(), 1);
  });
});
