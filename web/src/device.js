// A device in the browser: the link to the relay (authentication, pairing knock, the end-to-end
// channel, end-to-end resume) and the device's conversation with its host (signed requests and
// decisions out, host-signed events in, checked against the host key from pairing).
//
// The same code runs in Node for the tests (with its WebSocket). Keys are WebCrypto Ed25519
// keys; in the browser the private key is made non-extractable and kept in IndexedDB.

import * as p from "./protocol.js";
import * as c from "./channel.js";

const subtle = globalThis.crypto.subtle;

/** Makes a device key pair whose private half can never be read out. */
export async function newKeyPair() {
  return subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
}

export async function rawPublicKey(keyPair) {
  return new Uint8Array(await subtle.exportKey("raw", keyPair.publicKey));
}

function randomBytes(n) {
  const out = new Uint8Array(n);
  globalThis.crypto.getRandomValues(out);
  return out;
}

/**
 * The relay's event-stream fallback (relay/src/sse.rs) in the shape of a WebSocket: `send`,
 * `close`, `onmessage`, `onclose`. Events come as server-sent events; each message goes out as
 * one POST, in order. Where there is no `EventSource` (a service worker), the stream is read
 * from a `fetch` as it comes.
 */
export class EventStreamSocket {
  constructor(wsUrl) {
    const base = new URL(wsUrl);
    base.protocol = base.protocol === "ws:" ? "http:" : "https:";
    this.base = base.origin;
    this.name = null;
    this.ended = false;
    this.posting = Promise.resolve();
    if (typeof EventSource === "function") {
      this.source = new EventSource(`${this.base}/sse`);
      this.source.onmessage = (event) => this.event(event.data);
      this.source.onerror = () => this.end();
    } else {
      this.aborter = new AbortController();
      this.read().finally(() => this.end());
    }
  }

  /** Reads the stream with `fetch`: each event's `data:` lines, as `EventSource` would give them. */
  async read() {
    try {
      const response = await fetch(`${this.base}/sse`, { cache: "no-store", signal: this.aborter.signal, headers: { accept: "text/event-stream" } });
      if (!response.ok || !response.body) return;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.ended) return;
        buffer += value;
        let end;
        // Events end at a blank line; lines end at CRLF, LF or CR (the event-stream format).
        while ((end = /\r\n\r\n|\n\n|\r\r|\r\n\n|\n\r\n/.exec(buffer)) !== null) {
          const lines = buffer.slice(0, end.index).split(/\r\n|\n|\r/);
          buffer = buffer.slice(end.index + end[0].length);
          const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
          if (data.length > 0) this.event(data.join("\n"));
        }
        // One event is at most a frame in base64 and its tag: more is not an event stream.
        if (buffer.length > (MAX_PAYLOAD * 4) / 3 + 64) return;
      }
    } catch {
      // ended below
    }
  }

  event(data) {
    const [tag, body] = [data[0], data.slice(1)];
    if (tag === "s") {
      this.name = body;
      return;
    }
    const bytes = body ? p.fromBase64(body) : new Uint8Array();
    if (tag === "t") this.onmessage?.({ data: new TextDecoder().decode(bytes) });
    else if (tag === "b") this.onmessage?.({ data: bytes.buffer });
    else if (tag === "p") this.post("p", new Uint8Array());
    else if (tag === "c") this.end();
  }

  send(data) {
    if (typeof data === "string") this.post("t", new TextEncoder().encode(data));
    else this.post("b", data);
  }

  post(tag, bytes) {
    const body = p.concat(new TextEncoder().encode(tag), bytes);
    this.posting = this.posting
      .then(async () => {
        if (this.ended) return;
        const response = await fetch(`${this.base}/sse/${this.name}`, { method: "POST", body, cache: "no-store" });
        if (!response.ok) this.end();
      })
      .catch(() => this.end());
  }

  end() {
    if (this.ended) return;
    this.ended = true;
    this.source?.close();
    this.aborter?.abort();
    this.onclose?.();
  }

  close() {
    this.end();
  }
}

