// The end-to-end channel between this device and its host: the browser's side of
// `protocol/src/channel.rs` (which says why each part is as it is), over `noise.js`. A
// handshake on every connection (`Noise_KK_25519_AESGCM_SHA256` for a paired device, the
// prologue naming both Ed25519 identities; `Noise_NNpsk0_25519_AESGCM_SHA256` under a key from
// the pairing link's secret while pairing), then every resume payload sealed at an explicit
// nonce, in padded chunks. `protocol/golden/channel.json` pins the bytes;
// `web/test/channel.test.js` makes the same ones here.

import { HandshakeState, NoiseError } from "./noise.js";
import { concat } from "./protocol.js";

export const PROTOCOL = "Noise_KK_25519_AESGCM_SHA256";
export const PAIRING_PROTOCOL = "Noise_NNpsk0_25519_AESGCM_SHA256";
const PROLOGUE_LABEL = new TextEncoder().encode("agent-bridge channel 1");
const PAIRING_PROLOGUE_LABEL = new TextEncoder().encode("agent-bridge pairing channel 1");
const PSK_DOMAIN = new TextEncoder().encode("agent-bridge pairing channel psk v1\0");
export const KIND_HELLO = 0x11;
export const KIND_ANSWER = 0x12;
export const KIND_DATA = 0x13;
export const KIND_UNKNOWN = 0x14;
export const KIND_PAIR_HELLO = 0x15;
export const KIND_PAIR_ANSWER = 0x16;
/** The least and the most a chunk's plaintext is padded to. */
export const MIN_PADDED = 256;
export const MAX_PADDED = 65519;
const CHUNK_HEADER = 3;
export const MAX_CHUNK_DATA = 65519 - CHUNK_HEADER;
const LAST = 1;
const FIRST = 2;
const DATA_HEADER = 17;
const MAX_FRAME = DATA_HEADER + 65535;

export { NoiseError };

/** What a chunk of `len` bytes is padded up to: Padmé above 256 bytes (`size_class` in channel.rs). */
export function sizeClass(len) {
  if (len <= MIN_PADDED) return MIN_PADDED;
  const e = 31 - Math.clz32(len);
  const s = 32 - Math.clz32(e);
  const mask = 2 ** (e - s) - 1;
  return Math.min(Math.floor((len + mask) / (mask + 1)) * (mask + 1), Math.max(MAX_PADDED, len));
}
const subtle = globalThis.crypto.subtle;

/** The pairing channel's pre-shared key from the link's secret (`protocol::pairing::channel_psk`). */
export async function pairingPsk(secret) {
  return new Uint8Array(await subtle.digest("SHA-256", concat(PSK_DOMAIN, secret)));
}

/** Reads a channel frame's shape (nothing is decrypted); throws on a malformed one. */
export function decodeFrame(bytes) {
  if (bytes.length < 9 || bytes.length > MAX_FRAME) throw new NoiseError("a channel frame is malformed");
  const kind = bytes[0];
  const id = bytes.slice(1, 9);
  const rest = bytes.subarray(9);
  switch (kind) {
    case KIND_HELLO:
      return { kind: "hello", id, message: rest };
    case KIND_ANSWER:
      return { kind: "answer", id, message: rest };
    case KIND_DATA:
      if (rest.length < 8) break;
      return { kind: "data", id, nonce: new DataView(rest.buffer, rest.byteOffset).getBigUint64(0), ciphertext: rest.subarray(8) };
    case KIND_UNKNOWN:
      if (rest.length !== 0) break;
      return { kind: "unknown", id };
    case KIND_PAIR_HELLO:
      if (rest.length < 32) break;
      return { kind: "pair_hello", id, token: rest.slice(0, 32), message: rest.subarray(32) };
    case KIND_PAIR_ANSWER:
      return { kind: "pair_answer", id, message: rest };
  }
  throw new NoiseError("a channel frame is malformed");
}

const framed = (kind, id, ...parts) => concat(Uint8Array.of(kind), id, ...parts);
const u64 = (n) => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
};
export const sameId = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/** An open channel: seals resume payloads into data frames and opens them. */
export class Channel {
  #send;
  #receive;
  #nextNonce = 0n;
  #lastOpened = -1n;
  #partial = [];
  #partialLength = 0;
  #partialNext = null;
  #maxPayload;
  #closed = false;

  constructor(id, { send, receive }, handshakeHash, maxPayload) {
    this.id = id;
    this.#send = send;
    this.#receive = receive;
    this.handshakeHash = handshakeHash;
    this.#maxPayload = maxPayload;
  }

