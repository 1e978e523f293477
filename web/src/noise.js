// The Noise Protocol Framework (revision 34, noiseprotocol.org/noise.html) for the suite
// `25519_AESGCM_SHA256`, over WebCrypto alone: X25519 key agreement, AES-256-GCM, SHA-256 and
// HMAC-SHA-256 are the browser's; this file composes them exactly as the specification's
// sections 5 (CipherState, SymmetricState, HandshakeState) and 7 (patterns) say, and nothing
// more. It is checked against cacophony's known-answer vectors for the suite in Node and in
// Chromium (`web/test/noise.test.js`, `web/test/browser.test.js`); the host's side is the Rust
// crate `snow`, checked against the same file.
//
// It holds no key material beyond the handshake and cipher states it is given, and decides
// nothing about who is trusted: the caller says which static keys it expects.

import { concat } from "./protocol.js";

const subtle = globalThis.crypto.subtle;

/** Bytes of a key or hash. */
export const DHLEN = 32;
const HASHLEN = 32;
const TAGLEN = 16;
/** The largest Noise message. */
export const MAX_MESSAGE = 65535;

/** The handshake patterns this implementation runs (sections 7.4 and 7.5), by name. */
const PATTERNS = {
  N: { pre: [[], ["s"]], messages: [["e", "es"]] },
  K: { pre: [["s"], ["s"]], messages: [["e", "es", "ss"]] },
  X: { pre: [[], ["s"]], messages: [["e", "es", "s", "ss"]] },
  NN: { pre: [[], []], messages: [["e"], ["e", "ee"]] },
  NK: { pre: [[], ["s"]], messages: [["e", "es"], ["e", "ee"]] },
  NX: { pre: [[], []], messages: [["e"], ["e", "ee", "s", "es"]] },
  XN: { pre: [[], []], messages: [["e"], ["e", "ee"], ["s", "se"]] },
  XK: { pre: [[], ["s"]], messages: [["e", "es"], ["e", "ee"], ["s", "se"]] },
  XX: { pre: [[], []], messages: [["e"], ["e", "ee", "s", "es"], ["s", "se"]] },
  KN: { pre: [["s"], []], messages: [["e"], ["e", "ee", "se"]] },
  KK: { pre: [["s"], ["s"]], messages: [["e", "es", "ss"], ["e", "ee", "se"]] },
  KX: { pre: [["s"], []], messages: [["e"], ["e", "ee", "se", "s", "es"]] },
  IN: { pre: [[], []], messages: [["e", "s"], ["e", "ee", "se"]] },
  IK: { pre: [[], ["s"]], messages: [["e", "es", "s", "ss"], ["e", "ee", "se"]] },
  IX: { pre: [[], []], messages: [["e", "s"], ["e", "ee", "se", "s", "es"]] },
};

/** Why a Noise message was refused (or could not be made). */
export class NoiseError extends Error {}

/**
 * A pattern by its full name's pattern part (`KK`, `NNpsk0`, `XXpsk3`, `NNpsk0+psk2`), with its
 * `psk` tokens placed as section 9.2 says; `null` for one this file does not run.
 */
export function pattern(name) {
  const m = /^([NKXI]{1,2})((?:psk\d)(?:\+psk\d)*)?$/.exec(name);
  const base = m && PATTERNS[m[1]];
  if (!base) return null;
  const messages = base.messages.map((tokens) => [...tokens]);
  for (const modifier of m[2]?.split("+") ?? []) {
    const at = Number(modifier.slice(3));
    if (at === 0) messages[0].unshift("psk");
    else if (at <= messages.length) messages[at - 1].push("psk");
    else return null;
  }
  return { pre: base.pre, messages, oneWay: m[1].length === 1, psks: (m[2]?.split("+") ?? []).length };
}

const sha256 = async (data) => new Uint8Array(await subtle.digest("SHA-256", data));

async function hmac(key, data) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}

/** Section 4.3: HKDF(chaining_key, input_key_material, num_outputs). */
async function hkdf(chainingKey, ikm, outputs) {
  const temp = await hmac(chainingKey, ikm);
  const out1 = await hmac(temp, Uint8Array.of(1));
  const out2 = await hmac(temp, concat(out1, Uint8Array.of(2)));
  if (outputs === 2) return [out1, out2];
  return [out1, out2, await hmac(temp, concat(out2, Uint8Array.of(3)))];
}

