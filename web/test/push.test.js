// Notifications end to end, with real parts: the real host (`agent-host up`) pushes to a push
// service run here on loopback (test-support/push-service.mjs: it checks the VAPID header and
// keeps the encrypted body); the test opens the body as the browser would and delivers it into
// Chromium's service worker through DevTools (`ServiceWorker.deliverPushMessage`) with the page
// closed; the worker shows the notification, and its Approve (invoked in the worker, as a tap
// would) signs a decision that goes to the host over the relay's event stream.
//
// One browser part is stood in for: Chromium here has no push service to subscribe with (it
// would be the vendor's, on the internet), so the page's `PushManager.subscribe` is given a
// subscription made by the test's push service, as the vendor's would make one.
//
// Set UPDATE_DOCS=1 to write a screenshot of the notification (drawn on a page from the text
// the worker showed) to docs/.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { root } from "../test-support/host.mjs";
import { startHost } from "../test-support/host.mjs";
import { decryptPush, startPushService } from "../test-support/push-service.mjs";
import { createServer } from "node:http";
import { CHROMIUM, chromium, skipBrowser } from "../test-support/browser.mjs";

const { spawnSync } = await import("node:child_process");
const skip =
  skipBrowser ||
  (spawnSync("openssl", ["version"]).status !== 0 && "no openssl to make the push service's certificate");

/** Replaces `PushManager`'s subscribe with one that gives the test push service's subscription. */
function stubPushManager(sub) {
  if (!globalThis.PushManager) return;
  let current = null;
  PushManager.prototype.subscribe = async function (options) {
    const key = new Uint8Array(options.applicationServerKey).slice().buffer;
    current = {
      endpoint: sub.endpoint,
      options: { applicationServerKey: key, userVisibleOnly: options.userVisibleOnly },
      toJSON: () => ({ endpoint: sub.endpoint, expirationTime: null, keys: { p256dh: sub.p256dh, auth: sub.auth } }),
      unsubscribe: async () => ((current = null), true),
    };
    return current;
  };
  PushManager.prototype.getSubscription = async () => current;
}

const wait = (ms) => new Promise((r) => setTimeout(r, ms));

/** What `check` gives once it is truthy (and, for a list, not empty), within `ms`. */
async function until(what, check, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await check();
    if (Array.isArray(got) ? got.length > 0 : got) return got;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await wait(100);
  }
}

