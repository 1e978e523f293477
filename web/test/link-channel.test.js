// The browser's relay link (`RelayLink` in web/src/device.js) and its end-to-end channel,
// against a relay and a host played by this test over a stand-in WebSocket: the host's side of
// the channel is channel.js's `respond` (the real host is Rust; the browser tests drive that).
// What is checked here is the link's own behaviour, which the real host makes hard to provoke:
// nothing but a hello before the channel is open, the empty confirmation first, a lost
// confirmation sent again when the host seals in the channel it replaced, an unanswered hello
// sent again, and a forged answer that starts a new handshake.

import { test } from "node:test";
import assert from "node:assert/strict";

import * as p from "../src/protocol.js";
import * as c from "../src/channel.js";
import { generateKeyPair } from "../src/noise.js";
import { RelayLink, newKeyPair, rawPublicKey } from "../src/device.js";

const tick = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await tick(10);
  }
}

/** A relay that welcomes whoever answers, and a host behind it that answers each hello. */
class World {
  constructor(hostKey, keys) {
    Object.assign(this, { hostKey, keys });
    this.sockets = [];
    this.frames = []; // every channel frame the device sent, decoded
    this.channels = new Map(); // id hex -> host-side Channel
    this.drop = () => false; // frames the relay drops
    this.answer = true; // whether the host answers hellos
    const world = this;
    globalThis.WebSocket = class {
      constructor() {
        world.sockets.push(this);
        this.open = true;
        setTimeout(() => this.onmessage?.({ data: JSON.stringify({ type: "challenge", nonce: p.toHex(new Uint8Array(32)) }) }), 0);
      }
      send(data) {
        if (!this.open) return;
        if (typeof data === "string") {
          if (JSON.parse(data).type === "hello") setTimeout(() => this.onmessage?.({ data: JSON.stringify({ type: "welcome" }) }), 0);
          return;
        }
        world.fromDevice(this, p.splitRelayFrame(new Uint8Array(data)).payload).catch((e) => (world.error = e));
      }
      close() {
        this.open = false;
        setTimeout(() => this.onclose?.(), 0);
      }
    };
  }

  async fromDevice(ws, payload) {
    const frame = c.decodeFrame(payload);
    this.frames.push(frame);
    if (this.drop(frame)) return;
    if (frame.kind === "hello" && this.answer) {
      const { channel, answer } = await c.respond({ ...this.keys, id: frame.id, hello: frame.message, maxPayload: 1 << 20 });
      this.channels.set(p.toHex(frame.id), { channel, confirmed: false, payloads: [] });
      this.deliver(ws, answer);
    } else if (frame.kind === "data") {
      const held = this.channels.get(p.toHex(frame.id));
      const payload = await held.channel.open(frame.nonce, frame.ciphertext);
      if (payload?.length === 0) held.confirmed = true;
      else if (payload) held.payloads.push(payload);
    }
  }

  deliver(ws, bytes) {
    setTimeout(() => ws.open && ws.onmessage?.({ data: p.relayFrame(this.hostKey, bytes).buffer }), 0);
  }

  /** Seals a resume payload in the channel `id` and sends it to the device. */
  async seal(id, payload) {
    for (const frame of await this.channels.get(p.toHex(id)).channel.seal(payload)) this.deliver(this.sockets.at(-1), frame);
  }

  hellos() {
    return this.frames.filter((f) => f.kind === "hello");
  }
}

async function setup() {
  const hostId = await rawPublicKey(await newKeyPair());
  const keyPair = await newKeyPair();
  const device = await rawPublicKey(keyPair);
  const [hostStatic, deviceStatic] = [await generateKeyPair(), await generateKeyPair()];
  const world = new World(hostId, { host: hostId, device, localStatic: hostStatic, remoteStatic: deviceStatic.publicKey });
  const got = [];
  const link = new RelayLink({
    url: "wss://relay.test/ws",
    keyPair,
    publicKey: device,
    binding: new Uint8Array(32),
    transport: "websocket",
    channel: { host: hostId, device, localStatic: deviceStatic, remoteStatic: hostStatic.publicKey },
    onMessage: (_from, bytes) => got.push(new TextDecoder().decode(bytes)),
  });
  return { world, link, got, hostId };
}

const resumeData = (seq, text) => p.encodeResume({ kind: "data", epoch: 7n, seq: BigInt(seq), base: 1n, message: new TextEncoder().encode(text) });

test("the link opens a channel, confirms it first, and sends and takes messages only in it", async () => {
  const { world, link, got, hostId } = await setup();
  link.send(hostId, new TextEncoder().encode("queued before the channel"));
  await until(() => world.channels.size === 1 && [...world.channels.values()][0].payloads.length === 1);
  const [{ confirmed, payloads }] = [...world.channels.values()];
  assert.ok(confirmed, "the empty confirmation came");
  const kinds = world.frames.map((f) => f.kind);
  assert.equal(kinds[0], "hello", "nothing before the hello");
  assert.equal(world.frames[1].nonce, 0n, "the confirmation is the first chunk");
  assert.match(new TextDecoder().decode(payloads[0]), /queued before the channel/);
  await world.seal(world.hellos()[0].id, resumeData(1, "from the host"));
  await until(() => got.length === 1);
  assert.equal(got[0], "from the host");
  link.close();
  assert.equal(world.error, undefined);
});

test("a lost confirmation is sent again when the host seals in the channel it replaced", async () => {
  const { world, link, got } = await setup();
  await until(() => [...world.channels.values()].some((h) => h.confirmed));
  const first = world.hellos()[0].id;
  // The connection drops; on the next, the confirmation of the new channel is lost once.
  let lost = 0;
  world.drop = (f) => f.kind === "data" && !c.sameId(f.id, first) && f.nonce === 0n && lost++ === 0;
  world.sockets.at(-1).close();
  await until(() => world.hellos().length === 2 && lost === 1);
  const second = world.hellos()[1].id;
  // The host, not knowing the new channel, seals in the old one: the device takes it, and
  // confirms the new one again (at most once a second: the host's resend a second later).
  await world.seal(first, resumeData(1, "in the old channel"));
  await until(() => got.includes("in the old channel"));
  assert.ok(!world.channels.get(p.toHex(second))?.confirmed);
  await tick(1100);
  await world.seal(first, resumeData(2, "again in the old channel"));
  await until(() => world.channels.get(p.toHex(second))?.confirmed);
  assert.deepEqual(got, ["in the old channel", "again in the old channel"]);
  link.close();
  assert.equal(world.error, undefined);
});

test("an unanswered hello is sent again, and a forged answer starts another", async () => {
  const { world, link } = await setup();
  world.answer = false;
  await until(() => world.hellos().length === 1);
  // A forged answer for the hello under way: refused, and a new hello goes out at once.
  const forged = Uint8Array.from([c.KIND_ANSWER, ...world.hellos()[0].id, ...new Uint8Array(48)]);
  world.deliver(world.sockets.at(-1), forged);
  await until(() => world.hellos().length === 2);
  // Unanswered, the hello goes again after three seconds.
  world.answer = true;
  await until(() => world.hellos().length === 3, 6000);
  await until(() => [...world.channels.values()].some((h) => h.confirmed));
  link.close();
  assert.equal(world.error, undefined);
});