/** An X25519 key pair: the private half as a WebCrypto key, the public half as bytes. */
export async function generateKeyPair({ extractable = false } = {}) {
  const pair = await subtle.generateKey({ name: "X25519" }, extractable, ["deriveBits"]);
  return { privateKey: pair.privateKey, publicKey: new Uint8Array(await subtle.exportKey("raw", pair.publicKey)) };
}

/** An X25519 key pair from its 32 private bytes (for known-answer tests; WebCrypto takes them as PKCS #8). */
export async function importKeyPair(privateBytes) {
  const pkcs8 = concat(Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20]), privateBytes);
  const privateKey = await subtle.importKey("pkcs8", pkcs8, { name: "X25519" }, true, ["deriveBits"]);
  const { x } = await subtle.exportKey("jwk", privateKey);
  const publicKey = Uint8Array.from(atob(x.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  return { privateKey, publicKey };
}

/** X25519 between `pair` and a peer's public key; refuses a key of small order. */
export async function agree(pair, publicBytes) {
  return dh(pair, publicBytes);
}

async function dh(pair, publicBytes) {
  const pub = await subtle.importKey("raw", publicBytes, { name: "X25519" }, false, []);
  try {
    return new Uint8Array(await subtle.deriveBits({ name: "X25519", public: pub }, pair.privateKey, 256));
  } catch {
    // A public key of small order: the shared secret would be all zeros.
    throw new NoiseError("a peer's key is not a usable X25519 key");
  }
}

/** The AES-GCM nonce of Noise nonce `n` (section 12.4: 32 zero bits, then `n` big-endian). */
function ivOf(n) {
  if (typeof n !== "bigint" || n < 0n || n >= 0xffffffffffffffffn) throw new NoiseError("not a nonce");
  const iv = new Uint8Array(12);
  new DataView(iv.buffer).setBigUint64(4, n);
  return iv;
}

/** Section 5.1: a key (or none) and a nonce. */
export class CipherState {
  #key = null;
  #n = 0n;

  async initializeKey(key) {
    this.#key = key && (await subtle.importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]));
    this.#n = 0n;
  }

  hasKey() {
    return this.#key !== null;
  }

  #nonce() {
    if (this.#n >= 0xffffffffffffffffn) throw new NoiseError("the cipher's nonces are used up");
    return ivOf(this.#n);
  }

  async encryptWithAd(ad, plaintext) {
    if (!this.#key) return plaintext;
    const iv = this.#nonce();
    const out = await subtle.encrypt({ name: "AES-GCM", iv, additionalData: ad, tagLength: 128 }, this.#key, plaintext);
    this.#n += 1n;
    return new Uint8Array(out);
  }

  async decryptWithAd(ad, ciphertext) {
    if (ciphertext.length > MAX_MESSAGE) throw new NoiseError("over the largest Noise message");
    if (!this.#key) return ciphertext;
    const iv = this.#nonce();
    let out;
    try {
      out = await subtle.decrypt({ name: "AES-GCM", iv, additionalData: ad, tagLength: 128 }, this.#key, ciphertext);
    } catch {
      throw new NoiseError("a message failed its authentication");
    }
    this.#n += 1n;
    return new Uint8Array(out);
  }

  /**
   * A transport message at an explicit nonce (section 5.1's SetNonce, for messages that may be
   * lost or reordered: section 11.4), with empty associated data; the state's own nonce is left
   * as it was. The caller keeps every nonce to one use.
   */
  async encryptAt(nonce, plaintext) {
    if (!this.#key) throw new NoiseError("no key yet");
    const out = await subtle.encrypt({ name: "AES-GCM", iv: ivOf(nonce), additionalData: new Uint8Array(0), tagLength: 128 }, this.#key, plaintext);
    return new Uint8Array(out);
  }

  /** The opening of {@link CipherState.encryptAt}. */
  async decryptAt(nonce, ciphertext) {
    if (ciphertext.length > MAX_MESSAGE) throw new NoiseError("over the largest Noise message");
    if (!this.#key) throw new NoiseError("no key yet");
    try {
      return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: ivOf(nonce), additionalData: new Uint8Array(0), tagLength: 128 }, this.#key, ciphertext));
    } catch {
      throw new NoiseError("a message failed its authentication");
    }
  }

  /** A transport message (section 5.1, with empty associated data). */
  encrypt(plaintext) {
    return this.encryptWithAd(new Uint8Array(0), plaintext);
  }

  decrypt(ciphertext) {
    return this.decryptWithAd(new Uint8Array(0), ciphertext);
  }
}

/** Section 5.2. */
class SymmetricState {
  cipher = new CipherState();
  ck;
  h;

  async initialize(protocolName) {
    const name = new TextEncoder().encode(protocolName);
    this.h = name.length <= HASHLEN ? concat(name, new Uint8Array(HASHLEN - name.length)) : await sha256(name);
    this.ck = this.h;
    await this.cipher.initializeKey(null);
  }

  async mixKey(ikm) {
    const [ck, key] = await hkdf(this.ck, ikm, 2);
    this.ck = ck;
    await this.cipher.initializeKey(key);
  }

  async mixHash(data) {
    this.h = await sha256(concat(this.h, data));
  }

  async mixKeyAndHash(ikm) {
    const [ck, h, key] = await hkdf(this.ck, ikm, 3);
    this.ck = ck;
    await this.mixHash(h);
    await this.cipher.initializeKey(key);
  }

  async encryptAndHash(plaintext) {
    const ciphertext = await this.cipher.encryptWithAd(this.h, plaintext);
    await this.mixHash(ciphertext);
    return ciphertext;
  }

  async decryptAndHash(ciphertext) {
    const plaintext = await this.cipher.decryptWithAd(this.h, ciphertext);
    await this.mixHash(ciphertext);
    return plaintext;
  }

  async split() {
    const [k1, k2] = await hkdf(this.ck, new Uint8Array(0), 2);
    const c1 = new CipherState();
    const c2 = new CipherState();
    await c1.initializeKey(k1);
    await c2.initializeKey(k2);
    return [c1, c2];
  }
}

/**
 * Section 5.3: one side of a handshake. `protocol` is the full name
 * (`Noise_KK_25519_AESGCM_SHA256`); `s` this side's static key pair, `rs` the peer's static
 * public key when the pattern has it known in advance; `psks` the pre-shared keys in the order
 * of the name's modifiers; `e` a fixed ephemeral key pair (known-answer tests only).
 */
export class HandshakeState {
  #ss = new SymmetricState();
  #pattern;
  #initiator;
  #s;
  #e;
  #rs;
  #re = null;
  #psks;
  #next = 0;
  #result = null;

  static async create({ protocol, initiator, prologue = new Uint8Array(0), s = null, rs = null, psks = [], e = null }) {
    const parts = protocol.split("_");
    if (parts.length !== 5 || parts[0] !== "Noise" || parts.slice(2).join("_") !== "25519_AESGCM_SHA256") {
      throw new NoiseError(`not a suite this implementation runs: ${protocol}`);
    }
    const p = pattern(parts[1]);
    if (!p) throw new NoiseError(`not a pattern this implementation runs: ${parts[1]}`);
    if (psks.length !== p.psks || psks.some((k) => k.length !== 32)) throw new NoiseError("the pre-shared keys do not fit the pattern");
    const hs = new HandshakeState();
    hs.#pattern = p;
    hs.#initiator = initiator;
    hs.#s = s;
    hs.#rs = rs;
    hs.#e = e;
    hs.#psks = [...psks];
    await hs.#ss.initialize(protocol);
    await hs.#ss.mixHash(prologue);
    // Pre-messages: the initiator's first, then the responder's (section 7.1).
    const [initiatorPre, responderPre] = p.pre;
    for (const [tokens, mine] of [[initiatorPre, initiator], [responderPre, !initiator]]) {
      for (const token of tokens) {
        const key = mine ? s?.publicKey : rs;
        if (token !== "s" || !key) throw new NoiseError("a static key the pattern needs in advance is missing");
        await hs.#ss.mixHash(key);
      }
    }
    return hs;
  }

  /** Whether it is this side's turn to write. */
  get writing() {
    const initiatorsTurn = this.#next % 2 === 0;
    return this.#initiator === initiatorsTurn;
  }

  get finished() {
    return this.#result !== null;
  }

  /** The handshake hash (section 11.2), once finished. */
  get handshakeHash() {
    return this.#ss.h;
  }

  /** The peer's static public key, once known. */
  get remoteStatic() {
    return this.#rs;
  }

  #usesPsk() {
    return this.#pattern.psks > 0;
  }

  async #dhFor(token) {
    const i = this.#initiator;
    switch (token) {
      case "ee":
        return dh(this.#e, this.#re);
      case "es":
        return i ? dh(this.#e, this.#rs) : dh(this.#s, this.#re);
      case "se":
        return i ? dh(this.#s, this.#re) : dh(this.#e, this.#rs);
      case "ss":
        return dh(this.#s, this.#rs);
    }
    throw new NoiseError(`unknown token ${token}`);
  }

  #tokens() {
    if (this.finished) throw new NoiseError("the handshake is over");
    return this.#pattern.messages[this.#next];
  }

  async #advance() {
    this.#next += 1;
    if (this.#next === this.#pattern.messages.length) {
      const [c1, c2] = await this.#ss.split();
      this.#result = this.#initiator ? { send: c1, receive: c2 } : { send: c2, receive: c1 };
    }
  }

  /** Writes the next handshake message, carrying `payload`. */
  async writeMessage(payload = new Uint8Array(0)) {
    const tokens = this.#tokens();
    if (!this.writing) throw new NoiseError("it is the peer's turn");
    const parts = [];
    for (const token of tokens) {
      if (token === "e") {
        this.#e ??= await generateKeyPair();
        parts.push(this.#e.publicKey);
        await this.#ss.mixHash(this.#e.publicKey);
        if (this.#usesPsk()) await this.#ss.mixKey(this.#e.publicKey);
      } else if (token === "s") {
        if (!this.#s) throw new NoiseError("no static key to send");
        parts.push(await this.#ss.encryptAndHash(this.#s.publicKey));
      } else if (token === "psk") {
        await this.#ss.mixKeyAndHash(this.#psks.shift());
      } else {
        await this.#ss.mixKey(await this.#dhFor(token));
      }
    }
    parts.push(await this.#ss.encryptAndHash(payload));
    const message = concat(...parts);
    if (message.length > MAX_MESSAGE) throw new NoiseError("over the largest Noise message");
    await this.#advance();
    return message;
  }

  /**
   * Reads the peer's next handshake message; returns its payload. A message it refuses leaves
   * the handshake spent (unlike snow, which restores its state): start a new one.
   */
  async readMessage(message) {
    const tokens = this.#tokens();
    if (this.writing) throw new NoiseError("it is this side's turn");
    if (message.length > MAX_MESSAGE) throw new NoiseError("over the largest Noise message");
    let at = 0;
    const take = (n) => {
      if (message.length - at < n) throw new NoiseError("a handshake message is too short");
      const part = message.subarray(at, at + n);
      at += n;
      return part;
    };
    for (const token of tokens) {
      if (token === "e") {
        this.#re = take(DHLEN).slice();
        await this.#ss.mixHash(this.#re);
        if (this.#usesPsk()) await this.#ss.mixKey(this.#re);
      } else if (token === "s") {
        const n = this.#ss.cipher.hasKey() ? DHLEN + TAGLEN : DHLEN;
        this.#rs = await this.#ss.decryptAndHash(take(n));
      } else if (token === "psk") {
        await this.#ss.mixKeyAndHash(this.#psks.shift());
      } else {
        await this.#ss.mixKey(await this.#dhFor(token));
      }
    }
    const payload = await this.#ss.decryptAndHash(message.subarray(at));
    await this.#advance();
    return payload;
  }

  /** The two cipher states for transport messages, once finished: `send` and `receive`. */
  transport() {
    if (!this.#result) throw new NoiseError("the handshake is not over");
    return this.#result;
  }
}
