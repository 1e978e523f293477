// The bridge's wire protocol for the browser: the same bytes as the Rust `protocol` crate.
//
// Everything here is checked against the crate's committed golden files
// (protocol/golden/, see web/test/golden.test.js): JSON payloads, the signed envelope, the
// canonical action bytes and their hash, printed ids and fingerprints, the pairing token and
// proof. Keys are WebCrypto Ed25519 keys; a device's private key is made non-extractable and
// never leaves the browser. Only `globalThis.crypto.subtle` is used, so the module runs the same
// in a browser and in Node (for the tests; Node 18 keeps WebCrypto in node:crypto).

// No top-level await: a service worker may not have one (Node has `crypto` global from 19).
const subtle = globalThis.crypto.subtle;
const utf8 = new TextEncoder();

export const VERSION = 1;
export const ENVELOPE_DOMAIN = utf8.encode("agent-bridge envelope v1\0");
export const ACTION_DOMAIN = utf8.encode("agent-bridge action v1\0");
export const PAIRING_DOMAIN = utf8.encode("agent-bridge pairing v1\0");
export const TOKEN_DOMAIN = utf8.encode("agent-bridge pairing token v1\0");
export const FINGERPRINT_DOMAIN = utf8.encode("agent-bridge fingerprint v1\0");
export const HEADER_LEN = 94;
export const SIGNATURE_LEN = 64;
export const MAX_FRAME = 4 << 20;

/** The message kinds, as the envelope's kind byte says them. */
export const KIND = { request: 1, decision: 2, event: 3, pairing: 4 };
const KIND_NAME = Object.fromEntries(Object.entries(KIND).map(([k, v]) => [v, k]));

