// Where a paired browser keeps itself: one IndexedDB database. Its `device` store holds one
// record for each host this browser is paired with, under the host key in hex ([`hostOf`]):
// the device key pair made for that host alone (the CryptoKey objects themselves: the private
// key is not extractable, so not even this page can read it out, but IndexedDB can keep it),
// the host, and the counters. Each host has its own keys and channel, so nothing of one
// pairing serves another. Its `activity` store keeps the last entries of each host's Activity
// list, so that a reload does not empty it.
//
// Device record: { keyPair, publicKey, name, hostKey, hostName, role, relay, binding, sent,
//                  received, pairedAtMs, channelKeyPair, hostChannelKey, noticeCounter,
//                  hideDetail }
// Activity entry: { id, host, at, request, what, mine, title, detail, tone, by, output, kind }
//                 (see host-screen.js), kept under `HOST/id` (so that no host's entry can
//                 replace another's); at most ACTIVITY_KEPT per host, the oldest go first.
//
// Version 1 had the `device` store only; 2 added `activity`; 3 keeps a record per host (2 kept
// one, under "this", which the upgrade moves under its host, with its Activity).

const DB = "agent-bridge";
const VERSION = 3;
const STORE = "device";
const ACTIVITY = "activity";
const OLD_KEY = "this";
export const ACTIVITY_KEPT = 200;

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

/** The key a host's record is kept under: its host key in hex. */
export function hostOf(record) {
  return hex(record.hostKey);
}

function opened() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, VERSION);
    request.onupgradeneeded = (event) => {
      const db = request.result;
      const tx = request.transaction;
      if (!db.objectStoreNames.contains(STORE)) db.createObjectStore(STORE);
      const activity = db.objectStoreNames.contains(ACTIVITY) ? tx.objectStore(ACTIVITY) : db.createObjectStore(ACTIVITY, { keyPath: "id" });
      if (!activity.indexNames.contains("at")) activity.createIndex("at", "at");
      // A host's entries in the order they came.
      if (!activity.indexNames.contains("host-at")) activity.createIndex("host-at", ["host", "at"]);
      if (event.oldVersion >= 1 && event.oldVersion < 3) {
        // The one record of version 2 goes under its host, and its Activity with it.
        const devices = tx.objectStore(STORE);
        const old = devices.get(OLD_KEY);
        old.onsuccess = () => {
          const record = old.result;
          if (!record?.hostKey) return;
          const host = hostOf(record);
          devices.put(record, host);
          devices.delete(OLD_KEY);
          activity.openCursor().onsuccess = (e) => {
            const cursor = e.target.result;
            if (!cursor) return;
            if (!cursor.value.host) {
              cursor.delete();
              activity.put({ ...cursor.value, host, id: `${host}/${cursor.value.id}` });
            }
            cursor.continue();
          };
        };
      }
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error ?? new Error("IndexedDB is not available"));
  });
}

async function transaction(stores, mode, act) {
  const db = await opened();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(stores, mode);
      const request = act(tx);
      tx.oncomplete = () => resolve(request?.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("the browser's storage refused the write"));
    });
  } finally {
    db.close();
  }
}

/** The keys of `host`'s Activity entries in the "host-at" index: all of them, oldest first. */
const entriesOf = (host) => IDBKeyRange.bound([host, -Infinity], [host, Infinity]);

/** Every host this browser is paired with (its record), oldest pairing first. */
export async function all() {
  const records = (await transaction(STORE, "readonly", (tx) => tx.objectStore(STORE).getAll())) ?? [];
  return records.filter((r) => r?.hostKey).sort((a, b) => (a.pairedAtMs ?? 0) - (b.pairedAtMs ?? 0));
}

/** The record for `host` (hex), or null. */
export async function load(host) {
  return (await transaction(STORE, "readonly", (tx) => tx.objectStore(STORE).get(host))) ?? null;
}

/**
 * Replaces the stored record of its host (committed when this resolves); a new one only with
 * `create` (pairing): a page still open on a host forgotten meanwhile cannot bring it back. Its
 * counters never go back: the page and the service worker each sign with counters they reserve
 * here ([`reserveCounter`]), and a record the page kept from before the worker's last one must
 * not hand it out again (nor let a notice the worker showed be shown again).
 */
export async function save(record, { create = false } = {}) {
  const host = hostOf(record);
  await transaction(STORE, "readwrite", (tx) => {
    const store = tx.objectStore(STORE);
    const current = store.get(host);
    current.onsuccess = () => {
      if (!current.result && !create) return;
      record.sent = Math.max(record.sent ?? 0, current.result?.sent ?? 0);
      // Nor does the last notice the worker took (`takeNotice`).
      const notice = Math.max(record.noticeCounter ?? 0, current.result?.noticeCounter ?? 0);
      if (notice > 0) record.noticeCounter = notice;
      store.put(record, host);
    };
    return current;
  });
}

/** Changes the stored record of `host` in one transaction: `change(record)` (none: aborted). */
async function update(host, change) {
  await transaction(STORE, "readwrite", (tx) => {
    const store = tx.objectStore(STORE);
    const current = store.get(host);
    current.onsuccess = () => {
      if (!current.result) return tx.abort();
      const changed = change(current.result);
      if (changed) store.put(changed, host);
    };
    return current;
  });
}

/**
 * Takes the counter of a notice pushed by `host`: true if it is newer than every notice taken
 * before (a push service that delivers one again, or an older one late, gets false).
 */
export async function takeNotice(host, counter) {
  let newer = false;
  await update(host, (record) => {
    if (counter <= (record.noticeCounter ?? 0)) return null;
    newer = true;
    return { ...record, noticeCounter: counter };
  }).catch(() => {});
  return newer;
}

/** Takes the next counter towards `host`, in one transaction: no two callers get the same. */
export async function reserveCounter(host) {
  let counter = null;
  await update(host, (record) => {
    counter = (record.sent ?? 0) + 1;
    return { ...record, sent: counter };
  });
  return counter;
}

/** Forgets the pairing with `host` (its key pair is gone for good) and its Activity. */
export async function forget(host) {
  await transaction([STORE, ACTIVITY], "readwrite", (tx) => {
    tx.objectStore(ACTIVITY).index("host-at").openCursor(entriesOf(host)).onsuccess = (e) => {
      const cursor = e.target.result;
      if (!cursor) return;
      cursor.delete();
      cursor.continue();
    };
    return tx.objectStore(STORE).delete(host);
  });
}

/** The kept Activity entries of `host`, oldest first. */
export async function activity(host) {
  const kept = (await transaction(ACTIVITY, "readonly", (tx) => tx.objectStore(ACTIVITY).index("host-at").getAll(entriesOf(host)))) ?? [];
  return kept.map((entry) => ({ ...entry, id: entry.id.slice(host.length + 1) }));
}

/** Adds or replaces an Activity entry (by its `id`); its host's oldest beyond ACTIVITY_KEPT go. */
export async function keep(entry) {
  await transaction(ACTIVITY, "readwrite", (tx) => {
    const store = tx.objectStore(ACTIVITY);
    store.put({ ...entry, id: `${entry.host}/${entry.id}` });
    const index = store.index("host-at");
    const count = index.count(entriesOf(entry.host));
    count.onsuccess = () => {
      let over = count.result - ACTIVITY_KEPT;
      if (over <= 0) return;
      index.openCursor(entriesOf(entry.host)).onsuccess = (event) => {
        const cursor = event.target.result;
        if (!cursor || over-- <= 0) return;
        cursor.delete();
        cursor.continue();
      };
    };
    return null;
  });
}
