// The end-to-end channel between this device and its host: the browser's side of
// `protocol/src/channel.rs` (which says why each part is as it is), over `noise.js`. A
// handshake (`Noise_KK_25519_AESGCM_SHA256`, the prologue naming both Ed25519 identities), then
// messages split into chunks padded to a few size classes. `protocol/golden/channel.json` pins
// the bytes; `web/test/channel.test.js` makes the same ones here.

import { HandshakeState, NoiseError } from "./noise.js";

export const PROTOCOL = "Noise_KK_25519_AESGCM_SHA256";
const PROLOGUE_LABEL = new TextEncoder().encode("agent-bridge channel 1");
export const KIND_HELLO = 0x01;
export const KIND_ANSWER = 0x02;
export const KIND_DATA = 0x03;
/** Sizes a chunk's plaintext is padded up to (none is larger). */
export const SIZE_CLASSES = [256, 1024, 4096, 16384, 32768, 65519];
const CHUNK_HEADER = 3;
export const MAX_CHUNK_DATA = 65519 - CHUNK_HEADER;
const LAST = 1;

export { NoiseError };

const sizeClass = (len) => SIZE_CLASSES.find((c) => c >= len) ?? Infinity;
/** The largest frame: the kind, the largest chunk and its tag. */
const MAX_FRAME = 1 + 65519 + 16;

const prologue = (host, device) => {
  const out = new Uint8Array(PROLOGUE_LABEL.length + 64);
  out.set(PROLOGUE_LABEL);
  out.set(host, PROLOGUE_LABEL.length);
  out.set(device, PROLOGUE_LABEL.length + 32);
  return out;
};

const framed = (kind, bytes) => {
  const out = new Uint8Array(1 + bytes.length);
  out[0] = kind;
  out.set(bytes, 1);
  return out;
};

/** An open channel: seals messages into frames and opens frames into messages. */
export class Channel {
  #send;
  #receive;
  #partial = [];
  #partialLength = 0;
  #maxMessage;
  #closed = false;

  constructor({ send, receive }, handshakeHash, maxMessage) {
    this.#send = send;
    this.#receive = receive;
    this.handshakeHash = handshakeHash;
    this.#maxMessage = maxMessage;
  }

  /** One frame per chunk of `message`. */
  async seal(message) {
    const frames = [];
    let at = 0;
    do {
      const data = message.subarray(at, at + MAX_CHUNK_DATA);
      at += data.length;
      const last = at >= message.length;
      const plaintext = new Uint8Array(sizeClass(CHUNK_HEADER + data.length));
      plaintext[0] = last ? LAST : 0;
      new DataView(plaintext.buffer).setUint16(1, data.length);
      plaintext.set(data, CHUNK_HEADER);
      frames.push(framed(KIND_DATA, await this.#send.encrypt(plaintext)));
      if (last) return frames;
    } while (true);
  }

  /**
   * The message, once a frame brings its last chunk; `null` before. A frame that does not
   * decrypt changes nothing; a chunk that decrypts but is malformed or over the limit closes the
   * channel (as `protocol/src/channel.rs` says why).
   */
  async open(frame) {
    if (this.#closed) throw new NoiseError("the channel was closed after a bad chunk");
    if (frame[0] !== KIND_DATA || frame.length > MAX_FRAME) throw new NoiseError("not a frame this side expects now");
    const chunk = await this.#receive.decrypt(frame.subarray(1));
    try {
      return this.#take(chunk);
    } catch (e) {
      this.#closed = true;
      this.#partial = [];
      this.#partialLength = 0;
      throw e;
    }
  }

  #take(chunk) {
    if (chunk.length < CHUNK_HEADER) throw new NoiseError("a chunk is malformed");
    const flags = chunk[0];
    const len = new DataView(chunk.buffer, chunk.byteOffset).getUint16(1);
    const rest = chunk.subarray(CHUNK_HEADER);
    if ((flags & ~LAST) !== 0 || len > rest.length || chunk.length !== sizeClass(CHUNK_HEADER + len) || rest.subarray(len).some((b) => b !== 0)) {
      throw new NoiseError("a chunk is malformed");
    }
    if (this.#partialLength + len > this.#maxMessage) throw new NoiseError(`a message over ${this.#maxMessage} bytes`);
    this.#partial.push(rest.slice(0, len));
    this.#partialLength += len;
    if (!(flags & LAST)) return null;
    const message = new Uint8Array(this.#partialLength);
    let at = 0;
    for (const part of this.#partial) {
      message.set(part, at);
      at += part.length;
    }
    this.#partial = [];
    this.#partialLength = 0;
    return message;
  }
}

/**
 * The device's side: `localStatic` its X25519 key pair ({ privateKey, publicKey }),
 * `remoteStatic` the host's public key from pairing, `host` and `device` the Ed25519 identities
 * (bytes). Returns the hello to send and `finish(answer)`, which opens the channel.
 * `ephemeral` is for known-answer tests only.
 */
export async function initiate({ localStatic, remoteStatic, host, device, maxMessage, ephemeral = null }) {
  const hs = await HandshakeState.create({ protocol: PROTOCOL, initiator: true, prologue: prologue(host, device), s: localStatic, rs: remoteStatic, e: ephemeral });
  const hello = framed(KIND_HELLO, await hs.writeMessage());
  const finish = async (answer) => {
    if (answer[0] !== KIND_ANSWER) throw new NoiseError("not a frame this side expects now");
    if ((await hs.readMessage(answer.subarray(1))).length !== 0) throw new NoiseError("a chunk is malformed");
    return new Channel(hs.transport(), hs.handshakeHash, maxMessage);
  };
  return { hello, finish };
}

/** The host's side (the host is Rust; this is for tests): the open channel and the answer. */
export async function respond({ localStatic, remoteStatic, host, device, maxMessage, hello, ephemeral = null }) {
  if (hello[0] !== KIND_HELLO) throw new NoiseError("not a frame this side expects now");
  const hs = await HandshakeState.create({ protocol: PROTOCOL, initiator: false, prologue: prologue(host, device), s: localStatic, rs: remoteStatic, e: ephemeral });
  if ((await hs.readMessage(hello.subarray(1))).length !== 0) throw new NoiseError("a chunk is malformed");
  const answer = framed(KIND_ANSWER, await hs.writeMessage());
  return { channel: new Channel(hs.transport(), hs.handshakeHash, maxMessage), answer };
}
