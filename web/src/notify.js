// Notifications: what a push from the host says and does, shared by the service worker
// (sw.js), which shows it and answers from its buttons, and the page, which subscribes.
//
// A push carries a host event (`notice`) sealed to this device like every other, as base64url
// text: the worker opens it with the host key from pairing and drops anything else (a push
// service, or anyone who learnt the subscription, can make the worker wake but not make it
// show or answer anything). A decision from a button is signed with this browser's key and
// names the action hash the notice gave (the host signed it), so it approves exactly what the
// notification said and nothing else.
//
// Decisions: one notification per host (its tag), replaced as actions come, counting them;
// buttons only when exactly one action waits and this device may answer (an approver or an
// operator), so a tap can only answer the action it names; a device that hides detail shows
// only the count, and no buttons (nothing to approve blind). After a tap the notification
// says what came of it, without buttons; a failure says so, and opens the page.

import * as p from "./protocol.js";
import { Device, relayNodes } from "./device.js";

export const b64url = (bytes) => p.toBase64(bytes).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");

export function fromB64url(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) throw new Error("not base64url");
  const padded = text.replaceAll("-", "+").replaceAll("_", "/") + "===".slice((text.length + 3) % 4);
  return p.fromBase64(padded);
}

/**
 * The host's notice in a push (`text`), opened with the host key of `record`: `{ notice,
 * counter }` (the host's counter towards this device, for the caller to refuse one it saw or
 * older); throws on anything else.
 */
export async function openNotice(text, record, nowMs = Date.now()) {
  const frame = fromB64url(text.trim());
  const { header, message } = await p.open(frame, record.hostKey, record.publicKey, nowMs, { maxLifetimeMs: 24 * 3600 * 1000 });
  if (header.kind !== "event" || message.type !== "notice") throw new Error("not a notice");
  if (!Array.isArray(message.actions) || typeof message.waiting !== "number") throw new Error("a malformed notice");
  return { notice: message, counter: Number(header.counter) };
}

function left(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")} left`;
}

/**
 * What a notification for `notice` says: `{ title, body, buttons, tag, data }`; `host` is the
 * host key in hex (the tag, so that a host has one notification).
 */
export function noticeText(notice, host, nowMs = Date.now()) {
  const n = notice.waiting;
  const title = n === 1 ? `1 action needs you on ${notice.host_name}` : `${n} actions need you on ${notice.host_name}`;
  const first = notice.actions[0];
  let body = "";
  if (first) {
    body = `${first.summary}\nasked by ${first.requested_by}; ${left(first.expires_at_ms - nowMs)}`;
    if (n > 1) body += `\nand ${n - 1} more`;
  }
  const one = n === 1 && notice.actions.length === 1 && notice.can_decide;
  const buttons = one ? [{ action: "approve", title: "Approve" }, { action: "deny", title: "Deny" }] : [];
  const data = { host, request: one ? first.request : null, action_hash: one ? first.action_hash : null, summary: first?.summary ?? null };
  return { title, body, buttons, tag: `agent-bridge:${host}`, data };
}

/**
 * A device of this browser for one errand (the service worker's): over the relay's event
 * stream (a worker has no `EventSource`, and may not keep a socket), with counters reserved
 * in `reserve` so that it never signs with one the page used.
 */
export function errandDevice(record, reserve) {
  return new Device({
    nodes: relayNodes(record, record.relay),
    keyPair: record.keyPair,
    publicKey: record.publicKey,
    hostKey: record.hostKey,
    channel: { localStatic: record.channelKeyPair, remoteStatic: record.hostChannelKey },
    // What it receives is not kept: the page keeps its own floor.
    state: { sent: record.sent, received: record.received },
    counter: reserve,
    transport: "event-stream",
  });
}

/**
 * Signs and sends a decision on the action `data` names (as `noticeText` gave it), and waits
 * for the host to say what came of it: `{ ok, text }`.
 */
export async function decide(device, data, verdict, ms = 20000) {
  const decision = { request: data.request, action_hash: data.action_hash, verdict };
  await device.send("decision", decision);
  const answer = await device.next((m) => (m.type === "action_decided" || m.type === "error") && m.request === data.request, ms);
  if (answer.type === "error") return { ok: false, text: answer.message };
  const mine = answer.decided_by?.type === "device" && answer.decided_by.id === p.keyId("dev", device.publicKey);
  const word = answer.verdict === "approve" ? "Approved" : "Denied";
  if (mine) return { ok: true, text: `${word}: ${data.summary ?? "the action"}` };
  return { ok: true, text: `Already answered (${word.toLowerCase()}): ${data.summary ?? "the action"}` };
}