// --- bytes ---------------------------------------------------------------------------------

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Lowercase hex of an exact length only: one spelling per value, as the Rust side. */
export function fromHex(text, length) {
  if (typeof text !== "string" || !/^([0-9a-f]{2})*$/.test(text)) throw new Error("not lowercase hex");
  if (length !== undefined && text.length !== 2 * length) throw new Error(`expected ${length} bytes of hex`);
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Standard base64 with padding (the protocol's `Blob`). */
export function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

export function fromBase64(text) {
  const raw = atob(text);
  const out = Uint8Array.from(raw, (c) => c.charCodeAt(0));
  // One spelling per value: refuse missing padding or stray bits, as the Rust side does.
  if (toBase64(out) !== text) throw new Error("not canonical base64");
  return out;
}

function u32(n) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

function u64(n) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

export async function sha256(bytes) {
  return new Uint8Array(await subtle.digest("SHA-256", bytes));
}

// --- messages ------------------------------------------------------------------------------

/**
 * A message's payload bytes. Build message objects with their fields in the order the Rust types
 * declare them (`type` first): JSON.stringify then writes what serde_json writes.
 */
export function payloadOf(message) {
  return utf8.encode(JSON.stringify(message));
}

// --- the signed envelope -------------------------------------------------------------------

/**
 * Seals `message` of `kind` ("request", "decision", "event", "pairing") with `privateKey` (a
 * WebCrypto Ed25519 key) from `sender` to `recipient` (32-byte public keys).
 */
export async function seal(privateKey, { kind, sender, recipient, counter, issuedAtMs, expiresAtMs }, message) {
  const payload = payloadOf(message);
  const unsigned = concat(
    Uint8Array.of(VERSION, KIND[kind]),
    sender,
    recipient,
    u64(counter),
    u64(issuedAtMs),
    u64(expiresAtMs),
    u32(payload.length),
    payload,
  );
  if (unsigned.length + SIGNATURE_LEN > MAX_FRAME) throw new Error("frame over the limit");
  const signature = new Uint8Array(await subtle.sign("Ed25519", privateKey, concat(ENVELOPE_DOMAIN, unsigned)));
  return concat(unsigned, signature);
}

/** The frame's shape, unverified: header fields, payload bytes, signature. */
export function decode(frame) {
  if (frame.length > MAX_FRAME) throw new Error("frame over the limit");
  if (frame[0] !== VERSION) throw new Error(`unknown protocol version ${frame[0]}`);
  if (frame.length < HEADER_LEN + SIGNATURE_LEN) throw new Error("frame is truncated");
  const kind = KIND_NAME[frame[1]];
  if (!kind) throw new Error(`unknown message kind ${frame[1]}`);
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const payloadLen = view.getUint32(90);
  const end = HEADER_LEN + payloadLen + SIGNATURE_LEN;
  if (frame.length !== end) throw new Error(frame.length < end ? "frame is truncated" : "bytes after the signature");
  return {
    kind,
    sender: frame.slice(2, 34),
    recipient: frame.slice(34, 66),
    counter: view.getBigUint64(66),
    issuedAtMs: Number(view.getBigUint64(74)),
    expiresAtMs: Number(view.getBigUint64(82)),
    signed: frame.subarray(0, end - SIGNATURE_LEN),
    payload: frame.subarray(HEADER_LEN, end - SIGNATURE_LEN),
    signature: frame.subarray(end - SIGNATURE_LEN),
  };
}

/**
 * Verifies a frame from `senderKey` (the 32 raw bytes learnt at pairing) to `me`, and returns
 * the header and the parsed message. The caller then checks the counter against its window.
 */
export async function open(frame, senderKey, me, nowMs, { maxSkewMs = 120000, maxLifetimeMs = 600000 } = {}) {
  const h = decode(frame);
  if (toHex(h.sender) !== toHex(senderKey)) throw new Error("frame is not from the expected sender");
  if (toHex(h.recipient) !== toHex(me)) throw new Error("frame is addressed to another recipient");
  const key = await subtle.importKey("raw", senderKey, "Ed25519", false, ["verify"]);
  if (!(await subtle.verify("Ed25519", key, h.signature, concat(ENVELOPE_DOMAIN, h.signed)))) {
    throw new Error("signature verification failed");
  }
  const lifetime = h.expiresAtMs - h.issuedAtMs;
  if (!(lifetime > 0 && lifetime <= maxLifetimeMs)) throw new Error("lifetime not allowed");
  if (h.issuedAtMs > nowMs + maxSkewMs) throw new Error("issued in the future");
  if (nowMs > h.expiresAtMs + maxSkewMs) throw new Error("expired");
  return { header: h, message: JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(h.payload)) };
}

// --- the action hash -----------------------------------------------------------------------

function field(bytes) {
  return concat(u32(bytes.length), bytes);
}

async function hashed(bytes) {
  return field(await sha256(bytes));
}

/** The canonical bytes of an action (protocol/src/action.rs). */
export async function actionCanonical(action) {
  const parts = [ACTION_DOMAIN, field(utf8.encode(action.type))];
  const text = (s) => field(utf8.encode(s));
  switch (action.type) {
    case "run": {
      parts.push(u32(action.argv.length), ...action.argv.map(text), text(action.cwd));
      const env = Object.entries(action.env ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      parts.push(u32(env.length));
      for (const [name, value] of env) parts.push(text(name), text(value));
      break;
    }
    case "read_file":
    case "list_dir":
      parts.push(text(action.path));
      break;
    case "write_file":
      parts.push(text(action.path), await hashed(fromBase64(action.content)));
      break;
    case "edit_file":
      parts.push(text(action.path), await hashed(utf8.encode(action.old)), await hashed(utf8.encode(action.new)));
      break;
    case "session_input":
      parts.push(field(fromHex(action.session, 16)), await hashed(utf8.encode(action.data)));
      break;
    case "web_fetch":
      parts.push(text(action.url));
      break;
    case "tool":
      parts.push(text(action.name), await hashed(utf8.encode(action.input)));
      break;
    case "start_session":
      parts.push(u32(action.command.length), ...action.command.map(text));
      break;
    default:
      throw new Error(`unknown action type ${action.type}`);
  }
  return concat(...parts);
}

/** The SHA-256 of an action's canonical bytes, as lowercase hex (what a decision names). */
export async function actionHash(action) {
  return toHex(await sha256(await actionCanonical(action)));
}

// --- ids and fingerprints ------------------------------------------------------------------

const BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

function polymod(values) {
  const gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= gen[i];
  }
  return chk >>> 0;
}

/** A key printed as `host1…` or `dev1…` (bech32m). */
export function keyId(prefix, key) {
  const words = [];
  let acc = 0;
  let bits = 0;
  for (const b of key) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      words.push((acc >>> bits) & 31);
    }
  }
  if (bits > 0) words.push((acc << (5 - bits)) & 31);
  const expand = [...prefix].map((c) => c.charCodeAt(0) >> 5).concat([0], [...prefix].map((c) => c.charCodeAt(0) & 31));
  const mod = polymod(expand.concat(words, [0, 0, 0, 0, 0, 0])) ^ 0x2bc830a3;
  const checksum = [0, 1, 2, 3, 4, 5].map((i) => (mod >>> (5 * (5 - i))) & 31);
  return `${prefix}1${words.concat(checksum).map((w) => BECH32[w]).join("")}`;
}

