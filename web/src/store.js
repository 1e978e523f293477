// Where a paired browser keeps itself: one IndexedDB database. Its `device` store holds one
// record, the device key pair (the CryptoKey objects themselves: the private key is not
// extractable, so not even this page can read it out, but IndexedDB can keep it), the host it
// paired with, and its counters. Its `activity` store keeps the last entries of the page's
// Activity list, so that a reload does not empty it.
//
// Device record: { keyPair, publicKey, name, hostKey, hostName, role, relay, binding, sent,
//                  received, pairedAtMs }
// Activity entry: { id, at, request, what, mine, title, detail, tone, by, output, kind } (see
//                 app.js); at most ACTIVITY_KEPT, the oldest go first.
//
// Version 1 had the `device` store only; the upgrade to 2 adds `activity` and keeps the device.

const DB = "agent-bridge";
const VERSION = 2;
const STORE = "device";
const ACTIVITY = "activity";
const KEY = "this";
export const ACTIVITY_KEPT = 200;

function opened() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(STORE)) db.createObjectStore(STORE);
      if (!db.objectStoreNames.contains(ACTIVITY)) db.createObjectStore(ACTIVITY, { keyPath: "id" }).createIndex("at", "at");
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

/** The stored device, or null for a browser that is not paired. */
export async function load() {
  return (await transaction(STORE, "readonly", (tx) => tx.objectStore(STORE).get(KEY))) ?? null;
}

/**
 * Replaces the stored device (committed when this resolves). Its counters never go back: the
 * page and the service worker each sign with counters they reserve here ([`reserveCounter`]),
 * and a record the page kept from before the worker's last one must not hand it out again (nor
 * let a notice the worker showed be shown again).
 */
export async function save(record) {
  await transaction(STORE, "readwrite", (tx) => {
    const store = tx.objectStore(STORE);
    const current = store.get(KEY);
    current.onsuccess = () => {
      record.sent = Math.max(record.sent ?? 0, current.result?.sent ?? 0);
      // Nor does the last notice the worker took (`takeNotice`).
      const notice = Math.max(record.noticeCounter ?? 0, current.result?.noticeCounter ?? 0);
      if (notice > 0) record.noticeCounter = notice;
      store.put(record, KEY);
    };
    return current;
  });
}

/**
 * Takes the host's counter of a pushed notice: true if it is newer than every notice taken
 * before (a push service that delivers one again, or an older one late, gets false).
 */
export async function takeNotice(counter) {
  let newer = false;
  await transaction(STORE, "readwrite", (tx) => {
    const store = tx.objectStore(STORE);
    const current = store.get(KEY);
    current.onsuccess = () => {
      if (!current.result || counter <= (current.result.noticeCounter ?? 0)) return;
      newer = true;
      store.put({ ...current.result, noticeCounter: counter }, KEY);
    };
    return current;
  });
  return newer;
}

/** Takes the device's next counter, in one transaction: no two callers ever get the same one. */
export async function reserveCounter() {
  let counter = null;
  await transaction(STORE, "readwrite", (tx) => {
    const store = tx.objectStore(STORE);
    const current = store.get(KEY);
    current.onsuccess = () => {
      if (!current.result) return tx.abort();
      counter = (current.result.sent ?? 0) + 1;
      store.put({ ...current.result, sent: counter }, KEY);
    };
    return current;
  });
  return counter;
}

/** Forgets the device (its key pair is gone for good) and what its page showed. */
export async function forget() {
  await transaction([STORE, ACTIVITY], "readwrite", (tx) => {
    tx.objectStore(ACTIVITY).clear();
    return tx.objectStore(STORE).delete(KEY);
  });
}

/** The kept Activity entries, oldest first. */
export async function activity() {
  return (await transaction(ACTIVITY, "readonly", (tx) => tx.objectStore(ACTIVITY).index("at").getAll())) ?? [];
}

/** Adds or replaces an Activity entry (by its `id`); the oldest beyond ACTIVITY_KEPT go. */
export async function keep(entry) {
  await transaction(ACTIVITY, "readwrite", (tx) => {
    const store = tx.objectStore(ACTIVITY);
    store.put(entry);
    const count = store.count();
    count.onsuccess = () => {
      let over = count.result - ACTIVITY_KEPT;
      if (over <= 0) return;
      store.index("at").openCursor().onsuccess = (event) => {
        const cursor = event.target.result;
        if (!cursor || over-- <= 0) return;
        cursor.delete();
        cursor.continue();
      };
    };
    return null;
  });
}
