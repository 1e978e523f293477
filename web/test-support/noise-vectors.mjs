// Runs Noise known-answer vectors (cacophony's format) through `web/src/noise.js`, imported
// from `modulePath`. Self-contained, so that a browser test can hand it to the page as it is
// (playwright's `page.evaluate`) and Node can call it directly: the same check in both.
// Returns what it checked: per vector, its name and the number of messages, or the error.

import { readFileSync } from "node:fs";

/**
 * The committed vectors (`protocol/tests/vectors/noise/`) whose patterns `noise.js` runs: every
 * fundamental pattern, with and without psk modifiers (not the deferred ones), as `accepts`
 * (the module's `pattern`) says.
 */
export function loadNoiseVectors(accepts) {
  const file = new URL("../../protocol/tests/vectors/noise/cacophony_25519_aesgcm_sha256.json", import.meta.url);
  return JSON.parse(readFileSync(file, "utf8")).vectors.filter((v) => accepts(v.protocol_name.split("_")[1]));
}

export async function runNoiseVectors({ modulePath, vectors }) {
  const n = await import(modulePath);
  const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
  const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  const results = [];
  for (const v of vectors) {
    const name = v.protocol_name;
    try {
      const side = async (prefix, initiator) =>
        n.HandshakeState.create({
          protocol: name,
          initiator,
          prologue: hex(v[`${prefix}_prologue`]),
          s: v[`${prefix}_static`] ? await n.importKeyPair(hex(v[`${prefix}_static`])) : null,
          rs: v[`${prefix}_remote_static`] ? hex(v[`${prefix}_remote_static`]) : null,
          psks: (v[`${prefix}_psks`] ?? []).map(hex),
          e: v[`${prefix}_ephemeral`] ? await n.importKeyPair(hex(v[`${prefix}_ephemeral`])) : null,
        });
      const init = await side("init", true);
      const resp = await side("resp", false);
      const oneWay = n.pattern(name.split("_")[1]).oneWay;
      let transport = null;
      v.messages.forEach((m, i) => (m.index = i));
      for (const m of v.messages) {
        const fromInit = oneWay || m.index % 2 === 0;
        let sent;
        let got;
        if (!transport) {
          const [tx, rx] = fromInit ? [init, resp] : [resp, init];
          sent = await tx.writeMessage(hex(m.payload));
          got = await rx.readMessage(sent);
        } else {
          const [tx, rx] = fromInit ? [transport.init.send, transport.resp.receive] : [transport.resp.send, transport.init.receive];
          sent = await tx.encrypt(hex(m.payload));
          got = await rx.decrypt(sent);
        }
        if (toHex(sent) !== m.ciphertext) throw new Error(`message ${m.index}: ${toHex(sent)} is not ${m.ciphertext}`);
        if (toHex(got) !== m.payload) throw new Error(`message ${m.index}: decrypted to ${toHex(got)}`);
        if (!transport && init.finished && resp.finished) {
          for (const side of [init, resp]) {
            if (toHex(side.handshakeHash) !== v.handshake_hash) throw new Error(`handshake hash ${toHex(side.handshakeHash)}`);
          }
          transport = { init: init.transport(), resp: resp.transport() };
        }
      }
      if (!transport) throw new Error("the handshake never finished");
      results.push({ name, messages: v.messages.length });
    } catch (e) {
      results.push({ name, error: String(e?.message ?? e) });
    }
  }
  return results;
}
