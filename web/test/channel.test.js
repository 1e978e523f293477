// The browser's end-to-end channel (`web/src/channel.js`) against the Rust crate's golden file
// (`protocol/golden/channel.json`): the same handshake and the same frames, byte for byte, and
// each side opens the other's.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";

import * as c from "../src/channel.js";
import { importKeyPair } from "../src/noise.js";

const golden = JSON.parse(readFileSync(new URL("../../protocol/golden/channel.json", import.meta.url), "utf8"));
const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (b) => Buffer.from(b).toString("hex");
const message = (len) => Uint8Array.from({ length: len }, (_, i) => i % 251);

async function sides() {
  const common = { host: hex(golden.host_identity), device: hex(golden.device_identity), maxMessage: 1 << 20 };
  const device = await c.initiate({
    ...common,
    localStatic: await importKeyPair(hex(golden.device_static)),
    remoteStatic: hex(golden.host_static_public),
    ephemeral: await importKeyPair(hex(golden.device_ephemeral)),
  });
  const host = await c.respond({
    ...common,
    localStatic: await importKeyPair(hex(golden.host_static)),
    remoteStatic: hex(golden.device_static_public),
    ephemeral: await importKeyPair(hex(golden.host_ephemeral)),
    hello: device.hello,
  });
  return { device, host };
}

test("the handshake and every frame are the Rust crate's, and open on the other side", async () => {
  assert.equal(golden.protocol, c.PROTOCOL);
  const { device, host } = await sides();
  assert.equal(toHex(device.hello), golden.hello);
  assert.equal(toHex(host.answer), golden.answer);
  const deviceChannel = await device.finish(host.answer);
  assert.equal(toHex(deviceChannel.handshakeHash), golden.handshake_hash);
  assert.equal(toHex(host.channel.handshakeHash), golden.handshake_hash);
  assert.ok(golden.messages.some((m) => m.frames.length > 1), "a message of several chunks");
  for (const m of golden.messages) {
    const [from, to] = m.from === "device" ? [deviceChannel, host.channel] : [host.channel, deviceChannel];
    const frames = await from.seal(message(m.len));
    assert.equal(frames.length, m.frames.length, `${m.from} ${m.len}`);
    let opened = null;
    for (const [i, frame] of frames.entries()) {
      const expected = m.frames[i];
      if (expected.hex) assert.equal(toHex(frame), expected.hex, `${m.from} ${m.len} frame ${i}`);
      assert.equal(createHash("sha256").update(frame).digest("hex"), expected.sha256, `${m.from} ${m.len} frame ${i}`);
      assert.equal(opened, null);
      opened = await to.open(frame);
    }
    assert.deepEqual(opened, message(m.len));
  }
});

test("a tampered, replayed or out-of-order frame is refused", async () => {
  const { device, host } = await sides();
  const d = await device.finish(host.answer);
  const [first] = await d.seal(new TextEncoder().encode("run cargo test"));
  const [second] = await d.seal(new TextEncoder().encode("and then this"));
  const tampered = first.slice();
  tampered[tampered.length - 1] ^= 1;
  await assert.rejects(host.channel.open(tampered), c.NoiseError);
  // What was refused changed nothing: the frames as sent still open, in order.
  assert.equal(new TextDecoder().decode(await host.channel.open(first)), "run cargo test");
  assert.equal(new TextDecoder().decode(await host.channel.open(second)), "and then this");
  // Out of order: the second before the first.
  const again = await sides();
  const d2 = await again.device.finish(again.host.answer);
  await d2.seal(new Uint8Array(1));
  const [later] = await d2.seal(new Uint8Array(1));
  await assert.rejects(again.host.channel.open(later), c.NoiseError);
  // The first, once; then again.
  const fresh = await sides();
  const d3 = await fresh.device.finish(fresh.host.answer);
  const [one] = await d3.seal(new Uint8Array([7]));
  assert.deepEqual(await fresh.host.channel.open(one), new Uint8Array([7]));
  await assert.rejects(fresh.host.channel.open(one), c.NoiseError);
});

test("a message over the limit closes the channel: its tail is never taken for a message", async () => {
  const [h, d] = await Promise.all([0, 1].map(() => importKeyPair(crypto.getRandomValues(new Uint8Array(32)))));
  const ids = { host: hex(golden.host_identity), device: hex(golden.device_identity) };
  const device = await c.initiate({ ...ids, localStatic: d, remoteStatic: h.publicKey, maxMessage: 1 << 20 });
  const host = await c.respond({ ...ids, localStatic: h, remoteStatic: d.publicKey, maxMessage: 100000, hello: device.hello });
  const sender = await device.finish(host.answer);
  const frames = await sender.seal(new Uint8Array(200000));
  assert.equal(frames.length, 4);
  assert.equal(await host.channel.open(frames[0]), null);
  await assert.rejects(host.channel.open(frames[1]), /over 100000 bytes/);
  for (const frame of [...frames.slice(2), ...(await sender.seal(new Uint8Array(1)))]) {
    await assert.rejects(host.channel.open(frame), /closed/);
  }
});