/** The largest resume payload taken: a whole envelope and the resume header. */
const MAX_PAYLOAD = (4 << 20) + 25;
/** A hello unanswered this long is sent again, then twice as long each time up to the most (relay-client/src/channels.rs). */
const HANDSHAKE_RETRY_MS = 3000;
const HANDSHAKE_RETRY_MAX_MS = 60000;

/**
 * The relay link of a device: one WebSocket, reconnected with backoff; on each connection a new
 * end-to-end channel with the host (web/src/channel.js; relay-client/src/channels.rs says when a
 * device opens one: each connection, the host back online, the host's "no such channel", an
 * unanswered hello); inside it, the resume layer of protocol/src/resume.rs towards the host
 * (this side's epoch; the host's stream joined at the first frame that arrives;
 * acknowledgements; everything unacknowledged sent again once a new channel is open, or after a
 * second). Nothing but handshakes goes to the host before its channel is open.
 *
 * `channel`: `{ host, device, localStatic, remoteStatic }` for a paired device (the Ed25519
 * identities as bytes, this device's X25519 key pair, the host's X25519 public key), or
 * `{ host, device, psk, token }` for one that is pairing (see `channel.js`).
 *
 * `transport`: "websocket", "event-stream" ([`EventStreamSocket`]), or "auto" (the default): a
 * WebSocket, and the event stream once two WebSocket attempts in a row closed before the relay
 * said anything (iOS Safari will not open one to a relay whose self-signed certificate the
 * person accepted for the page). On that fallback the WebSocket is tried again at each
 * reconnection and, while the event stream works, every `probeMs`: when a WebSocket hears the
 * relay, the event stream is closed and the link reconnects over a WebSocket. Nothing is lost
 * or doubled by a switch: the resume layer sends again what was not acknowledged, and each
 * side delivers a sequence number once.
 *
 * `nodes`, instead of `url` and `binding`: the nodes of a relay cluster, each `{ url, binding }`
 * (the binding may be a promise): the link connects to the first, and moves to the next
 * whenever a connection closes before the relay welcomed it (a node that died).
 */
export class RelayLink {
  constructor({ url, keyPair, publicKey, binding, nodes = null, channel, knock = null, onMessage, onNotice = () => {}, transport = "auto", probeMs = 30000 }) {
    Object.assign(this, { keyPair, publicKey, channel, knock, onMessage, onNotice, probeMs });
    this.nodes = nodes?.length ? nodes : [{ url, binding }];
    this.turn = 0;
    this.peer = channel.host;
    this.chan = null; // the open channel of this connection
    this.handshaking = null; // { id, finish, at }
    this.inbound = Promise.resolve(); // frames are opened one at a time, in order
    this.sending = Promise.resolve(); // and sealed and sent one at a time, in order
    this.eventStream = transport === "event-stream";
    this.fallback = transport === "auto" && typeof EventSource === "function";
    this.silentFailures = 0;
    this.epoch = BigInt(Date.now()) * 1000000n + BigInt(Math.floor(Math.random() * 1e6));
    this.nextSeq = 1n;
    this.unacked = []; // { peer, seq, message, sentAt, acked }
    this.streams = new Map(); // `${peerHex}:${epoch}` -> delivered (bigint)
    this.closed = false;
    this.backoff = 100;
    this.timer = setInterval(() => {
      // A hello unanswered: sent again, later each time (a channel still open stays in use).
      const hs = this.handshaking;
      if (this.ready && hs && Date.now() - hs.at >= hs.retryMs) this.handshake(Math.min(hs.retryMs * 2, HANDSHAKE_RETRY_MAX_MS));
      this.resend(false);
    }, 250);
    this.connect();
  }

  /** The node this connection is to. */
  get node() {
    return this.nodes[this.turn % this.nodes.length];
  }

  get url() {
    return this.node.url;
  }

