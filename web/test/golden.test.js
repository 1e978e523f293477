// The browser's protocol code against the Rust crate's committed golden files: the same bytes.
// Run with `node --test web/test/` (the project's test command does).

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { webcrypto } from "node:crypto";

import * as p from "../src/protocol.js";

const golden = fileURLToPath(new URL("../../protocol/golden/", import.meta.url));
const read = (name) => readFileSync(golden + name);
const json = (name) => JSON.parse(read(name).toString("utf8"));
const b64url = (bytes) => Buffer.from(bytes).toString("base64url");

test("every message's JSON is written byte for byte as serde_json writes it", () => {
  const files = readdirSync(golden + "messages");
  assert.ok(files.length >= 25, `${files.length} message files`);
  for (const file of files) {
    const bytes = read(`messages/${file}`);
    const again = p.payloadOf(JSON.parse(bytes.toString("utf8")));
    assert.equal(Buffer.from(again).toString("hex"), bytes.toString("hex"), file);
  }
});

test("action canonical bytes and hashes", async () => {
  const { actions } = json("action-hashes.json");
  assert.ok(actions.length >= 8);
  for (const { name, action, canonical, sha256 } of actions) {
    assert.equal(p.toHex(await p.actionCanonical(action)), canonical, name);
    assert.equal(await p.actionHash(action), sha256, name);
  }
});

test("envelopes: sealed to the same bytes, and verified", async () => {
  const { envelopes } = json("envelopes.json");
  assert.ok(envelopes.length >= 25);
  for (const e of envelopes) {
    const sender = p.fromHex(e.sender_public_key, 32);
    const recipient = p.fromHex(e.recipient_public_key, 32);
    const key = await webcrypto.subtle.importKey(
      "jwk",
      { kty: "OKP", crv: "Ed25519", d: b64url(p.fromHex(e.sender_seed, 32)), x: b64url(sender) },
      "Ed25519",
      false,
      ["sign"],
    );
    const message = JSON.parse(read(e.payload_file).toString("utf8"));
    const header = {
      kind: e.kind,
      sender,
      recipient,
      counter: e.counter,
      issuedAtMs: e.issued_at_ms,
      expiresAtMs: e.expires_at_ms,
    };
    const frame = await p.seal(key, header, message);
    assert.equal(p.toHex(frame), e.frame, e.name);
    const opened = await p.open(frame, sender, recipient, e.issued_at_ms);
    assert.deepEqual(opened.message, message, e.name);
    // One flipped bit anywhere is refused.
    const bad = frame.slice();
    bad[bad.length - 70] ^= 1;
    await assert.rejects(p.open(bad, sender, recipient, e.issued_at_ms), /signature/, e.name);
    await assert.rejects(p.open(frame, recipient, recipient, e.issued_at_ms), /expected sender/);
  }
});

test("ids, fingerprints, the pairing token and proof", async () => {
  const ids = json("ids.json");
  for (const [prefix, who] of [["host", ids.host], ["dev", ids.device]]) {
    const key = p.fromHex(who.public_key, 32);
    assert.equal(p.keyId(prefix, key), who.id);
    assert.deepEqual(p.keyOfId(prefix, who.id), key);
    assert.equal(await p.fingerprint(key), who.fingerprint);
  }
  assert.throws(() => p.keyOfId("host", ids.device.id), /host1/);
  const typo = ids.host.id.slice(0, -1) + (ids.host.id.endsWith("q") ? "p" : "q");
  assert.throws(() => p.keyOfId("host", typo), /checksum/);
  const secret = p.fromHex(ids.pairing.secret, 32);
  assert.equal(await p.pairingToken(secret), ids.pairing.token);
  const hello = json(ids.pairing.proof_file);
  const proof = await p.pairingProof(
    secret,
    p.fromHex(ids.host.public_key, 32),
    p.fromHex(ids.device.public_key, 32),
    ids.pairing.name,
  );
  assert.equal(proof, hello.proof);
});

