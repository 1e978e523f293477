// What a push from the host says and who may make one (web/src/notify.js), and the test push
// service's own cryptography against RFC 8291's worked example.

import { test } from "node:test";
import assert from "node:assert/strict";

import * as p from "../src/protocol.js";
import { fromB64url, b64url, noticeText, openNotice } from "../src/notify.js";
import { decryptPush, vapidProblem } from "../test-support/push-service.mjs";

const subtle = globalThis.crypto.subtle;
const NOW = 1767225600000;

async function keys() {
  const host = await subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const device = await subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const raw = async (k) => new Uint8Array(await subtle.exportKey("raw", k.publicKey));
  return { host, record: { hostKey: await raw(host), publicKey: await raw(device) } };
}

const notice = (over = {}) => ({
  type: "notice",
  host_name: "workstation",
  waiting: 1,
  actions: [{ request: "01".repeat(16), action_hash: "ab".repeat(32), summary: "run `cargo test` in ~/proj", requested_by: "hook claude-code", expires_at_ms: NOW + 125000 }],
  can_decide: true,
  ...over,
});

async function sealed(host, record, message, { kind = "event", lifetime = 600000 } = {}) {
  const header = { kind, sender: record.hostKey, recipient: record.publicKey, counter: 7, issuedAtMs: NOW, expiresAtMs: NOW + lifetime };
  return b64url(await p.seal(host.privateKey, header, message));
}

test("a notice opens only as the host sealed it, to this device", async () => {
  const { host, record } = await keys();
  const text = await sealed(host, record, notice());
  assert.deepEqual(await openNotice(text, record, NOW), { notice: notice(), counter: 7 });
  // One character changed anywhere: dropped.
  for (const at of [3, 40, text.length - 5]) {
    const c = text[at] === "A" ? "B" : "A";
    await assert.rejects(openNotice(text.slice(0, at) + c + text.slice(at + 1), record, NOW), `changed at ${at}`);
  }
  // Another key's, another event, another device's, an old one: dropped.
  const other = await keys();
  await assert.rejects(openNotice(await sealed(other.host, record, notice()), record, NOW));
  await assert.rejects(openNotice(await sealed(host, record, { type: "status" }), record, NOW), /not a notice/);
  await assert.rejects(openNotice(await sealed(host, record, notice(), { kind: "request" }), record, NOW), /not a notice/);
  await assert.rejects(openNotice(text, { ...record, publicKey: other.record.publicKey }, NOW), /another recipient/);
  await assert.rejects(openNotice(text, record, NOW + 3600000), /expired/);
  await assert.rejects(openNotice("not base64url!", record, NOW), /base64url/);
});

test("a notification names the action, who asked and the time left; buttons for one action an approver may answer", () => {
  const one = noticeText(notice(), "aa", NOW);
  assert.equal(one.title, "1 action needs you on workstation");
  assert.equal(one.body, "run `cargo test` in ~/proj\nasked by hook claude-code; 2:05 left");
  assert.deepEqual(one.buttons.map((b) => b.action), ["approve", "deny"]);
  assert.equal(one.tag, "agent-bridge:aa");
  assert.deepEqual([one.data.request, one.data.action_hash], ["01".repeat(16), "ab".repeat(32)]);
  // A viewer's: no buttons.
  const viewer = noticeText(notice({ can_decide: false }), "aa", NOW);
  assert.deepEqual([viewer.buttons, viewer.data.request], [[], null]);
  assert.equal(viewer.body, one.body);
  // Several collapse into one that counts them, and names the newest; no buttons.
  const three = noticeText(notice({ waiting: 3 }), "aa", NOW);
  assert.equal(three.title, "3 actions need you on workstation");
  assert.match(three.body, /\nand 2 more$/);
  assert.deepEqual(three.buttons, []);
  // Detail hidden (the host sends none): the count alone.
  const hidden = noticeText(notice({ waiting: 2, actions: [] }), "aa", NOW);
  assert.deepEqual([hidden.title, hidden.body, hidden.buttons], ["2 actions need you on workstation", "", []]);
});

test("base64url as push subscriptions and notices spell it", () => {
  const bytes = Uint8Array.from({ length: 67 }, (_, i) => (i * 37) & 255);
  assert.deepEqual(fromB64url(b64url(bytes)), bytes);
  assert.equal(b64url(new Uint8Array([0xfb, 0xff])), "-_8");
  assert.throws(() => fromB64url("a+b/"), /base64url/);
});

// RFC 8291, appendix A: the test push service opens the example as a browser would.
test("the test push service opens RFC 8291's example", async () => {
  const ua = {
    kty: "EC",
    crv: "P-256",
    d: "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94",
    x: "JXGyvs3942BVGq8e0PTNNmwRzr5VX4m8t7GGpTM5FzE",
    y: "aOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
  };
  const privateKey = await subtle.importKey("jwk", ua, { name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"]);
  const publicKey = fromB64url("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4");
  const body = fromB64url(
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
  );
  const plain = await decryptPush(body, { privateKey, publicKey, auth: fromB64url("BTBZMqHH6r4Tts7J_aSIgg") });
  assert.equal(new TextDecoder().decode(plain), "When I grow up, I want to be a watermelon");
});

test("the test push service checks a VAPID token as RFC 8292 says", async () => {
  const pair = await subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const k = b64url(new Uint8Array(await subtle.exportKey("raw", pair.publicKey)));
  const now = 1767225600;
  const token = async (claims) => {
    const head = b64url(new TextEncoder().encode(JSON.stringify({ typ: "JWT", alg: "ES256" })));
    const body = b64url(new TextEncoder().encode(JSON.stringify(claims)));
    const sig = new Uint8Array(await subtle.sign({ name: "ECDSA", hash: "SHA-256" }, pair.privateKey, new TextEncoder().encode(`${head}.${body}`)));
    return `vapid t=${head}.${body}.${b64url(sig)}, k=${k}`;
  };
  const good = { aud: "https://push.example", exp: now + 3600, sub: "mailto:a@example.org" };
  assert.equal(await vapidProblem(await token(good), "https://push.example", now), null);
  assert.match(await vapidProblem(await token(good), "https://other.example", now), /aud/);
  assert.match(await vapidProblem(await token({ ...good, exp: now + 25 * 3600 }), "https://push.example", now), /exp/);
  assert.match(await vapidProblem(await token({ ...good, sub: "a@example.org" }), "https://push.example", now), /sub/);
  const forged = (await token(good)).replace(/\.([A-Za-z0-9_-])/, (m, c) => `.${c === "A" ? "B" : "A"}`);
  assert.notEqual(await vapidProblem(forged, "https://push.example", now), null);
});
