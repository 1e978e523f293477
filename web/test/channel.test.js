// The browser's end-to-end channel (`web/src/channel.js`) against the Rust crate's golden file
// (`protocol/golden/channel.json`): the same handshakes (paired and pairing) and the same frames,
// byte for byte, and each side opens the other's.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";

import * as c from "../src/channel.js";
import { importKeyPair } from "../src/noise.js";

const golden = JSON.parse(readFileSync(new URL("../../protocol/golden/channel.json", import.meta.url), "utf8"));
const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (b) => Buffer.from(b).toString("hex");
const payload = (len) => Uint8Array.from({ length: len }, (_, i) => i % 251);
const messageOf = (frame) => c.decodeFrame(frame).message;

async function open(channel, frame) {
  const f = c.decodeFrame(frame);
  assert.equal(f.kind, "data");
  assert.ok(c.sameId(f.id, channel.id));
  return channel.open(f.nonce, f.ciphertext);
}

async function sides(name, { hostMax = 1 << 20, random = false } = {}) {
  const ids = { host: hex(golden.host_identity), device: hex(golden.device_identity) };
  const common = { ...ids, id: hex(golden.channel_id) };
  const ephemeral = async (key) => (random ? null : await importKeyPair(hex(key)));
  const keys =
    name === "pairing"
      ? { device: { psk: await c.pairingPsk(hex(golden.pairing_secret)), token: hex(golden.pairing_token) } }
      : {
          device: { localStatic: await importKeyPair(hex(golden.device_static)), remoteStatic: hex(golden.host_static_public) },
          host: { localStatic: await importKeyPair(hex(golden.host_static)), remoteStatic: hex(golden.device_static_public) },
        };
  keys.host ??= keys.device;
  const device = await c.initiate({ ...common, ...keys.device, incarnation: BigInt(golden.incarnation), maxPayload: 1 << 20, ephemeral: await ephemeral(golden.device_ephemeral) });
  const host = await c.respond({ ...common, ...keys.host, hello: messageOf(device.hello), maxPayload: hostMax, ephemeral: await ephemeral(golden.host_ephemeral) });
  return { device, host };
}

test("chunks are padded as the Rust crate pads them", () => {
  assert.ok(golden.padded.length > 10);
  for (const [len, padded] of golden.padded) assert.equal(c.sizeClass(len), padded, `${len}`);
  for (let len = 1; len <= c.MAX_PADDED; len += 7) {
    const padded = c.sizeClass(len);
    assert.ok(padded >= len && padded <= c.MAX_PADDED && c.sizeClass(padded) === padded, `${len}`);
  }
});

test("the pairing channel's key is the Rust crate's", async () => {
  assert.equal(toHex(await c.pairingPsk(hex(golden.pairing_secret))), golden.pairing_psk);
});

for (const name of ["paired", "pairing"]) {
  test(`the ${name} handshake and every frame are the Rust crate's, and open on the other side`, async () => {
    assert.equal(golden.protocol, c.PROTOCOL);
    assert.equal(golden.pairing_protocol, c.PAIRING_PROTOCOL);
    const expected = golden.cases.find((k) => k.name === name);
    const { device, host } = await sides(name);
    assert.equal(toHex(device.hello), expected.hello);
    assert.equal(toHex(host.answer), expected.answer);
    assert.equal(host.incarnation, BigInt(golden.incarnation));
    const deviceChannel = await device.finish(messageOf(host.answer));
    assert.equal(toHex(deviceChannel.handshakeHash), expected.handshake_hash);
    assert.equal(toHex(host.channel.handshakeHash), expected.handshake_hash);
    if (name === "paired") assert.ok(expected.payloads.some((m) => m.frames.length > 1), "a payload of several chunks");
    for (const m of expected.payloads) {
      const [from, to] = m.from === "device" ? [deviceChannel, host.channel] : [host.channel, deviceChannel];
      const frames = await from.seal(payload(m.len));
      assert.equal(frames.length, m.frames.length, `${m.from} ${m.len}`);
      let opened = null;
      for (const [i, frame] of frames.entries()) {
        const want = m.frames[i];
        if (want.hex) assert.equal(toHex(frame), want.hex, `${m.from} ${m.len} frame ${i}`);
        assert.equal(createHash("sha256").update(frame).digest("hex"), want.sha256, `${m.from} ${m.len} frame ${i}`);
        assert.equal(opened, null);
        opened = await open(to, frame);
      }
      assert.deepEqual(opened, payload(m.len));
    }
  });
}