/** The 32 key bytes of a `host1…`/`dev1…` id, checking its checksum and prefix. */
export function keyOfId(prefix, id) {
  const text = id.toLowerCase();
  if (text !== id || !text.startsWith(`${prefix}1`) || text.length > 100) throw new Error(`not a ${prefix}1… id`);
  const words = [...text.slice(prefix.length + 1)].map((c) => {
    const w = BECH32.indexOf(c);
    if (w < 0) throw new Error("not bech32");
    return w;
  });
  const expand = [...prefix].map((c) => c.charCodeAt(0) >> 5).concat([0], [...prefix].map((c) => c.charCodeAt(0) & 31));
  if (polymod(expand.concat(words)) !== 0x2bc830a3) throw new Error("checksum mismatch");
  const out = [];
  let acc = 0;
  let bits = 0;
  for (const w of words.slice(0, -6)) {
    acc = (acc << 5) | w;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >>> bits) & 0xff);
    }
  }
  if (out.length !== 32) throw new Error("not a 32-byte key");
  return Uint8Array.from(out);
}

/** The short, comparable digest of a key people read aloud at pairing (`4XV2-CYSQ-…`). */
export async function fingerprint(key) {
  const digest = (await sha256(concat(FINGERPRINT_DOMAIN, key))).slice(0, 10);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0n;
  for (const b of digest) bits = (bits << 8n) | BigInt(b);
  const chars = [];
  for (let i = 0; i < 16; i++) chars.push(alphabet[Number((bits >> BigInt(75 - 5 * i)) & 31n)]);
  return [0, 4, 8, 12].map((i) => chars.slice(i, i + 4).join("")).join("-");
}

// --- relay authentication ------------------------------------------------------------------

export const AUTH_DOMAIN = utf8.encode("agent-bridge relay auth v1\0");
export const ORIGIN_DOMAIN = utf8.encode("agent-bridge origin v1\0");

/**
 * What a browser binds its challenge answer to: the relay certificate's SHA-256 from the pairing
 * link (a self-signed relay), else this binding of the page's origin (`location.origin`).
 */
export async function originBinding(origin) {
  return sha256(concat(ORIGIN_DOMAIN, utf8.encode(origin)));
}

/** The bytes signed to answer the relay's challenge (`side`: "host" or "device"). */
export function authMessage(nonce, side, binding) {
  return concat(AUTH_DOMAIN, nonce, Uint8Array.of(side === "host" ? 0x68 : 0x64), binding);
}

// --- relay frames and end-to-end resume ----------------------------------------------------
// The relay's routing header (protocol/src/relay.rs) and the resume payload inside it
// (protocol/src/resume.rs); protocol/golden/resume.json pins both sides to the same bytes.

/** A data frame's routing header: kind ‖ peer key (32). */
export const RELAY_HEADER = 33;
/** The frame kinds: to one peer; from a host to all its devices. */
export const FRAME = { to: 1, broadcast: 2 };

/** A data frame to `peer`. */
export function relayFrame(peer, payload) {
  return concat(Uint8Array.of(FRAME.to), peer, payload);
}

/** `{ kind, peer, payload }` of a data frame, or null when shorter than its header. */
export function splitRelayFrame(frame) {
  if (frame.length < RELAY_HEADER) return null;
  return { kind: frame[0], peer: frame.slice(1, RELAY_HEADER), payload: frame.subarray(RELAY_HEADER) };
}

const RESUME_DATA_HEADER = 25;
const RESUME_ACK_LEN = 17;

