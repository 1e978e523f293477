// Pairing this browser from a link's fragment: a new key pair (not extractable), its
// fingerprint to compare at the machine, the pairing handshake, and the record kept.

import * as p from "./protocol.js";
import { agree, generateKeyPair as newChannelKeyPair } from "./noise.js";
import { newKeyPair, pair, rawPublicKey } from "./device.js";
import * as store from "./store.js";
import { transport, linkState, h, show, fail, tick } from "./ui.js";

// --- pairing ---------------------------------------------------------------------------------

function sameHost(a, b) {
  const bare = (host) => host.toLowerCase().replace(/:443$/, "");
  return bare(a) === bare(b);
}

export async function pairingScreen(href, existing, start) {
  let link;
  try {
    link = p.parseLink(href);
  } catch (e) {
    history.replaceState(null, "", `/pair${location.search}`);
    return fail("This pairing link is not valid", `${e.message}. Run \`agent-host pair\` again and open the new link.`);
  }
  // The secret stays out of the address bar, the history and any bookmark.
  history.replaceState(null, "", `/pair${location.search}`);
  linkState.textContent = "Pairing";
  if (!sameHost(link.page, location.host)) {
    return fail("This link is for another page", `It names ${link.page}, but this page came from ${location.host}. Open the link as it was printed.`);
  }
  if (link.expiresAtMs <= Date.now()) {
    return fail("This pairing link expired", `It expired at ${new Date(link.expiresAtMs).toLocaleTimeString()}. Run \`agent-host pair\` again for a new one.`);
  }
  // Each host once: a link for a host this browser is paired with replaces that pairing (its
  // key is deleted); a link for another host adds one, and the others stay as they are.
  const same = existing.find((record) => p.toHex(record.hostKey) === p.toHex(link.hostKey));
  if (same) {
    const again = h("button", { type: "button" }, "Forget it and pair with this link");
    again.addEventListener("click", async () => {
      await store.forget(store.hostOf(same));
      start(href);
    });
    return fail(
      "This browser is already paired with this host",
      `It is paired with ${same.hostName}. To pair it again with this link, forget the current pairing with it (its key is deleted; other hosts stay).`,
      h("div", { class: "buttons" }, again, h("button", { type: "button", onclick: () => location.assign("/") }, "Keep it")),
    );
  }
  let keyPair;
  try {
    keyPair = await newKeyPair();
  } catch {
    return fail("This browser cannot make the key it needs", "It has no WebCrypto Ed25519. A current Chrome, Edge, Firefox or Safari has it.");
  }
  const publicKey = await rawPublicKey(keyPair);
  const fingerprint = await p.fingerprint(publicKey);
  const hostId = p.keyId("host", link.hostKey);
  const name = h("input", { type: "text", id: "device-name", name: "name", required: true, maxlength: "64", autocomplete: "off", value: /Mobi|Android|iPhone/.test(navigator.userAgent) ? "Phone" : "Browser" });
  const button = h("button", { type: "submit", class: "approve" }, "Pair this browser");
  const progress = h("div", { role: "status", "aria-live": "polite" });
  const left = h("span", { "data-expires": link.expiresAtMs });
  const form = h(
    "form",
    {},
    h("h2", {}, "Pair this browser"),
    h("p", {}, "With the host ", h("code", { class: "mono" }, hostId.slice(0, 20) + "…"), ". The link works once; ", left, " left."),
    existing.length > 0 ? h("p", {}, `It is added beside the ${existing.length === 1 ? "host" : "hosts"} this browser is paired with (${existing.map((r) => r.hostName).join(", ")}), with a key of its own.`) : null,
    // A relay apart from this page is the link's to name: say which, so that a link made to
    // send this browser elsewhere is seen for what it is.
    sameHost(link.relay, location.host) ? null : h("p", {}, "Through the relay ", h("code", { class: "mono", id: "link-relay" }, link.relay), "."),
    h("label", { for: "device-name" }, "Name for this browser"),
    name,
    h("p", {}, "This browser's fingerprint (the host shows it when it asks):"),
    h("p", { class: "fingerprint mono", id: "my-fingerprint" }, fingerprint),
    h("div", { class: "buttons" }, button),
    progress,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    name.disabled = true;
    progress.replaceChildren(
      h("p", {}, "Waiting for the host. At its terminal, check that it shows the fingerprint ", h("strong", {}, fingerprint), " before you answer yes."),
    );
    // The relay's login is bound to that relay: its pinned certificate, or its own origin
    // (which the browser checked over TLS), never only to this page's.
    const binding = link.certSha256 ?? (await p.originBinding(`https://${link.relay.toLowerCase().replace(/:443$/, "")}`));
    try {
      // The end-to-end channel's static key: X25519, its private half not extractable.
      const channelKeyPair = await newChannelKeyPair().catch((e) => {
        throw new Error(e?.name === "NotSupportedError" ? "this browser has no WebCrypto X25519, which the end-to-end channel needs (a current Chrome, Edge, Firefox or Safari has it)" : String(e?.message ?? e));
      });
      const paired = await pair({ link, name: name.value.trim() || "Browser", relayUrl: `wss://${link.relay}/ws`, binding, keyPair, channelKey: channelKeyPair.publicKey, transport, ms: Math.max(link.expiresAtMs - Date.now(), 0) + 120000 });
      // A key of small order would make every channel with the host all zeros.
      await agree(channelKeyPair, paired.hostChannelKey).catch(() => {
        throw new Error("the host's channel key is not a usable X25519 key (the host may list this browser: revoke it there)");
      });
      await store.save({
        keyPair,
        publicKey,
        name: name.value.trim() || "Browser",
        hostKey: link.hostKey,
        hostName: paired.hostName,
        role: paired.role,
        relay: link.relay,
        // A cluster's other nodes, to move to when this one fails (relayNodes, device.js).
        relays: link.relays,
        pinned: Boolean(link.certSha256),
        channelKeyPair,
        hostChannelKey: paired.hostChannelKey,
        binding,
        sent: paired.state.sent,
        received: paired.state.received,
        pairedAtMs: Date.now(),
      }, { create: true });
      history.replaceState(null, "", `/${location.search}`);
      start(`/${location.search}`);
    } catch (e) {
      progress.replaceChildren(h("p", { class: "bad", role: "alert" }, `Not paired: ${e.message}.`), h("p", {}, "Run `agent-host pair` again for a new link."));
    }
  });
  show(h("section", {}, form));
  tick();
}