describe("notifications pushed to a browser whose page is closed", { skip }, () => {
  let world;
  let push;
  let browser;
  let context;
  let sub;
  let browserId;
  let cdp;
  let registration;
  let ntfy;
  const ntfyPosts = [];

  before(async () => {
    push = await startPushService();
    // An ntfy-style topic on loopback, for the content-free "needs you".
    ntfy = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        ntfyPosts.push({ method: req.method, url: req.url, body });
        res.end("{}");
      });
    });
    await new Promise((r) => ntfy.listen(0, "127.0.0.1", r));
    const topic = `http://127.0.0.1:${ntfy.address().port}/needs-you`;
    const hostArgs = ["--push-ca", push.certFile, "--push-allow", push.origin, "--push-ack-wait", "2s", "--ntfy", topic];
    world = await startHost({ allow: ["Bash(printf *)"] }, { hostArgs });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--ignore-certificate-errors"] });
    context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 390, height: 844 }, permissions: ["notifications"] });
    sub = await push.subscribe();
    await context.addInitScript(stubPushManager, { endpoint: sub.endpoint, p256dh: sub.p256dh, auth: sub.auth });
    const offer = await world.offer(["--yes", "--role", "operator"]);
    const cli = world.remote("cli", ["pair", offer.link, "--name", "cli"]);
    assert.equal((await cli.done).code, 0);
  });

  after(async () => {
    await browser?.close();
    world?.stop();
    push?.close();
    ntfy?.close();
  });

  /** The worker's notifications: `{ title, body, actions, data }`. */
  async function notifications() {
    const [sw] = context.serviceWorkers();
    if (!sw) return [];
    return sw.evaluate(async () => (await self.registration.getNotifications()).map((n) => ({ title: n.title, body: n.body, actions: n.actions.map((a) => a.action), data: n.data })));
  }

  /** Runs `onClick` in the worker for its notification titled `title`, as a tap on `action`. */
  async function tap(title, action) {
    const sw = await until("a service worker", () => context.serviceWorkers()[0]);
    return sw.evaluate(
      async ([title, action]) => {
        const n = (await self.registration.getNotifications()).find((n) => n.title === title);
        if (!n) return { outcome: "no such notification" };
        return self.agentBridge.onClick(n, action);
      },
      [title, action],
    );
  }

  /** The next push to the browser's subscription after the first `after`, opened as the browser would. */
  async function nextPush(after) {
    const got = await push.next(sub.endpoint, after);
    return new TextDecoder().decode(await decryptPush(got.body, sub.keys));
  }

  async function deliver(data) {
    await cdp.send("ServiceWorker.deliverPushMessage", { origin: registration.origin, registrationId: registration.id, data });
  }

  async function delivery(request) {
    const r = await world.agentHost(["approvals", "--delivery", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout).actions.find((a) => a.request === request);
  }

  async function pendingId(summary) {
    return until(`"${summary}" pending`, async () => {
      const r = await world.agentHost(["approvals", "--json"]);
      return JSON.parse(r.stdout).find((p) => p.summary.includes(summary))?.id;
    });
  }

  test("a browser subscribes from the page; the host pushes, the closed page's worker shows it and approves from it", async () => {
    const page = await context.newPage();
    const offer = await world.offer(["--role", "approver"]);
    await page.goto(offer.link);
    await page.getByLabel("Name for this browser").fill("Phone");
    await page.getByRole("button", { name: "Pair this browser" }).click();
    browserId = (await offer.line(/^pair "Phone", fingerprint /)).match(/\((dev1\w+)\)/)[1];
    offer.child.stdin.write("y\n");
    await page.locator("[data-field=host]", { hasText: "online" }).waitFor();
    await page.getByRole("button", { name: "Turn on notifications" }).click();
    await page.locator("#notify-state", { hasText: "On:" }).waitFor();
    // The worker's registration, for DevTools.
    const origin = new URL(page.url()).origin;
    const blank = await context.newPage();
    cdp = await context.newCDPSession(blank);
    const registrations = [];
    cdp.on("ServiceWorker.workerRegistrationUpdated", (e) => registrations.push(...e.registrations));
    await cdp.send("ServiceWorker.enable");
    // The page registers the worker once for each host, at a scope naming it.
    const reg = await until("the worker's registration", () => registrations.find((r) => r.scopeURL.startsWith(`${origin}/hosts/`) && !r.isDeleted));
    registration = { origin, id: reg.registrationId };
    // The page closes: only the worker is left.
    await page.close();

    const asked = Date.now();
    const run = world.remote("cli", ["run", "--", "touch", "pushed-and-approved"]);
    const id = await pendingId("pushed-and-approved");
    const text = await nextPush(0);
    const pushedIn = Date.now() - asked;
    // What the push service carried is ciphertext: neither the notice nor its JSON is in it.
    const carried = Buffer.from(push.pushes[0].body);
    const frame = Buffer.from(text, "base64url");
    assert.ok(!carried.includes(Buffer.from(text)) && !carried.includes(frame.subarray(94, 200)));
    assert.match(frame.subarray(94).toString("utf8"), /"type":"notice"/);
    await deliver(text);
    const [n] = await until("the notification", async () => (await notifications()).filter((n) => /needs you/.test(n.title)));
    assert.equal(n.title, "1 action needs you on workstation");
    assert.match(n.body, /^run `touch pushed-and-approved` .*\nasked by cli; \d:\d\d left$/);
    assert.deepEqual(n.actions, ["approve", "deny"]);
    assert.equal(n.data.request, id);
    // The same push delivered again (a push service may) is not news: dropped.
    const sw0 = context.serviceWorkers()[0];
    assert.match((await sw0.evaluate((t) => self.agentBridge.onPush(t), text)).dropped, /seen before/);
    // The worker said it was shown.
    await until("shown", async () => (await delivery(id))?.devices[browserId] === "shown");

    const answered = await tap(n.title, "approve");
    assert.equal(answered.outcome, "answered", JSON.stringify(answered));
    assert.match(answered.text, /^Approved: run `touch pushed-and-approved`/);
    const done = await run.done;
    assert.equal(done.code, 0, done.stderr);
    assert.ok(existsSync(join(world.ws, "pushed-and-approved")));
    const after = await until("applied", async () => {
      const t = await delivery(id);
      return t?.applied && t;
    });
    assert.equal(after.verdict, "approve");
    assert.equal(after.devices[browserId], "applied");
    // The notification now says what came of it, without buttons.
    const [outcome] = await notifications();
    assert.match(outcome.title, /^Approved: /);
    assert.deepEqual(outcome.actions, []);
    // A second tap (on the notification as it was) does nothing, and the host ran it once.
    const sw = context.serviceWorkers()[0];
    const again = await sw.evaluate((data) => self.agentBridge.onClick({ data, tag: "t", close() {} }, "approve"), n.data);
    assert.equal(again.outcome, "already answered here");
    const log = readFileSync(join(world.home, "state", "audit.jsonl"), "utf8");
    assert.equal(log.split("\n").filter((l) => l.includes('"type":"start"') && l.includes(id)).length, 1);
    console.log(`# pushed ${pushedIn} ms after it was asked`);
    // The ntfy topic heard that something needs you, and nothing about what.
    const posted = await until("the ntfy post", () => ntfyPosts.find((p) => p.url === "/needs-you"));
    assert.equal(posted.method, "POST");
    assert.equal(posted.body, "An action needs you (agent-bridge)");

    if (process.env.UPDATE_DOCS) {
      const shot = await browser.newPage({ viewport: { width: 390, height: 200 }, deviceScaleFactor: 2 });
      await shot.setContent(`<body style="margin:0;background:#1c1c1e;font:15px system-ui;color:#fff"><div style="margin:16px;padding:14px 16px;border-radius:16px;background:#3a3a3c"><div style="opacity:.7;font-size:12px">agent-bridge · now</div><b style="display:block;margin:4px 0">${n.title}</b><div style="white-space:pre-line">${n.body.replaceAll("<", "&lt;")}</div><div style="display:flex;gap:8px;margin-top:10px"><span style="flex:1;text-align:center;padding:8px;border-radius:10px;background:#48484a">Approve</span><span style="flex:1;text-align:center;padding:8px;border-radius:10px;background:#48484a">Deny</span></div></div></body>`);
      await shot.screenshot({ path: join(root, "docs/notification.png") });
      await shot.close();
    }
  });

  test("a tampered push is dropped, and a push nobody acknowledged is pushed again", async () => {
    const before = push.pushes.filter((x) => x.endpoint === sub.endpoint).length;
    const run = world.remote("cli", ["run", "--", "touch", "tampered"]);
    const id = await pendingId("tampered");
    const text = await nextPush(before);
    const at = Math.floor(text.length / 2);
    await deliver(text.slice(0, at) + (text[at] === "A" ? "B" : "A") + text.slice(at + 1));
    await wait(1500);
    assert.deepEqual((await notifications()).filter((n) => /needs you/.test(n.title)), [], "a tampered push shows nothing");
    // Not acknowledged within the set time: pushed again, and said at the host's terminal.
    const again = await nextPush(before + 1);
    await until("the report", () => readFileSync(join(world.base, "host.log"), "utf8").includes(`device ${browserId} did not acknowledge its notification`));
    await deliver(again);
    const [n] = await until("the notification", async () => (await notifications()).filter((n) => n.data?.request === id));
    assert.equal((await tap(n.title, "deny")).outcome, "answered");
    assert.notEqual((await run.done).code, 0);
    assert.ok(!existsSync(join(world.ws, "tampered")));
  });

  test("a viewer's notification has no buttons; a push the push service refuses is said and tried again", async () => {
    assert.equal((await world.agentHost(["devices", "set-role", browserId, "viewer"])).code, 0);
    push.answer(503);
    const before = push.pushes.filter((x) => x.endpoint === sub.endpoint).length;
    const run = world.remote("cli", ["run", "--", "touch", "viewed"]);
    const id = await pendingId("viewed");
    await until("the refusal reported", () => /a push to device dev1\w+ failed \(the push service answered HTTP 503/.test(readFileSync(join(world.base, "host.log"), "utf8")));
    push.answer(201);
    const text = await nextPush(before);
    await deliver(text);
    const [n] = await until("the notification", async () => (await notifications()).filter((n) => /needs you/.test(n.title)));
    assert.equal(n.title, "1 action needs you on workstation");
    assert.match(n.body, /touch viewed/);
    assert.deepEqual(n.actions, []);
    assert.equal(n.data.request, null);
    assert.equal((await world.agentHost(["deny", id])).code, 0);
    await run.done;
  });
});