test("a tampered or replayed frame is refused and changes nothing; a lost one loses its payload only", async () => {
  const { device, host } = await sides("paired", { random: true });
  const d = await device.finish(messageOf(host.answer));
  const [first] = await d.seal(new TextEncoder().encode("run cargo test"));
  const [second] = await d.seal(new TextEncoder().encode("and then this"));
  for (const at of [17, 30, first.length - 1]) {
    const tampered = first.slice();
    tampered[at] ^= 1;
    await assert.rejects(open(host.channel, tampered), c.NoiseError);
  }
  // A changed nonce decrypts under another nonce, which fails.
  const renonced = first.slice();
  renonced[16] ^= 1;
  await assert.rejects(open(host.channel, renonced), c.NoiseError);
  assert.equal(new TextDecoder().decode(await open(host.channel, first)), "run cargo test");
  await assert.rejects(open(host.channel, first), /came again/);
  // A big payload whose middle chunk is lost: it is dropped; the next one opens.
  const big = await d.seal(new Uint8Array(c.MAX_CHUNK_DATA * 2 + 5).fill(3));
  assert.equal(await open(host.channel, big[0]), null);
  assert.equal(await open(host.channel, big[2]), null);
  const [after] = await d.seal(new Uint8Array([9]));
  assert.deepEqual(await open(host.channel, after), new Uint8Array([9]));
  // Older than what was opened: refused.
  await assert.rejects(open(host.channel, second), /came again/);
});

test("a payload over the limit closes the channel: its tail is never taken for a payload", async () => {
  const { device, host } = await sides("paired", { hostMax: 100000, random: true });
  const sender = await device.finish(messageOf(host.answer));
  const frames = await sender.seal(new Uint8Array(200000));
  assert.equal(frames.length, 4);
  assert.equal(await open(host.channel, frames[0]), null);
  await assert.rejects(open(host.channel, frames[1]), /over 100000 bytes/);
  for (const frame of [...frames.slice(2), ...(await sender.seal(new Uint8Array(1)))]) {
    await assert.rejects(open(host.channel, frame), /closed/);
  }
});

test("a hello for other keys or without the link's secret is refused", async () => {
  const ids = { host: hex(golden.host_identity), device: hex(golden.device_identity), id: hex(golden.channel_id), incarnation: 1n, maxPayload: 1000 };
  const psk = await c.pairingPsk(hex(golden.pairing_secret));
  const token = hex(golden.pairing_token);
  const hello = await c.initiate({ ...ids, psk, token });
  const wrong = await c.pairingPsk(new Uint8Array(32));
  await assert.rejects(c.respond({ ...ids, psk: wrong, token, hello: messageOf(hello.hello) }), c.NoiseError);
  const stranger = await importKeyPair(crypto.getRandomValues(new Uint8Array(32)));
  const kk = await c.initiate({ ...ids, localStatic: stranger, remoteStatic: hex(golden.host_static_public) });
  const host = { localStatic: await importKeyPair(hex(golden.host_static)), remoteStatic: hex(golden.device_static_public) };
  await assert.rejects(c.respond({ ...ids, ...host, hello: messageOf(kk.hello) }), c.NoiseError);
  assert.throws(() => c.decodeFrame(Uint8Array.of(c.KIND_DATA, 1, 2)), c.NoiseError);
  assert.throws(() => c.decodeFrame(new Uint8Array(12)), c.NoiseError);
});