  connect() {
    if (this.closed) return;
    const ws = this.eventStream ? new EventStreamSocket(this.url) : new WebSocket(this.url);
    this.welcomed = false;
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.ready = false;
    let heard = false;
    ws.onmessage = (event) => {
      heard = true;
      this.silentFailures = 0;
      this.inbound = this.inbound.then(() => this.received(event.data)).catch((e) => this.onNotice({ type: "error", error: String(e) }));
    };
    ws.onclose = () => {
      // The channel stays in use on the next connection until a new one is answered.
      this.ready = false;
      this.handshaking = null;
      if (this.closed || ws !== this.ws) return;
      if (!heard && this.fallback && !this.eventStream && ++this.silentFailures >= 2) {
        this.eventStream = true;
        this.onNotice({ type: "transport", transport: "event-stream" });
      } else if (this.fallback && this.eventStream) {
        // The fallback was for that WebSocket, then: the next connection tries one again.
        this.eventStream = false;
        this.silentFailures = 0;
      }
      this.onNotice({ type: "link", up: false });
      // Not welcomed: the next node (a whole round of failures waits longer each time).
      if (!this.welcomed) this.turn++;
      const round = this.nodes.length === 1 || this.turn % this.nodes.length === 0;
      setTimeout(() => this.connect(), round ? this.backoff * (0.5 + Math.random() / 2) : 0);
      if (round) this.backoff = Math.min(this.backoff * 2, 5000);
    };
  }

  async received(data) {
    if (typeof data === "string") {
      const control = JSON.parse(data);
      if (control.type === "challenge") {
        const nonce = p.fromHex(control.nonce, 32);
        const signature = await subtle.sign("Ed25519", this.keyPair.privateKey, p.authMessage(nonce, "device", await this.node.binding));
        this.ws.send(JSON.stringify({ type: "hello", side: "device", key: p.toHex(this.publicKey), signature: p.toHex(new Uint8Array(signature)) }));
      } else if (control.type === "welcome") {
        this.backoff = 100;
        this.welcomed = true;
        if (this.knock) this.ws.send(JSON.stringify({ type: "knock", host: p.toHex(this.knock.host), token: this.knock.token }));
        this.ready = true;
        this.onNotice({ type: "link", up: true, transport: this.transport });
        await this.handshake();
        if (this.eventStream && this.fallback) {
          clearInterval(this.probing);
          this.probing = setInterval(() => this.probe(), this.probeMs);
        }
      } else {
        // The host back online may have restarted and forgotten this channel (unless a hello is
        // under way; a device that is pairing keeps its channel: see relay-client/src/channels.rs).
        const fresh = this.handshaking && Date.now() - this.handshaking.at < 1000;
        if (control.type === "host_presence" && control.online && control.host === p.toHex(this.peer) && !this.channel.psk && !fresh) await this.handshake();
        this.onNotice(control);
      }
      return;
    }
    const routed = p.splitRelayFrame(new Uint8Array(data));
    if (!routed || p.toHex(routed.peer) !== p.toHex(this.peer)) return;
    let frame;
    try {
      frame = c.decodeFrame(routed.payload);
    } catch (e) {
      return this.onNotice({ type: "channel_refused", error: String(e.message ?? e) });
    }
    const hs = this.handshaking;
    if ((frame.kind === "answer" || frame.kind === "pair_answer") && hs?.finish && c.sameId(frame.id, hs.id) && (frame.kind === "pair_answer") === Boolean(this.channel.psk)) {
      this.handshaking = null;
      let chan;
      try {
        chan = await hs.finish(frame.message);
      } catch (e) {
        // An answer the relay made up spends this handshake (noise.js): start another.
        this.onNotice({ type: "channel_refused", error: String(e.message ?? e) });
        return this.handshake();
      }
      // The channel it replaces is kept for what the host still seals in it.
      this.previous = this.chan;
      this.chan = chan;
      this.chanAt = Date.now();
      // The first chunk confirms the channel to the host (relay-client/src/channels.rs): an
      // empty payload, before anything else.
      this.confirmedAt = Date.now();
      this.sealed(new Uint8Array(0));
      this.onNotice({ type: "channel", up: true });
      this.resend(true);
    } else if (frame.kind === "data") {
      // Frames for another channel are another page's (or process's) of the same key.
      const old = this.previous && c.sameId(frame.id, this.previous.id);
      const chan = this.chan && c.sameId(frame.id, this.chan.id) ? this.chan : old ? this.previous : null;
      if (!chan) return;
      let payload;
      try {
        payload = await chan.open(frame.nonce, frame.ciphertext);
      } catch (e) {
        return this.onNotice({ type: "channel_refused", error: String(e.message ?? e) });
      }
      if (payload) this.resumed(routed.peer, payload);
      // The host still seals in the replaced channel: the new one's confirmation did not reach
      // it. Sent again, at most once a second.
      if (old && this.chan && Date.now() - this.confirmedAt >= 1000) {
        this.confirmedAt = Date.now();
        this.sealed(new Uint8Array(0));
      }
    } else if (frame.kind === "unknown") {
      if (this.chan && c.sameId(frame.id, this.chan.id) && hs) {
        // The host forgot the channel in use; the hello under way makes another.
        this.chan = null;
        return;
      }
      const ours = (this.chan && c.sameId(frame.id, this.chan.id)) || (hs && c.sameId(frame.id, hs.id));
      const any = frame.id.every((b) => b === 0) && !hs && (!this.chan || Date.now() - this.chanAt >= 2000);
      if (ours || any) await this.handshake();
    }
  }