function readU64(bytes, at) {
  return new DataView(bytes.buffer, bytes.byteOffset + at, 8).getBigUint64(0);
}

/**
 * A resume payload: `{ kind: "data", epoch, seq, base, message }` or `{ kind: "ack", epoch,
 * seq }`, numbers as BigInt.
 */
export function encodeResume(frame) {
  if (frame.kind === "data") {
    return concat(Uint8Array.of(0), u64(frame.epoch), u64(frame.seq), u64(frame.base), frame.message);
  }
  if (frame.kind === "ack") return concat(Uint8Array.of(1), u64(frame.epoch), u64(frame.seq));
  throw new Error(`no resume frame of kind ${frame.kind}`);
}

/**
 * Reads a resume payload: a frame as [`encodeResume`] takes it, or `{ error }` naming why it
 * is none ("length", "kind" or "base"), as `protocol::resume::FrameError` does.
 */
export function decodeResume(payload) {
  if (payload.length === 0) return { error: "length" };
  if (payload[0] === 0) {
    if (payload.length < RESUME_DATA_HEADER) return { error: "length" };
    const [epoch, seq, base] = [readU64(payload, 1), readU64(payload, 9), readU64(payload, 17)];
    if (base === 0n || base > seq) return { error: "base" };
    return { kind: "data", epoch, seq, base, message: payload.subarray(RESUME_DATA_HEADER) };
  }
  if (payload[0] === 1) {
    if (payload.length !== RESUME_ACK_LEN) return { error: "length" };
    return { kind: "ack", epoch: readU64(payload, 1), seq: readU64(payload, 9) };
  }
  return { error: "kind" };
}

// --- pairing -------------------------------------------------------------------------------

/** The offer's public name: what the relay sees instead of the secret. */
export async function pairingToken(secret) {
  return toHex(await sha256(concat(TOKEN_DOMAIN, secret)));
}

/** The device's proof that it holds the secret, bound to both keys and its name. */
export async function pairingProof(secret, hostKey, deviceKey, name) {
  const key = await subtle.importKey("raw", secret, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const nameBytes = utf8.encode(name);
  const transcript = concat(PAIRING_DOMAIN, hostKey, deviceKey, u32(nameBytes.length), nameBytes);
  return toHex(new Uint8Array(await subtle.sign("HMAC", key, transcript)));
}

/** Reads a pairing link (`https://RELAY/pair#v=1&host=…&secret=…&expires=…[&cert=…]`). */
export function parseLink(link) {
  const match = /^https:\/\/([^/?#@]+)\/pair#(.*)$/.exec(link.trim());
  if (!match) throw new Error("not a pairing link");
  const params = {};
  for (const pair of match[2].split("&")) {
    const at = pair.indexOf("=");
    if (at < 0) throw new Error(`the pairing link's \`${pair}\` is not valid`);
    const [name, value] = [pair.slice(0, at), pair.slice(at + 1)];
    if (!["v", "host", "secret", "expires", "cert", "relay"].includes(name) || name in params) {
      throw new Error(`the pairing link's \`${name}\` is not valid`);
    }
    params[name] = value;
  }
  if (params.v !== "1") throw new Error(`pairing link version ${params.v} is not supported`);
  for (const name of ["host", "secret", "expires"]) {
    if (!(name in params)) throw new Error(`the pairing link has no \`${name}\``);
  }
  // One relay, or up to 8 nodes of one (comma-separated), each `host:port`.
  const relays = "relay" in params ? params.relay.split(",") : [match[1]];
  if (relays.length > 8 || !relays.every((r) => /^[A-Za-z0-9.\-:[\]]{1,255}$/.test(r))) {
    throw new Error("the pairing link's `relay` is not valid");
  }
  return {
    // The relay, named apart when the page is elsewhere; else the page's own host. Of a
    // cluster's nodes, the one that served the page if it is one, else the first.
    relay: relays.includes(match[1]) ? match[1] : relays[0],
    relays,
    page: match[1],
    hostKey: keyOfId("host", params.host),
    secret: fromHex(params.secret, 32),
    expiresAtMs: Number(params.expires),
    certSha256: params.cert ? fromHex(params.cert, 32) : null,
  };
}
