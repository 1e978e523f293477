// The browser's Noise implementation (`web/src/noise.js`, over WebCrypto) against cacophony's
// known-answer vectors for `25519_AESGCM_SHA256`, the file the Rust tests run through `snow`
// (`protocol/tests/vectors/noise/`). Chromium runs the same check (`browser.test.js`).

import { test } from "node:test";
import assert from "node:assert/strict";
import * as n from "../src/noise.js";
import { loadNoiseVectors, runNoiseVectors } from "../test-support/noise-vectors.mjs";

test("every fundamental pattern's vectors encrypt, decrypt and hash as expected", async () => {
  const vectors = loadNoiseVectors(n.pattern);
  // KK after pairing, NNpsk0 for pairing itself: both must be among them.
  for (const name of ["Noise_KK_25519_AESGCM_SHA256", "Noise_NNpsk0_25519_AESGCM_SHA256"]) {
    assert.ok(vectors.some((v) => v.protocol_name === name), name);
  }
  assert.ok(vectors.length >= 30, `${vectors.length} vectors`);
  const results = await runNoiseVectors({ modulePath: new URL("../src/noise.js", import.meta.url).href, vectors });
  assert.deepEqual(results.filter((r) => r.error), []);
  assert.equal(results.length, vectors.length);
});

test("a flipped byte anywhere in a handshake or transport message is refused", async () => {
  const [init, resp] = await Promise.all([true, false].map(async (initiator) => {
    const s = await n.generateKeyPair({ extractable: true });
    return { initiator, s };
  }));
  const make = (me, peer) => n.HandshakeState.create({ protocol: "Noise_KK_25519_AESGCM_SHA256", initiator: me.initiator, s: me.s, rs: peer.s.publicKey });
  const first = await (await make(init, resp)).writeMessage(new TextEncoder().encode("hello"));
  for (let at = 0; at < first.length; at++) {
    const tampered = first.slice();
    tampered[at] ^= 1;
    await assert.rejects((await make(resp, init)).readMessage(tampered), n.NoiseError, `byte ${at}`);
  }
  // A whole handshake, then a transport message tampered with.
  const i = await make(init, resp);
  const r = await make(resp, init);
  await r.readMessage(await i.writeMessage());
  await i.readMessage(await r.writeMessage());
  const sealed = await i.transport().send.encrypt(new TextEncoder().encode("run cargo test"));
  sealed[3] ^= 0x80;
  await assert.rejects(r.transport().receive.decrypt(sealed), n.NoiseError);
});

test("a responder that expected another static key cannot read the initiator", async () => {
  const [a, b, c] = await Promise.all([0, 1, 2].map(() => n.generateKeyPair()));
  const i = await n.HandshakeState.create({ protocol: "Noise_KK_25519_AESGCM_SHA256", initiator: true, s: a, rs: b.publicKey });
  const r = await n.HandshakeState.create({ protocol: "Noise_KK_25519_AESGCM_SHA256", initiator: false, s: b, rs: c.publicKey });
  await assert.rejects(r.readMessage(await i.writeMessage()), n.NoiseError);
});