  /** Opens a new channel with the host on this connection (one still open stays in use until then). */
  async handshake(retryMs = HANDSHAKE_RETRY_MS) {
    if (!this.ready) return;
    const id = randomBytes(8);
    if (id.every((b) => b === 0)) id[0] = 1;
    const ws = this.ws;
    const started = { id, at: Date.now(), finish: null, retryMs };
    this.handshaking = started;
    const { hello, finish } = await c.initiate({ ...this.channel, id, incarnation: this.epoch, maxPayload: MAX_PAYLOAD });
    if (this.handshaking !== started || this.ws !== ws || !this.ready) return;
    started.finish = finish;
    ws.send(p.relayFrame(this.peer, hello));
  }

  /** A resume payload from the channel. */
  resumed(from, payload) {
    const frame = p.decodeResume(payload);
    if (frame.kind === "ack") {
      if (frame.epoch === this.epoch) {
        while (this.unacked.length > 0 && this.unacked[0].seq <= frame.seq) this.unacked.shift().acked();
      }
      return;
    }
    if (frame.kind !== "data") return;
    const { epoch, seq, base } = frame;
    const key = `${p.toHex(from)}:${epoch}`;
    const known = this.streams.has(key);
    // A stream this side has not seen is joined where it arrives (resume.rs: Join::AtFirstFrame).
    let delivered = known ? this.streams.get(key) : (this.followed ? base - 1n : seq - 1n);
    this.followed = true;
    // What the host no longer holds (below `base`) will never come: another page, or this
    // browser's service worker, acknowledged it (protocol/src/resume.rs). Go on from there.
    if (delivered < base - 1n) delivered = base - 1n;
    let now = delivered;
    if (seq === delivered + 1n) {
      now = seq;
      this.streams.set(key, now);
      this.onMessage(from, frame.message.slice());
    } else {
      this.streams.set(key, delivered);
    }
    this.ack(from, epoch, now);
  }

  ack(peer, epoch, seq) {
    this.sealed(p.encodeResume({ kind: "ack", epoch, seq }));
  }

  /** Seals a resume payload in this connection's channel and sends it, in order. */
  sealed(payload) {
    const { chan, ws } = this;
    if (!this.ready || !chan) return;
    this.sending = this.sending
      .then(async () => {
        const frames = await chan.seal(payload);
        if (this.chan !== chan || this.ws !== ws) return;
        for (const frame of frames) ws.send(p.relayFrame(this.peer, frame));
      })
      .catch((e) => this.onNotice({ type: "error", error: String(e) }));
  }

  /** "websocket" or "event-stream": what the link uses (or tries) now. */
  get transport() {
    return this.eventStream ? "event-stream" : "websocket";
  }

  /**
   * Queues a message for `peer`; it is sent now if the link is up, and again until
   * acknowledged. Resolves when the peer acknowledges it (never, if the link is closed first).
   */
  send(peer, message) {
    let acked;
    const done = new Promise((resolve) => (acked = resolve));
    this.unacked.push({ peer, seq: this.nextSeq++, message, sentAt: null, acked });
    this.resend(false);
    return done;
  }