test("pairing links", () => {
  const ids = json("ids.json");
  const link = `https://192.168.1.5:7443/pair#v=1&host=${ids.host.id}&secret=${"07".repeat(32)}&expires=1800000000000&cert=${"09".repeat(32)}`;
  const parsed = p.parseLink(link);
  assert.equal(parsed.relay, "192.168.1.5:7443");
  assert.equal(p.toHex(parsed.hostKey), ids.host.public_key);
  assert.equal(parsed.expiresAtMs, 1800000000000);
  assert.throws(() => p.parseLink(link.replace("v=1", "v=2")), /version/);
  assert.throws(() => p.parseLink(`${link}&x=1`), /not valid/);
  assert.throws(() => p.parseLink(link.replace("https://", "http://")), /not a pairing link/);
  // A cluster's nodes: the one that served the page when it is one of them, else the first.
  const nodes = `${link}&relay=a.example:443,192.168.1.5:7443`;
  assert.equal(p.parseLink(nodes).relay, "192.168.1.5:7443");
  assert.deepEqual(p.parseLink(nodes).relays, ["a.example:443", "192.168.1.5:7443"]);
  assert.equal(p.parseLink(`${link}&relay=a.example:443,b.example:443`).relay, "a.example:443");
  assert.throws(() => p.parseLink(`${link}&relay=a:1,,b:2`), /not valid/);
  assert.throws(() => p.parseLink(`${link}&relay=${Array(9).fill("n:1").join(",")}`), /not valid/);
});

test("base64 has one spelling", () => {
  assert.equal(p.toBase64(new TextEncoder().encode("hi\n")), "aGkK");
  assert.throws(() => p.fromBase64("aGk"));
  assert.throws(() => p.fromBase64("aGl="));
});

test("the relay challenge answer, bound to a certificate or an origin", async () => {
  const g = json("relay-auth.json");
  const nonce = p.fromHex(g.nonce, 32);
  const cert = p.fromHex(g.certificate_sha256, 32);
  assert.equal(p.toHex(p.authMessage(nonce, "device", cert)), g.device_bound_to_certificate);
  assert.equal(p.toHex(p.authMessage(nonce, "host", cert)), g.host_bound_to_certificate);
  const binding = await p.originBinding(g.origin);
  assert.equal(p.toHex(binding), g.origin_binding);
  assert.equal(p.toHex(p.authMessage(nonce, "device", binding)), g.device_bound_to_origin);
});

test("resume frames: written and read as protocol::resume does", () => {
  const { frames } = json("resume.json");
  assert.ok(frames.length >= 10, `${frames.length} resume cases`);
  for (const { name, payload, frame, error } of frames) {
    const bytes = p.fromHex(payload);
    const read = p.decodeResume(bytes);
    if (error) {
      assert.deepEqual(read, { error }, name);
      continue;
    }
    const expected = { kind: frame.kind, epoch: BigInt(frame.epoch), seq: BigInt(frame.seq) };
    if (frame.kind === "data") Object.assign(expected, { base: BigInt(frame.base) });
    const { message, ...rest } = read;
    assert.deepEqual(rest, expected, name);
    if (frame.kind === "data") assert.equal(p.toHex(message), frame.message, name);
    const again = p.encodeResume(frame.kind === "data" ? { ...expected, message: p.fromHex(frame.message) } : expected);
    assert.equal(p.toHex(again), payload, name);
  }
});

test("relay frames: the routing header", () => {
  const peer = new Uint8Array(32).fill(7);
  const frame = p.relayFrame(peer, Uint8Array.of(9, 9));
  assert.equal(frame.length, p.RELAY_HEADER + 2);
  const { kind, peer: back, payload } = p.splitRelayFrame(frame);
  assert.deepEqual([kind, p.toHex(back), p.toHex(payload)], [p.FRAME.to, p.toHex(peer), "0909"]);
  assert.equal(p.splitRelayFrame(frame.subarray(0, 32)), null);
});
