// The service worker: notifications of what needs you while the page is closed, and Approve or
// Deny from them (notify.js says what they say and why). It runs as a module
// (`navigator.serviceWorker.register("/sw.js", { type: "module" })`).
//
// On a push: the host's notice is opened (anything else, and a notice seen before, is
// dropped), shown and acknowledged to the host as shown over the relay's event stream; when a
// page of this origin is in view, the page shows it and tells the host itself. On a tap of Approve or
// Deny: the decision is signed with this browser's key (the private half never leaves
// IndexedDB), sent the same way, and the notification then says what the host made of it.
// Every errand is one `Device` for as long as the event's `waitUntil` keeps the worker.

import * as store from "./store.js";
import { decide, errandDevice, noticeText, openNotice } from "./notify.js";
import { Device } from "./device.js";

/** Requests this worker answered already (a second tap does nothing); the last few hundred. */
const answered = new Set();
const ANSWERED_KEPT = 256;

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
self.addEventListener("push", (event) => event.waitUntil(onPush(event.data ? event.data.text() : "")));
self.addEventListener("notificationclick", (event) => event.waitUntil(onClick(event.notification, event.action)));

async function pageInView() {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  return windows.some((w) => w.visibilityState === "visible");
}

/** A record as the worker uses it: paired with channel keys, with its relay. */
function usable(record) {
  if (!record?.channelKeyPair || !record.hostChannelKey) return null;
  return { ...record, relay: record.relay ?? self.location.host };
}

/**
 * The hosts a push to this registration may be from: the one its scope names (the page
 * registers the worker once per host, at `/hosts/HEX/`, since a registration holds one push
 * subscription); for a registration of before (at `/`, one host per browser), every host.
 */
async function candidates() {
  const named = /\/hosts\/([0-9a-f]{64})\/$/.exec(self.registration.scope);
  const records = named ? [await store.load(named[1])] : await store.all();
  return records.map(usable).filter(Boolean);
}

/** One errand with the host: `act(device)`, then the device closes. */
async function errand(record, act) {
  const device = errandDevice(record, () => store.reserveCounter(store.hostOf(record)));
  try {
    return await act(device);
  } finally {
    device.close();
  }
}

/** A push: `{ shown }`, or `{ dropped: why }` for anything that is not the host's notice. */
export async function onPush(text) {
  const records = await candidates();
  if (records.length === 0) {
    // Nobody here to show it to (the browser forgot its pairing): no more pushes.
    await (await self.registration.pushManager.getSubscription())?.unsubscribe().catch(() => {});
    return { dropped: "not paired" };
  }
  // The host whose key sealed it to the device key of its pairing.
  let opened;
  let record;
  const failures = [];
  for (const candidate of records) {
    try {
      opened = await openNotice(text, candidate);
      record = candidate;
      break;
    } catch (e) {
      failures.push(String(e.message ?? e));
    }
  }
  if (!opened) return { dropped: failures.join("; ") };
  const { notice, counter } = opened;
  // Each notice once: one delivered again, or an older one late, is not news.
  if (!(await store.takeNotice(store.hostOf(record), counter))) return { dropped: "a notice seen before, or older than one seen" };
  // A page in view shows it, and tells the host itself.
  if (await pageInView()) return { shown: false, notice };
  const n = noticeText(notice, store.hostOf(record));
  await self.registration.showNotification(n.title, { body: n.body, tag: n.tag, renotify: true, requireInteraction: n.buttons.length > 0, actions: n.buttons, data: n.data });
  // Shown: every action it counted (those it names, or none when it names none, stand for
  // the whole notice at the host).
  const receipt = { type: "receipt", id: Device.requestId(), requests: notice.actions.map((a) => a.request), stage: "shown" };
  await errand(record, async (device) => {
    const { acked } = await device.send("request", receipt);
    await Promise.race([acked, new Promise((resolve) => setTimeout(resolve, 10000))]);
  }).catch(() => {});
  return { shown: true, notice };
}

async function openPage() {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  if (windows.length > 0) return windows[0].focus();
  return self.clients.openWindow("/");
}

/** A tap on a notification (`action` is the button, empty for the notification itself). */
export async function onClick(notification, action) {
  const data = notification.data ?? {};
  if ((action !== "approve" && action !== "deny") || !data.request) {
    notification.close();
    return openPage();
  }
  if (answered.has(data.request)) return { outcome: "already answered here" };
  if (answered.size >= ANSWERED_KEPT) answered.delete(answered.values().next().value);
  answered.add(data.request);
  const record = /^[0-9a-f]{64}$/.test(data.host ?? "") ? usable(await store.load(data.host)) : null;
  let result;
  try {
    if (!record) throw new Error("this browser is no longer paired");
    result = await errand(record, (device) => decide(device, data, action));
  } catch (e) {
    result = { ok: false, text: String(e.message ?? e) };
  }
  const title = result.ok ? result.text : `Could not answer: ${result.text}`;
  await self.registration.showNotification(title, { tag: notification.tag, body: result.ok ? "" : "Tap to open the page.", data: { host: data.host } });
  if (!result.ok) {
    // Not answered: another tap may try again (the host takes one answer whatever comes).
    answered.delete(data.request);
    await openPage().catch(() => {});
  }
  return { outcome: result.ok ? "answered" : "failed", text: title };
}

// For tests driving the worker (DevTools' `ServiceWorker.deliverPushMessage` and a tap).
self.agentBridge = { onPush, onClick };
