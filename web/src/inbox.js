// The inbox: every host this browser is paired with, on one page. "Needs you" comes first and
// holds what waits on any of them, grouped by host (and, for input to a session, pointed at
// its session); then the hosts, each with its state, one tap from the rest of it (status,
// sessions, requests, Activity, this browser's key for it). Several cards, of one host or of
// several, are answered together after one confirmation that lists each; every answer is still
// signed with that host's key of this browser, on its own, bound to its own action's hash.
//
// Nothing of one host reaches another: each `HostScreen` has its own record, keys, channel and
// link, and the inbox only reads what they show.

import { HostScreen } from "./host-screen.js";
import * as store from "./store.js";
import { h, show, setBanner, linkState } from "./ui.js";

export class Inbox {
  /** `stale`: pairings from before the end-to-end channel, to forget (their hosts ignore them). */
  constructor(records, stale = []) {
    this.pendingEmpty = h("p", { class: "empty" }, "Nothing is waiting for an answer.");
    this.approveSelected = h("button", { type: "button", class: "approve", onclick: () => this.answerSelected("approve") }, "Approve selected");
    this.denySelected = h("button", { type: "button", class: "deny", onclick: () => this.answerSelected("deny") }, "Deny selected");
    this.bulk = h("div", { class: "buttons bulk", hidden: true }, this.approveSelected, this.denySelected);
    this.groups = h("div", {});
    this.pendingSection = h("section", { "aria-labelledby": "pending-title" }, h("h2", { id: "pending-title" }, "Needs you"), this.pendingEmpty, this.bulk, this.groups);
    this.hostList = h("ul", { class: "hosts" });
    this.hostsSection = h(
      "section",
      { "aria-labelledby": "hosts-title" },
      h("h2", { id: "hosts-title" }, "Hosts"),
      this.hostList,
      h("p", { class: "muted" }, "To add one, run `agent-host pair` at it (a host using this page's relay) and open the link it prints here."),
      ...stale.map((record) => {
        const forget = h("button", { type: "button", onclick: async () => {
          await store.forget(store.hostOf(record));
          location.assign("/");
        } }, `Forget ${record.hostName}`);
        return h("p", { class: "bad" }, `${record.hostName} was paired before the end-to-end channel and no longer answers this browser: forget it, then pair again. `, forget);
      }),
    );
    this.stale = stale.length > 0;
    this.hosts = [];
    for (const record of records) {
      const host = new HostScreen(record, this);
      host.group = h("div", { class: "host-group", "data-host": host.host }, h("h3", { class: "group-title" }, record.hostName), host.pendingList);
      host.row = h("button", { type: "button", class: "host-row", onclick: () => this.select(host) });
      this.hosts.push(host);
      this.groups.append(host.group);
      this.hostList.append(h("li", {}, host.row));
    }
    this.selected = this.hosts[0];
    this.layout();
    retireRootWorker().then((hadPush) => {
      // Its subscription served the one host of then: that host's pushes go to its own now.
      if (hadPush) for (const host of this.hosts) host.resubscribe = true;
    });
  }

  /** Shows `host`'s sections below "Needs you" and the hosts. */
  select(host) {
    if (this.selected === host && host.statusSection.isConnected) return;
    this.selected = host;
    this.layout();
  }

  layout() {
    const several = this.hosts.length > 1;
    show(this.pendingSection, several || this.stale ? this.hostsSection : null, ...this.selected.sections());
    this.selected.attached();
    this.refresh();
  }

  /** Says again what depends on every host: groups, counts, the hosts' rows, the link, the banner. */
  refresh() {
    if (!this.selected) return; // still making the hosts
    const several = this.hosts.length > 1;
    let open = 0;
    let cards = 0;
    for (const host of this.hosts) {
      const waiting = host.open;
      open += waiting;
      cards += host.state.pending.size;
      host.group.hidden = several && host.state.pending.size === 0;
      host.group.querySelector(".group-title").hidden = !several;
      const role = host.state.role;
      host.row.replaceChildren(
        h("strong", {}, host.record.hostName),
        h("span", { class: "muted" }, ` ${host.hostText ?? "unknown"} · ${role} · ${waiting} waiting`),
      );
      host.row.setAttribute("aria-pressed", String(host === this.selected));
      host.row.setAttribute("aria-label", `${host.record.hostName}: ${host.hostText ?? "unknown"}, ${waiting} waiting; show it`);
    }
    this.pendingEmpty.hidden = cards > 0;
    // The tab says how many answers are waiting, for a phone with the page in the background.
    document.title = open > 0 ? `(${open}) Agent bridge` : "Agent bridge";
    const up = this.hosts.every((host) => host.state.relayUp);
    const transport = this.selected.state.transport;
    linkState.textContent = !up ? "Connecting…" : transport === "event-stream" ? "Connected (event stream)" : "Connected";
    linkState.dataset.transport = this.selected.state.relayUp ? transport ?? "" : "";
    const banners = this.hosts.filter((host) => host.banner).map((host) => (several ? `${host.record.hostName}: ${host.banner}` : host.banner));
    setBanner(banners.length > 0 ? banners.join("\n") : null);
  }

  /** The cards selected on every host and still open to an answer. */
  selectedCards() {
    return this.hosts.flatMap((host) => host.selected().map((card) => ({ card, host })));
  }

  renderBulk() {
    const n = this.selectedCards().length;
    this.bulk.hidden = n < 1;
    this.approveSelected.textContent = `Approve selected (${n})`;
    this.denySelected.textContent = `Deny selected (${n})`;
  }

  /** Answers every selected card with `verdict`, after one confirmation that lists each. */
  async answerSelected(verdict) {
    const chosen = this.selectedCards();
    if (chosen.length === 0) return;
    const verb = verdict === "approve" ? "Approve" : "Deny";
    const several = this.hosts.length > 1;
    // Each as a quoted string with its host and id, and the note that goes with it: a summary
    // cannot add lines of its own to the list.
    const line = ({ card: c, host }) => {
      const on = several ? `${JSON.stringify(host.record.hostName)} ` : "";
      const note = c.note.value.trim();
      return `• ${on}${c.request.slice(0, 8)} ${JSON.stringify(c.summary)}${note ? ` with ${JSON.stringify(note)}` : ""}`;
    };
    if (!confirm(`${verb} these ${chosen.length}?\n\n${chosen.map(line).join("\n")}`)) return;
    // Each is its own signed answer, on its own host, bound to its own action hash.
    await Promise.all(chosen.map(({ card }) => card.answer(verdict)));
  }
}

/**
 * The worker a page of before registered at `/` (one host per browser, its push subscription
 * made with that host's key) is ended, with its subscription: each host has its own worker now
 * (host-screen.js). Whether it had a subscription (to make again at the host's own).
 */
async function retireRootWorker() {
  const workers = globalThis.navigator?.serviceWorker;
  const old = await workers?.getRegistration("/").catch(() => null);
  if (!old || old.scope !== `${location.origin}/`) return false;
  const subscription = await old.pushManager?.getSubscription().catch(() => null);
  await subscription?.unsubscribe().catch(() => {});
  await old.unregister().catch(() => {});
  return Boolean(subscription);
}