  /** On the event-stream fallback: tries a WebSocket, and moves to it if the relay answers. */
  probe() {
    if (this.closed || !this.eventStream || !this.fallback) {
      clearInterval(this.probing);
      return;
    }
    if (this.probeOpen) return;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      return;
    }
    this.probeOpen = true;
    const done = (works) => {
      if (!ws) return;
      ws.onmessage = ws.onclose = null;
      ws.close();
      ws = null;
      this.probeOpen = false;
      clearTimeout(timer);
      if (works && this.eventStream && !this.closed) {
        clearInterval(this.probing);
        // Its close reconnects, over a WebSocket this time.
        this.ws.close();
      }
    };
    const timer = setTimeout(() => done(false), 10000);
    ws.onmessage = () => done(true);
    ws.onclose = () => done(false);
  }

  resend(all) {
    if (!this.ready || !this.chan || this.unacked.length === 0) return;
    const base = this.unacked[0].seq;
    const now = Date.now();
    for (const m of this.unacked) {
      if (all || m.sentAt === null || now - m.sentAt >= 1000) {
        m.sentAt = now;
        this.sealed(p.encodeResume({ kind: "data", epoch: this.epoch, seq: m.seq, base, message: m.message }));
      }
    }
  }

  close() {
    this.closed = true;
    clearInterval(this.timer);
    clearInterval(this.probing);
    this.ws?.close();
  }
}

/**
 * The relay nodes a paired `record` reaches its host through, each `{ url, binding }`: the node
 * it paired through first, then the others its link named (a cluster's). The binding of a
 * pinned certificate is every node's (they share it); else each node's is its own origin's.
 */
export function relayNodes(record, here) {
  const first = record.relay ?? here;
  const others = (record.relays ?? []).filter((r) => r !== first);
  const bare = (host) => host.toLowerCase().replace(/:443$/, "");
  return [first, ...others].map((relay) => ({
    url: `wss://${relay}/ws`,
    binding: relay === first || record.pinned ? record.binding : p.originBinding(`https://${bare(relay)}`),
  }));
}

/**
 * A paired (or pairing) device talking to its host. `state` is where counters live
 * ({ sent, received }); `persist(state)` keeps it (the browser: IndexedDB; the tests: memory)
 * and is awaited before a counter is used, so a reload never signs two messages with one
 * counter. `channel` is the end-to-end channel's keys: `{ localStatic, remoteStatic }` (this
 * device's X25519 key pair, the host's public key) once paired, `{ psk, token }` while pairing
 * (the identities are `hostKey` and `publicKey`). `notice` receives notices:
 * `{ type: "link", up, transport }` as the relay link comes and goes, `{ type: "channel", up }`
 * when a channel with the host opens, `{ type: "transport", transport }` when it falls back to
 * the event stream, `{ type: "channel_refused", error }` for a frame the channel refused
 * (tampered, replayed), `{ type: "error", error }`, and the relay's own control messages
 * (`undeliverable`, `refused`, `host_presence`). `nodes` ([`relayNodes`]) instead of
 * `relayUrl` and `binding`: a relay cluster's nodes, tried in turn.
 */
export class Device {
  constructor({ relayUrl, binding, nodes = null, keyPair, publicKey, hostKey, state, channel, knock = null, persist = async () => {}, counter = null, notice = () => {}, transport = "auto" }) {
    Object.assign(this, { keyPair, publicKey, hostKey, state, persist, notice });
    /** The next counter to sign with, stored before it is used (one shared with another
     * context of this browser, such as its service worker, where it is given). */
    this.counter = counter ?? (async () => {
      this.state.sent = (this.state.sent ?? 0) + 1;
      await this.persist(this.state);
      return this.state.sent;
    });
    // Nothing at or below what an earlier run accepted is accepted again.
    this.floor = BigInt(state.received ?? 0);
    this.highest = this.floor;
    this.seen = new Set();
    this.waiters = [];
    this.events = [];
    this.queue = Promise.resolve();
    /** When set, takes each verified host event instead of the queue that `next` reads. */
    this.onEvent = null;
    this.link = new RelayLink({
      url: relayUrl,
      keyPair,
      publicKey,
      binding,
      nodes,
      knock,
      transport,
      channel: { host: hostKey, device: publicKey, ...channel },
      // One at a time, in arrival order (checking a signature is asynchronous).
      onMessage: (from, bytes) => (this.queue = this.queue
          .then(() => this.incoming(from, bytes))
          .catch((e) => this.notice({ type: "error", error: String(e) }))),
      onNotice: (notice) => this.notice(notice),
    });
  }

