// Where a paired browser keeps itself: one IndexedDB record holding the device key pair (the
// CryptoKey objects themselves: the private key is not extractable, so not even this page can
// read it out, but IndexedDB can keep it), the host it paired with, and its counters.
//
// Record: { keyPair, publicKey, name, hostKey, hostName, role, relay, binding, sent, received,
//           pairedAtMs }

const DB = "agent-bridge";
const STORE = "device";
const KEY = "this";

function opened() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error ?? new Error("IndexedDB is not available"));
  });
}

async function transaction(mode, act) {
  const db = await opened();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = act(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("the browser's storage refused the write"));
    });
  } finally {
    db.close();
  }
}

/** The stored device, or null for a browser that is not paired. */
export async function load() {
  return (await transaction("readonly", (s) => s.get(KEY))) ?? null;
}

/** Replaces the stored device (committed when this resolves). */
export async function save(record) {
  await transaction("readwrite", (s) => s.put(record, KEY));
}

/** Forgets the device: its key pair is gone for good. */
export async function forget() {
  await transaction("readwrite", (s) => s.delete(KEY));
}