  /** One data frame per chunk of `payload`, at consecutive nonces (taken at once). */
  seal(payload) {
    const chunks = [];
    let at = 0;
    do {
      chunks.push(payload.subarray(at, at + MAX_CHUNK_DATA));
      at += MAX_CHUNK_DATA;
    } while (at < payload.length);
    const first = this.#nextNonce;
    this.#nextNonce += BigInt(chunks.length);
    return Promise.all(
      chunks.map(async (data, i) => {
        const plaintext = new Uint8Array(sizeClass(CHUNK_HEADER + data.length));
        plaintext[0] = (i === 0 ? FIRST : 0) | (i === chunks.length - 1 ? LAST : 0);
        new DataView(plaintext.buffer).setUint16(1, data.length);
        plaintext.set(data, CHUNK_HEADER);
        const nonce = first + BigInt(i);
        return framed(KIND_DATA, this.id, u64(nonce), await this.#send.encryptAt(nonce, plaintext));
      }),
    );
  }

  /**
   * A data frame's chunk (the caller found this channel by the frame's id, and opens one frame
   * at a time, in order): the payload once whole, `null` before. A frame that does not decrypt,
   * or came again, changes nothing; a chunk that decrypts but is malformed or over the limit
   * closes the channel.
   */
  async open(nonce, ciphertext) {
    if (this.#closed) throw new NoiseError("the channel was closed after a bad chunk");
    if (nonce <= this.#lastOpened) throw new NoiseError("a channel frame came again");
    const chunk = await this.#receive.decryptAt(nonce, ciphertext);
    if (nonce <= this.#lastOpened) throw new NoiseError("a channel frame came again");
    this.#lastOpened = nonce;
    try {
      return this.#take(nonce, chunk);
    } catch (e) {
      this.#closed = true;
      this.#reset();
      throw e;
    }
  }

  #reset() {
    this.#partial = [];
    this.#partialLength = 0;
    this.#partialNext = null;
  }

  #take(nonce, chunk) {
    if (chunk.length < CHUNK_HEADER) throw new NoiseError("a chunk is malformed");
    const flags = chunk[0];
    const len = new DataView(chunk.buffer, chunk.byteOffset).getUint16(1);
    const rest = chunk.subarray(CHUNK_HEADER);
    if ((flags & ~(LAST | FIRST)) !== 0 || len > rest.length || chunk.length !== sizeClass(CHUNK_HEADER + len) || rest.subarray(len).some((b) => b !== 0)) {
      throw new NoiseError("a chunk is malformed");
    }
    if (flags & FIRST) {
      this.#reset();
    } else if (this.#partialNext !== nonce) {
      // Its predecessors were lost: so is this payload, which the resume layer sends again.
      this.#reset();
      return null;
    }
    if (this.#partialLength + len > this.#maxPayload) throw new NoiseError(`a payload over ${this.#maxPayload} bytes`);
    this.#partial.push(rest.slice(0, len));
    this.#partialLength += len;
    if (!(flags & LAST)) {
      this.#partialNext = nonce + 1n;
      return null;
    }
    const payload = concat(...this.#partial);
    this.#reset();
    return payload;
  }
}

function handshakeOf({ pairing, host, device, localStatic, remoteStatic, psk, token, ephemeral, initiator }) {
  if (pairing) {
    const prologue = concat(PAIRING_PROLOGUE_LABEL, host, device, token);
    return HandshakeState.create({ protocol: PAIRING_PROTOCOL, initiator, prologue, psks: [psk], e: ephemeral });
  }
  return HandshakeState.create({ protocol: PROTOCOL, initiator, prologue: concat(PROLOGUE_LABEL, host, device), s: localStatic, rs: remoteStatic, e: ephemeral });
}

/**
 * The device's side of a handshake. A paired device gives `localStatic` (its X25519 key pair),
 * `remoteStatic` (the host's public key from pairing); a pairing one `psk` ({@link pairingPsk})
 * and `token` (the offer's, bytes). Both give `host` and `device` (Ed25519 identities, bytes),
 * `id` (8 random bytes), `incarnation` (a bigint naming this page's run). Returns the hello and
 * `finish(answerMessage)`, which opens the channel. `ephemeral` is for known-answer tests only.
 */
export async function initiate({ id, incarnation, maxPayload, ephemeral = null, ...keys }) {
  const pairing = Boolean(keys.psk);
  const hs = await handshakeOf({ ...keys, pairing, ephemeral, initiator: true });
  const message = await hs.writeMessage(u64(incarnation));
  const hello = pairing ? framed(KIND_PAIR_HELLO, id, keys.token, message) : framed(KIND_HELLO, id, message);
  const finish = async (answer) => {
    if ((await hs.readMessage(answer)).length !== 0) throw new NoiseError("a channel frame is malformed");
    return new Channel(id, hs.transport(), hs.handshakeHash, maxPayload);
  };
  return { hello, finish, pairing };
}

/** The host's side (the host is Rust; this is for tests): the open channel, the answer, the incarnation. */
export async function respond({ id, hello, maxPayload, ephemeral = null, ...keys }) {
  const pairing = Boolean(keys.psk);
  const hs = await handshakeOf({ ...keys, pairing, ephemeral, initiator: false });
  const payload = await hs.readMessage(hello);
  if (payload.length !== 8) throw new NoiseError("a channel frame is malformed");
  const incarnation = new DataView(payload.buffer, payload.byteOffset).getBigUint64(0);
  const answer = framed(pairing ? KIND_PAIR_ANSWER : KIND_ANSWER, id, await hs.writeMessage());
  return { channel: new Channel(id, hs.transport(), hs.handshakeHash, maxPayload), answer, incarnation };
}