  async incoming(from, bytes) {
    if (p.toHex(from) !== p.toHex(this.hostKey)) return;
    let opened;
    try {
      opened = await p.open(bytes, this.hostKey, this.publicKey, Date.now());
    } catch {
      return; // not from the host, not for us, or altered: dropped
    }
    // The replay guard: each counter once, nothing at or below what an earlier run accepted.
    const counter = opened.header.counter;
    if (counter <= this.floor || this.seen.has(counter)) return;
    this.seen.add(counter);
    if (counter > this.highest) {
      this.highest = counter;
      this.state.received = Number(counter);
      // Stored once a burst (a session's output) is over, and when the device closes.
      clearTimeout(this.saving);
      this.saving = setTimeout(() => this.persist(this.state).catch(() => {}), 250);
    }
    this.onEvent ? this.onEvent(opened.message) : this.events.push(opened.message);
    for (const w of this.waiters.splice(0)) w();
  }

  /** The next message from the host that `match` accepts, within `ms`. */
  async next(match, ms = 30000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const at = this.events.findIndex(match);
      if (at >= 0) return this.events.splice(at, 1)[0];
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("no answer from the host in time");
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /**
   * Seals and queues a message of `kind` to the host; resolves once it is queued (its counter
   * stored), to `{ acked }`, a promise that resolves when the host's side of the link has it.
   */
  async send(kind, message) {
    const counter = await this.counter();
    const now = Date.now();
    const frame = await p.seal(this.keyPair.privateKey, {
      kind,
      sender: this.publicKey,
      recipient: this.hostKey,
      counter,
      issuedAtMs: now,
      expiresAtMs: now + 120000,
    }, message);
    return { acked: this.link.send(this.hostKey, frame) };
  }

  /** A fresh request id. */
  static requestId() {
    return p.toHex(randomBytes(16));
  }

  close() {
    clearTimeout(this.saving);
    this.persist(this.state).catch(() => {});
    this.link.close();
  }
}

/**
 * Pairs a new device with the host of `link` (a parsed pairing link), through the pairing
 * channel that the link's secret keys: sends the hello proving the secret (with `channelKey`,
 * this device's static channel public key), and waits for the host's answer (signed by the host
 * key from the link), which carries the host's channel key. Fails at once when the relay refuses
 * the link's offer or has no route to the host.
 */
export async function pair({ link, name, relayUrl, binding, keyPair, channelKey, ms = 60000, notice = () => {}, transport = "auto" }) {
  const publicKey = await rawPublicKey(keyPair);
  const token = await p.pairingToken(link.secret);
  const channel = { psk: await c.pairingPsk(link.secret), token: p.fromHex(token, 32) };
  const proof = await p.pairingProof(link.secret, link.hostKey, publicKey, name);
  const state = { sent: 0, received: 0 };
  let fail;
  const failed = new Promise((_, reject) => (fail = reject));
  failed.catch(() => {});
  const device = new Device({
    relayUrl,
    binding,
    keyPair,
    publicKey,
    hostKey: link.hostKey,
    state,
    knock: { host: link.hostKey, token },
    channel,
    transport,
    notice: (n) => {
      notice(n);
      if (n.type === "refused") fail(new Error(`the relay refused: ${n.reason} (the link was used, or it expired)`));
      if (n.type === "undeliverable") {
        fail(new Error(n.offline ? "the host is not connected to the relay" : "the relay has no route to that host for this link (used or expired)"));
      }
    },
  });
  await device.send("pairing", { type: "hello", token, name, proof, channel_key: p.toHex(channelKey) });
  try {
    const answer = await Promise.race([device.next((m) => m.type === "accepted" || m.type === "rejected", ms), failed]);
    if (answer.type === "rejected") throw new Error(`the host refused the pairing: ${answer.reason}`);
    if (typeof answer.channel_key !== "string") throw new Error("the host did not give its channel key (upgrade the host, then pair again)");
    const hostChannelKey = p.fromHex(answer.channel_key, 32);
    return { role: answer.role, hostName: answer.host_name, hostChannelKey, publicKey, state };
  } finally {
    device.close();
  }
}
