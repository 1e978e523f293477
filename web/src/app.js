// The page: pairing from the link's fragment, then the inbox (what needs an answer on every
// paired host, then each host's status, sessions, requests, activity). Every tap that asks the host for something becomes a
// message signed with this browser's key; the host decides. Nothing here is trusted by the
// host, and nothing the relay sends is shown unless the host's key signed it (the relay's own
// hints, such as whether the host is connected, are shown as hints and decide nothing).

import * as store from "./store.js";
import { pairingScreen } from "./pairing.js";
import { Inbox } from "./inbox.js";
import { fail, h, linkState, tick } from "./ui.js";

setInterval(tick, 1000);

// --- start -----------------------------------------------------------------------------------

async function start(href) {
  let records;
  try {
    records = await store.all();
  } catch (e) {
    return fail("This browser cannot keep a key", `Its storage (IndexedDB) is not available: ${e.message}. A private window may block it.`);
  }
  const url = new URL(href, location.href);
  // The link as printed (a `?transport=` the person added is not part of it).
  if (url.pathname === "/pair" && url.hash.length > 1) return pairingScreen(`${url.origin}${url.pathname}${url.hash}`, records, start);
  if (records.length === 0) {
    linkState.textContent = "Not paired";
    return fail(
      "This browser is not paired",
      "At the host, run `agent-host pair` (or `agent-host up`), then open the link it prints, or scan its QR code, on this device.",
    );
  }
  // Pairings from before the end-to-end channel: the host talks to them no more.
  const stale = records.filter((record) => !record.channelKeyPair || !record.hostChannelKey);
  const usable = records.filter((record) => !stale.includes(record));
  if (usable.length > 0) return new Inbox(usable, stale);
  const old = stale[0];
  const again = h("button", { type: "button" }, "Forget this pairing");
  again.addEventListener("click", async () => {
    await store.forget(store.hostOf(old));
    start("/");
  });
  return fail(
    "This browser was paired before the end-to-end channel",
    `It has no channel keys for ${old.hostName}, and the host talks to no device without them. Forget this pairing, then pair again with a new link from \`agent-host pair\`.`,
    h("div", { class: "buttons" }, again),
  );
}

start(location.href);
