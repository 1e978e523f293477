// One host, as the page shows it: its state, what of it needs an answer, sessions, requests and
// Activity, over one device link with its own keys. Every tap that asks the host for something
// becomes a message signed with this browser's key for that host; the host decides. The inbox
// (inbox.js) puts the cards of every host in one "Needs you" list and shows one host's other
// sections at a time.

import * as p from "./protocol.js";
import { Device, relayNodes } from "./device.js";
import * as store from "./store.js";
import { TermView, resultText } from "./terminal.js";
import { transport, h, diff, shellLine, describe, errorText, actorName, actorNode, ROLES, tick } from "./ui.js";
import * as syncState from "./sync-state.js";
import { fromB64url } from "./notify.js";

// --- the host screen -------------------------------------------------------------------------

const QUEUED = {
  link: "queued: this browser is not connected to the relay; it goes when the link is back",
  host: "queued: the host is offline; it goes when the host is back",
};
const SENT = "sent; waiting for the host (it may ask for an approval)";
// Live terminals in Activity (each holds a renderer); older results are shown as plain text.
const LIVE_RESULTS = 12;

export class HostScreen {
  /** `inbox`: told when what it shows of this host changes (`refresh`, `renderBulk`, `select`). */
  constructor(record, inbox) {
    this.record = record;
    this.inbox = inbox;
    this.host = store.hostOf(record);
    this.me = p.keyId("dev", record.publicKey);
    // What the page knows about its host (sync-state.js); the DOM that shows it is kept here.
    this.state = syncState.initial({ host: p.toHex(record.hostKey), role: record.role });
    this.cards = new Map(); // request -> { card, approve, deny, outcomeEl, pointer }
    this.sessionViews = new Map(); // session -> { title, state, waits, view, form, card }
    this.items = new Map(); // activity entry id -> { entry, item, view }
    this.liveResults = []; // the activity entries whose output is a live terminal, oldest first
    this.build();
    this.device = new Device({
      nodes: relayNodes(record, location.host),
      keyPair: record.keyPair,
      publicKey: record.publicKey,
      hostKey: record.hostKey,
      channel: { localStatic: record.channelKeyPair, remoteStatic: record.hostChannelKey },
      state: record,
      persist: (state) => store.save(state),
      counter: async () => (record.sent = await store.reserveCounter(this.host)),
      notice: (notice) => this.apply({ kind: "notice", notice }),
      transport,
    });
    this.device.onEvent = (event) => this.apply({ kind: "event", event });
    addEventListener("pagehide", () => this.device.persist(this.device.state).catch(() => {}));
    // How far each pending action got here, as told to the host (receipts), and on every
    // device, as the host tells (request -> [{ device, name, stage }]).
    this.reported = new Map();
    this.progress = new Map();
    document.addEventListener("visibilitychange", () => this.receipts());
    // Notifications while the page is closed (sw.js); a browser without service workers has
    // none. One registration per host (a registration holds one push subscription, made with
    // one host's key), its scope naming the host.
    this.worker = globalThis.navigator?.serviceWorker?.register("/sw.js", { type: "module", scope: `/hosts/${this.host}/` }).catch(() => null) ?? Promise.resolve(null);
    this.worker.then((registration) => {
      this.workerFailed = !registration;
      this.renderNotifications();
    });
    store.activity(this.host).then((entries) => this.restore(entries), () => {});
  }

  /** Makes this host's parts; the inbox puts them on the page. */
  build() {
    const r = this.record;
    this.statusList = h("dl", {});
    this.statusSection = h("section", { "aria-labelledby": "host-title" }, h("h2", { id: "host-title" }, r.hostName), this.statusList);
    // This host's cards in "Needs you" (the inbox groups them by host).
    this.pendingList = h("div", { class: "host-pending" });
    this.sessionList = h("div", {});
    this.sessionSection = h("section", { "aria-labelledby": "sessions-title", hidden: true }, h("h2", { id: "sessions-title" }, "Sessions"), this.sessionList);
    this.feed = h("ol", { class: "feed" });
    this.feedEmpty = h("p", { class: "empty" }, "Nothing yet.");
    this.activitySection = h("section", { "aria-labelledby": "activity-title" }, h("h2", { id: "activity-title" }, "Activity"), this.feedEmpty, this.feed);
    this.requestSection = this.requestForms();
    const forget = h("button", { type: "button", onclick: () => this.forget() }, "Forget this host");
    const fingerprint = h("dd", { class: "mono", id: "about-fingerprint" }, "…");
    this.aboutSection = h(
      "section",
      { "aria-labelledby": "about-title" },
      h("h2", { id: "about-title" }, "This browser"),
      h("p", { class: "muted" }, "Its key for this host, made for this host alone."),
      h("dl", {}, h("dt", {}, "Name"), h("dd", {}, r.name), h("dt", {}, "Fingerprint"), fingerprint, h("dt", {}, "Id"), h("dd", { class: "mono" }, this.me)),
      this.notificationsPart(),
      h("div", { class: "buttons" }, forget),
    );
    p.fingerprint(r.publicKey).then((f) => (fingerprint.textContent = f));
    this.renderStatus();
    this.applyRole();
  }

  /** This host's sections below "Needs you", when it is the one shown. */
  sections() {
    return [this.statusSection, this.sessionSection, this.requestSection, this.activitySection, this.aboutSection];
  }

  /** Its sections are on the page now: terminals made while they were not can open. */
  attached() {
    for (const v of this.sessionViews.values()) v.view.open();
    for (const shown of this.liveResults) shown.view?.open();
  }

  /** How many of its actions wait for an answer. */
  get open() {
    return [...this.state.pending.values()].filter((entry) => !entry.outcome).length;
  }

  /** Whether what this browser sends now goes at once; else why it waits. */
  get waiting() {
    return syncState.waiting(this.state);
  }

  /** Takes `input` into the state, then renders what it changed, in order. */
  apply(input) {
    const { state, changes } = syncState.reduce(this.state, input);
    this.state = state;
    for (const change of changes) this.render(change);
    if (changes.some((c) => c.kind.startsWith("pending_"))) this.inbox.refresh();
  }

  render(c) {
    switch (c.kind) {
      case "sync":
        this.sync();
        break;
      case "status":
        this.renderStatus();
        // Notifications that were on through the worker of before go on through this host's.
        if (this.resubscribe && this.state.status?.push) {
          this.resubscribe = false;
          this.subscribe(true).catch(() => {});
        }
        break;
      case "role":
        this.record.role = c.role;
        store.save(this.record);
        this.applyRole();
        break;
      case "mine":
        this.sayMine(c.request);
        break;
      case "pending_added":
        this.addPending(c.request);
        this.receipts();
        break;
      case "pending_decided":
        this.showOutcome(c.event);
        break;
      case "progress":
        this.progress.delete(c.request);
        this.progress.set(c.request, c.devices);
        // The last few hundred: older actions are long settled.
        for (const old of this.progress.keys()) {
          if (this.progress.size <= 256) break;
          this.progress.delete(old);
        }
        this.renderProgress(c.request);
        break;
      case "pending_refused": {
        const { outcomeEl } = this.cards.get(c.request);
        outcomeEl.textContent = `Not taken: ${errorText(c.event)}`;
        outcomeEl.className = "outcome bad";
        break;
      }
      case "pending_dropped":
        this.dropPending(c.request);
        break;
      case "session_added":
        this.buildSession(c.session);
        break;
      case "session_size":
        this.sessionViews.get(c.session).view.hostSize(c.size);
        break;
      case "session_output":
        this.sessionViews.get(c.session).view.write(p.fromBase64(c.data));
        break;
      case "session":
        this.renderSession(c.session);
        break;
      case "decided":
        this.decided(c.event);
        break;
      case "result":
        this.result(c.event);
        break;
      case "error":
        this.error(c.event);
        break;
      case "refused":
        this.say({ title: "The relay refused", detail: c.reason, tone: "bad" });
        break;
    }
  }

  /**
   * For input waiting at a session, an Interrupt of that session (operators): a run of prompts
   * stops without answering each (the pending input lapses, or is denied, as it stands).
   */
  interruptFor(a) {
    if (a.type !== "session_input" || this.record.role !== "operator") return null;
    const interrupt = h("button", { type: "button", class: "interrupt" }, "Interrupt the session");
    interrupt.addEventListener("click", () => this.request({ type: "session_input", session: a.session, data: "\u0003" }));
    return interrupt;
  }

  /** A pending action's "Reached" line: each device the host says it got to, and how far. */
  renderProgress(request) {
    const devices = this.progress.get(request);
    const el = this.cards.get(request)?.reached;
    if (!devices || !el) return;
    const who = (d) => (d.device === this.me ? "this browser" : d.name ?? d.device.slice(0, 12));
    el.textContent = devices.map((d) => `${who(d)}: ${d.stage}`).join(", ");
  }

  /** The "Notifications" part of "This browser": on or off, and whether they hide detail. */
  notificationsPart() {
    this.notifyState = h("p", { id: "notify-state" }, "…");
    this.notifyToggle = h("button", { type: "button", id: "notify-toggle", hidden: true, onclick: () => this.toggleNotifications() }, "Turn on notifications");
    this.notifyHide = h("input", { type: "checkbox", id: "notify-hide", onchange: () => this.subscribe(true) });
    this.notifyHide.checked = Boolean(this.record.hideDetail);
    this.notifyHideRow = h("p", { hidden: true }, h("label", {}, this.notifyHide, " Hide what the action is on the lock screen (only how many wait)"));
    return h("div", { "aria-labelledby": "notify-title" }, h("h3", { id: "notify-title" }, "Notifications"), this.notifyState, this.notifyHideRow, h("div", { class: "buttons" }, this.notifyToggle));
  }

  renderNotifications() {
    const s = this.state.status;
    const able = "serviceWorker" in (globalThis.navigator ?? {}) && "PushManager" in globalThis && "Notification" in globalThis;
    let text;
    if (!able) text = "This browser cannot show notifications while the page is closed.";
    else if (this.workerFailed) text = "This browser will not run the page's service worker here (it does not trust the page's certificate, or blocks it): no notifications while the page is closed.";
    else if (!s) text = "…";
    else if (!s.push_key) text = "The host does not push notifications.";
    else if (s.push) text = "On: what needs you is pushed to this browser while the page is closed.";
    else text = "Off: you learn that something needs you only while this page is open.";
    this.notifyState.textContent = this.notifyError ?? text;
    this.notifyToggle.hidden = !able || this.workerFailed || !s?.push_key;
    this.notifyToggle.textContent = s?.push ? "Turn off notifications" : "Turn on notifications";
    this.notifyHideRow.hidden = !s?.push;
  }

  async toggleNotifications() {
    this.notifyError = null;
    try {
      if (this.state.status?.push) await this.unsubscribe();
      else await this.subscribe(false);
    } catch (e) {
      this.notifyError = `Notifications: ${e.message ?? e}`;
    }
    this.renderNotifications();
  }

  /** Subscribes this browser to pushes with the host's key, and gives the host the subscription. */
  async subscribe(onlyIfOn) {
    if (onlyIfOn && !this.state.status?.push) return;
    this.record.hideDetail = this.notifyHide.checked;
    store.save(this.record).catch(() => {});
    if ((await Notification.requestPermission()) !== "granted") throw new Error("this browser blocks them for this page (its site settings can allow them)");
    const registration = await active(await this.worker);
    if (!registration) throw new Error("the page's service worker did not start");
    const key = fromB64url(this.state.status.push_key);
    let subscription = await registration.pushManager.getSubscription();
    const same = (a, b) => a && p.toHex(new Uint8Array(a)) === p.toHex(b);
    if (subscription && !same(subscription.options?.applicationServerKey, key)) {
      await subscription.unsubscribe();
      subscription = null;
    }
    subscription ??= await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    const { endpoint, keys } = subscription.toJSON();
    const push = { endpoint, p256dh: keys.p256dh, auth: keys.auth, hide_detail: this.notifyHide.checked };
    await this.device.send("request", { type: "push", id: Device.requestId(), subscription: push });
  }

  /** Tells the host to stop pushing here, and ends the subscription; resolves when the host has it. */
  async unsubscribe() {
    const registration = await this.worker;
    await (await registration?.pushManager.getSubscription())?.unsubscribe().catch(() => {});
    const { acked } = await this.device.send("request", { type: "push", id: Device.requestId(), subscription: null });
    await acked;
  }

  /**
   * Tells the host how far the pending actions got here: shown while the page is in view,
   * delivered otherwise. Each once per stage; a notification left for actions no longer
   * pending is closed.
   */
  receipts() {
    clearTimeout(this.receiptTimer);
    this.receiptTimer = setTimeout(() => {
      const stage = document.visibilityState === "visible" ? "shown" : "delivered";
      const rank = { delivered: 1, shown: 2 };
      const requests = [...this.state.pending.keys()].filter((r) => (rank[this.reported.get(r)] ?? 0) < rank[stage]).slice(0, 64);
      for (const r of this.reported.keys()) if (!this.state.pending.has(r)) this.reported.delete(r);
      if (requests.length === 0) return;
      for (const r of requests) this.reported.set(r, stage);
      this.device.send("request", { type: "receipt", id: Device.requestId(), requests, stage }).catch(() => {});
    }, 200);
  }

  renderStatus() {
    this.renderNotifications();
    const { status: s, relayUp, wasUp, hostState, role } = this.state;
    const state = {
      online: "online",
      offline: "offline (not connected to the relay)",
      "no-route": "unreachable from this browser",
      revoked: "revoked this browser",
      unknown: relayUp ? "asking…" : "unknown",
    }[hostState];
    const rows = [["Host", state], ["Your role", ROLES[role] ?? role]];
    if (s) rows.push(["Workspace", s.workspace], ["Sandbox", s.sandbox]);
    this.statusList.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { "data-field": k.toLowerCase() }, v)]));
    this.hostText = state;
    this.banner =
      !relayUp && wasUp
        ? "The connection to the relay is lost. Reconnecting… (nothing you sent is lost: it goes when the link is back)"
        : hostState === "revoked"
          ? "The host revoked this browser: it takes nothing from it any more. Forget this host, then pair again if it should come back."
          : hostState === "no-route"
            ? "The relay will not carry this browser's messages to the host: the host revoked this browser, or has not reconnected since the relay restarted. If it was revoked, forget this host and pair again."
            : hostState === "offline"
              ? "Your host is offline: it is not connected to the relay. What you send waits and goes when it is back."
              : null;
    this.inbox.refresh();
  }

  applyRole() {
    this.requestSection.hidden = this.record.role !== "operator";
  }

  sync() {
    this.device.send("request", { type: "sync", id: Device.requestId() }).catch((error) => {
      this.say({ title: "Could not ask the host for its state", detail: error.message, tone: "bad" });
    });
  }

  // --- what needs an answer ---

  /** Builds the card of a pending action the state has just taken in, and puts it in place. */
  addPending(request) {
    const e = this.state.pending.get(request).event;
    const a = e.action;
    const what = [];
    if (a.type === "run") {
      const line = shellLine(a.argv);
      if (line !== null) what.push(h("dt", {}, "Shell line"), h("dd", {}, h("code", { class: "line mono" }, line)));
      else what.push(h("dt", {}, "Command"), h("dd", {}, h("ol", { class: "argv mono", "aria-label": "arguments" }, a.argv.map((arg) => h("li", {}, arg)))));
      what.push(h("dt", {}, "In"), h("dd", { class: "mono" }, a.cwd));
      for (const [k, v] of Object.entries(a.env ?? {})) what.push(h("dt", {}, "Env"), h("dd", { class: "mono" }, `${k}=${v}`));
    } else if (a.path !== undefined) {
      what.push(h("dt", {}, "Path"), h("dd", { class: "mono" }, a.path));
    } else if (a.type === "web_fetch") {
      what.push(h("dt", {}, "URL"), h("dd", { class: "mono" }, a.url));
    } else if (a.type === "tool") {
      what.push(h("dt", {}, "Tool"), h("dd", { class: "mono" }, a.name), h("dt", {}, "Input"), h("dd", {}, h("pre", {}, a.input)));
    } else if (a.type === "start_session") {
      what.push(h("dt", {}, "Start"), h("dd", {}, h("ol", { class: "argv mono", "aria-label": "program and arguments" }, a.command.map((arg) => h("li", {}, arg)))));
    } else if (a.type === "session_input") {
      const s = this.state.sessions.get(a.session);
      if (s) what.push(h("dt", {}, "Session"), h("dd", { class: "mono" }, sessionTitle(s)));
      what.push(h("dt", {}, "Input"), h("dd", {}, h("pre", {}, a.data)));
    }
    what.push(h("dt", {}, "Why asked"), h("dd", {}, e.reason), h("dt", {}, "Asked by"), h("dd", {}, actorNode(e.requested_by, this.me, "this browser")));
    const left = h("span", { "data-expires": e.expires_at_ms });
    what.push(h("dt", {}, "Time left"), h("dd", {}, left));
    // Where it got on each device (the host says as it changes): issued, delivered, shown, …
    const reached = h("dd", { class: "reached" }, "sent");
    what.push(h("dt", {}, "Reached"), reached);
    const approve = h("button", { type: "button", class: "approve" }, "Approve");
    const deny = h("button", { type: "button", class: "deny" }, "Deny");
    const outcome = h("p", { class: "outcome", role: "status", "aria-live": "polite" });
    const canAnswer = this.record.role !== "viewer";
    const select = h("input", { type: "checkbox", class: "select", id: `select-${e.request}`, onchange: () => this.renderBulk() });
    const selectRow = h("p", { class: "select-row" }, h("label", { for: `select-${e.request}` }, select, " Select, to answer with others"));
    // A few words with the answer: why not (the agent is told), or a note with a yes.
    const note = h("input", { type: "text", maxlength: 500, id: `note-${e.request}`, autocomplete: "off", placeholder: "e.g. use cargo nextest instead" });
    const noteRow = h("p", { class: "note" }, h("label", { for: `note-${e.request}` }, "Reason or note (optional)"), note);
    const card = h(
      "article",
      { class: "card pending", id: `pending-${e.request}`, "data-request": e.request, "aria-label": e.summary },
      h("h3", {}, e.summary),
      h("dl", {}, what),
      e.preview ? h("details", { open: true }, h("summary", {}, "Change"), diff(e.preview)) : null,
      canAnswer ? noteRow : null,
      canAnswer ? selectRow : null,
      canAnswer ? h("div", { class: "buttons" }, approve, deny, this.interruptFor(a)) : h("p", { class: "muted" }, "A viewer cannot answer."),
      outcome,
    );
    const answer = async (verdict) => {
      select.checked = false;
      select.disabled = true;
      this.renderBulk();
      approve.disabled = deny.disabled = true;
      const noun = verdict === "approve" ? "approval" : "denial";
      outcome.textContent = this.waiting ? `Your ${noun} is ${QUEUED[this.waiting]}.` : `Sending your ${noun}…`;
      // The answer names the exact action (its hash), checked against the action shown.
      if ((await p.actionHash(a)) !== e.action_hash) {
        outcome.textContent = "Refused here: the action does not match its hash.";
        return;
      }
      this.apply({ kind: "answer", request, verdict });
      try {
        const said = note.value.trim();
        // A note is one line within the host's limit (protocol::check_note): else the host
        // would refuse the whole answer.
        if (new TextEncoder().encode(said).length > 1024 || /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/.test(said)) {
          this.apply({ kind: "answer", request, verdict: null });
          approve.disabled = deny.disabled = select.disabled = false;
          outcome.textContent = "Not sent: the note is one line of at most 1024 bytes, without control characters.";
          return;
        }
        const decision = { request, action_hash: e.action_hash, verdict, ...(said ? { note: said } : {}) };
        note.disabled = true;
        const { acked } = await this.device.send("decision", decision);
        acked.then(() => {
          const entry = this.state.pending.get(request);
          if (entry && !entry.outcome && entry.answered) outcome.textContent = `Your ${noun} is sent; waiting for the host.`;
        });
      } catch (error) {
        // Nothing was signed (the counter could not be stored first): it may be pressed again.
        this.apply({ kind: "answer", request, verdict: null });
        approve.disabled = deny.disabled = note.disabled = select.disabled = false;
        outcome.textContent = `Not sent: ${error.message}`;
      }
    };
    approve.addEventListener("click", () => answer("approve"));
    deny.addEventListener("click", () => answer("deny"));
    this.cards.set(request, { card, approve, deny, outcomeEl: outcome, pointer: null, reached, select, answer, summary: e.summary, request, note });
    this.renderProgress(request);
    this.placePending(request);
    if (this.state.mine.get(request)?.type === "session_input") card.scrollIntoView({ block: "center" });
    tick();
  }

  /**
   * Puts a pending card in "Needs you", or, for input to a session shown here, at that session
   * (with a line in "Needs you" that leads to it).
   */
  placePending(request) {
    const shown = this.cards.get(request);
    const a = this.state.pending.get(request).event.action;
    const v = a.type === "session_input" ? this.sessionViews.get(a.session) : null;
    if (!v) {
      this.pendingList.append(shown.card);
      return;
    }
    v.waits.append(shown.card);
    if (!shown.pointer) {
      const go = h("button", { type: "button" }, "Show it");
      go.addEventListener("click", () => {
        this.inbox.select(this);
        shown.card.scrollIntoView({ block: "center" });
        (shown.approve.disabled ? shown.card : shown.approve).focus({ preventScroll: true });
      });
      const title = sessionTitle(this.state.sessions.get(a.session));
      shown.pointer = h("p", { class: "pointer" }, `Input to the session ${title} waits at the session. `, go);
      this.pendingList.append(shown.pointer);
    }
  }

  /** A pending action's card shows its outcome a moment, then goes (Activity keeps it). */
  showOutcome(e) {
    const shown = this.cards.get(e.request);
    const verb = e.verdict === "approve" ? "Approved" : "Denied";
    shown.approve.disabled = shown.deny.disabled = true;
    shown.select.checked = false;
    shown.select.disabled = true;
    this.renderBulk();
    const said = e.note ? ` “${e.note}”` : "";
    shown.outcomeEl.textContent = e.decided_by ? `${verb} by ${actorName(e.decided_by, this.me, "you")}.${said}` : `${verb} by the host (no answer in time, or the asker left).`;
    shown.outcomeEl.className = `outcome ${e.verdict === "approve" ? "ok" : "bad"}`;
    shown.card.querySelector("[data-expires]")?.removeAttribute("data-expires");
    shown.pointer?.remove();
    // The outcome stays in view a moment, then the activity feed keeps it.
    setTimeout(() => this.apply({ kind: "dismiss", request: e.request }), 5000);
  }

  decided(e) {
    const verb = e.verdict === "approve" ? "Approved" : "Denied";
    const title = this.state.pending.get(e.request)?.event.summary ?? this.state.mine.get(e.request)?.what ?? "an action";
    this.say({
      request: e.request,
      title: `${verb}: ${title}`,
      detail: e.decided_by ? (e.note ? `“${e.note}”` : null) : "by the host (no answer in time, or the asker left)",
      by: e.decided_by ?? null,
      tone: e.verdict === "approve" ? "ok" : "bad",
    });
  }

  dropPending(request) {
    const shown = this.cards.get(request);
    shown?.card.remove();
    shown?.pointer?.remove();
    this.cards.delete(request);
    this.renderBulk();
  }

  /** The cards selected and still open to an answer. */
  selected() {
    return [...this.cards.values()].filter((c) => c.select.checked && !c.select.disabled && c.card.isConnected);
  }

  renderBulk() {
    this.inbox.renderBulk();
  }

  // --- activity ---

  /**
   * Adds (or, for a request already shown, updates) an activity entry, and keeps it (the last
   * ACTIVITY_KEPT entries survive a reload). `output`: bytes, shown as a terminal shows them
   * (`terminal`) or as text.
   */
  say({ request = null, title, detail = null, tone = null, by = null, output = null, terminal = false }) {
    const known = request ? this.items.get(request) : null;
    const mine = request ? this.state.mine.get(request) : null;
    const entry = {
      id: request ?? `note-${Device.requestId()}`,
      host: this.host,
      at: known?.entry.at ?? Date.now(),
      request,
      what: mine?.what ?? known?.entry.what ?? null,
      type: mine?.type ?? known?.entry.type ?? null,
      mine: Boolean(mine) || Boolean(known?.entry.mine),
      stage: mine?.stage ?? null,
      title,
      detail,
      tone,
      by,
      output: output && output.length > OUTPUT_KEPT ? output.slice(output.length - OUTPUT_KEPT) : output,
      cut: Boolean(output && output.length > OUTPUT_KEPT),
      terminal,
    };
    this.show(entry, { live: true });
    store.keep(entry).catch(() => {});
  }

  /** Shows an activity entry at the top (`live`: a live terminal if it has output), or below. */
  show(entry, { live, bottom = false }) {
    const known = this.items.get(entry.id);
    const by = entry.by ? h("p", { class: "muted" }, "by ", actorNode(entry.by, this.me, "you")) : null;
    let view = null;
    let output = null;
    if (entry.output !== null) {
      if (entry.output.length === 0) {
        output = h("p", { class: "muted" }, "(no output)");
      } else if (entry.terminal && live) {
        view = new TermView("result", "output");
        output = view.element;
      } else {
        output = h("pre", {}, entry.terminal ? resultText([entry.output]) : new TextDecoder().decode(entry.output));
      }
    }
    const item = h(
      "li",
      { "data-request": entry.request },
      h("p", { class: entry.tone ?? "" }, h("strong", {}, entry.title)),
      entry.detail ? h("p", { class: "muted" }, entry.detail) : null,
      by,
      entry.cut ? h("p", { class: "muted" }, "(the start of the output is not kept)") : null,
      output,
    );
    if (known) {
      known.item.replaceWith(item);
      this.retire(known);
    } else if (bottom) {
      this.feed.append(item);
    } else {
      this.feed.prepend(item);
    }
    const shown = { entry, item, view };
    this.items.set(entry.id, shown);
    if (view) {
      view.open();
      view.result(entry.output);
      this.liveResults.push(shown);
      while (this.liveResults.length > LIVE_RESULTS) this.plain(this.liveResults.shift());
    }
    while (this.feed.children.length > store.ACTIVITY_KEPT) {
      const last = this.feed.lastChild;
      const gone = [...this.items.values()].find((i) => i.item === last);
      last.remove();
      if (gone) {
        this.items.delete(gone.entry.id);
        this.retire(gone);
      }
    }
    this.feedEmpty.hidden = true;
  }

  /** An activity item's terminal gives way to its text. */
  plain(shown) {
    if (!shown.view) return;
    shown.view.element.replaceWith(h("pre", {}, shown.view.text()));
    this.retire(shown);
  }

  retire(shown) {
    shown.view?.dispose();
    shown.view = null;
    this.liveResults = this.liveResults.filter((s) => s !== shown);
  }

  /** Shows what an earlier page kept, below what this one has shown. */
  restore(entries) {
    const newest = entries.filter((e) => !this.items.has(e.id)).reverse();
    let live = LIVE_RESULTS - this.liveResults.length;
    for (let entry of newest) {
      if (entry.mine && entry.request) this.apply({ kind: "restored", request: entry.request, what: entry.what, type: entry.type });
      if (entry.stage === "queued" || entry.stage === "sending") {
        // Its message lived in the earlier page only.
        entry = { ...entry, stage: null, tone: "bad", detail: "maybe not sent: the page was closed or reloaded before the host had it" };
      }
      this.show(entry, { live: Boolean(entry.terminal && entry.output?.length) && live-- > 0, bottom: true });
    }
  }

  result(e) {
    const mine = this.state.mine.get(e.request);
    const pending = this.state.pending.get(e.request);
    const title = mine?.what ?? pending?.event.summary ?? "an action";
    const type = mine?.type ?? pending?.event.action.type;
    const exit = e.exit_code === null || e.exit_code === undefined ? "done" : `exit ${e.exit_code}`;
    this.say({
      request: e.request,
      title: `${title}: ${exit}`,
      detail: e.truncated ? "output truncated by the host" : null,
      tone: e.exit_code === 0 || e.exit_code === null ? "ok" : "bad",
      output: p.fromBase64(e.output ?? ""),
      // A file's content is text; a command's output is what a terminal shows.
      terminal: type !== "read_file",
    });
  }

  error(e) {
    const title = (e.request && this.state.mine.get(e.request)?.what) ?? "The host said no";
    this.say({ request: e.request, title: `${title}: refused`, detail: errorText(e), tone: "bad" });
  }

  // --- requests (operators) ---

  async request(action) {
    const id = Device.requestId();
    this.apply({ kind: "request", request: id, what: describe(action), type: action.type });
    try {
      const { acked } = await this.device.send("request", { type: "action", id, action });
      acked.then(() => this.apply({ kind: "acked", request: id }));
    } catch (error) {
      this.apply({ kind: "not_sent", request: id, reason: error.message });
    }
  }

  /** Says in Activity where one of this browser's requests is: waiting, going, sent, or not sent. */
  sayMine(request) {
    const { what, stage, waiting, error } = this.state.mine.get(request);
    if (error !== null) this.say({ request, title: `${what}: not sent`, detail: error, tone: "bad" });
    else this.say({ request, title: what, detail: stage === "sent" ? SENT : waiting ? QUEUED[waiting] : "sending…" });
  }

  requestForms() {
    const command = h("input", { type: "text", id: "run-command", name: "command", autocomplete: "off", autocapitalize: "off", spellcheck: "false", placeholder: "cargo test 2>&1 | tail -20" });
    const cwd = h("input", { type: "text", id: "run-cwd", name: "cwd", value: ".", autocapitalize: "off", spellcheck: "false" });
    const runError = h("p", { class: "bad", role: "alert" });
    const run = h(
      "form",
      {},
      h("label", { for: "run-command" }, "Run a command"),
      h("p", { class: "muted hint", id: "run-hint" }, "A line for bash, as at a terminal: pipes, redirections and ; included. The host judges every part."),
      command,
      h("label", { for: "run-cwd" }, "In (relative to the workspace)"),
      cwd,
      h("div", { class: "buttons" }, h("button", { type: "submit" }, "Request run")),
      runError,
    );
    command.setAttribute("aria-describedby", "run-hint");
    run.addEventListener("submit", (event) => {
      event.preventDefault();
      runError.textContent = "";
      // The line as typed, for bash: what it means is what bash makes of it, and the host
      // judges that (every command of a pipeline or list, every redirection).
      const line = command.value;
      if (!line.trim()) {
        runError.textContent = "Not sent: type a command.";
        return;
      }
      this.request({ type: "run", argv: ["bash", "-c", line], cwd: cwd.value.trim() || ".", env: {} });
      command.value = "";
    });
    const path = h("input", { type: "text", id: "read-path", name: "path", autocomplete: "off", autocapitalize: "off", spellcheck: "false", placeholder: "README.md" });
    const read = h("form", {}, h("label", { for: "read-path" }, "Read a file"), path, h("div", { class: "buttons" }, h("button", { type: "submit" }, "Request read")));
    read.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!path.value.trim()) return;
      this.request({ type: "read_file", path: path.value.trim() });
      path.value = "";
    });
    // A program started as a session on the host (jailed, as `agent-host run` runs it): the
    // words as typed, split at spaces; the host judges it by its `Session(…)` rules.
    const program = h("input", { type: "text", id: "session-command", name: "session", autocomplete: "off", autocapitalize: "off", spellcheck: "false", placeholder: "claude" });
    const start = h(
      "form",
      {},
      h("label", { for: "session-command" }, "Start a session"),
      h("p", { class: "muted hint", id: "session-hint" }, "A program and its arguments, split at spaces. It runs jailed on the host and appears under Sessions."),
      program,
      h("div", { class: "buttons" }, h("button", { type: "submit" }, "Request start")),
    );
    program.setAttribute("aria-describedby", "session-hint");
    start.addEventListener("submit", (event) => {
      event.preventDefault();
      const command = program.value.trim().split(/\s+/).filter(Boolean);
      if (command.length === 0) return;
      this.request({ type: "start_session", command });
      program.value = "";
    });
    return h("section", { "aria-labelledby": "request-title" }, h("h2", { id: "request-title" }, "Ask the host"), run, read, start);
  }

  // --- sessions ---

  buildSession(id) {
    const input = h("input", { type: "text", id: `input-${id}`, autocomplete: "off", autocapitalize: "off", spellcheck: "false" });
    const send = h("button", { type: "submit" }, "Send");
    const interrupt = h("button", { type: "button", class: "deny" }, "Interrupt (Ctrl-C)");
    const form = h("form", {}, h("label", { for: `input-${id}` }, "Type into the session"), input, h("div", { class: "buttons" }, send, interrupt));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.request({ type: "session_input", session: id, data: `${input.value}\n` });
      input.value = "";
    });
    interrupt.addEventListener("click", () => this.request({ type: "session_input", session: id, data: "\u0003" }));
    const v = { title: h("h3", {}), state: h("p", { class: "muted" }), waits: h("div", { class: "waits" }), view: new TermView("session", "session output"), form };
    v.card = h("article", { class: "card session", "data-session": id }, v.title, v.state, v.waits, v.view.element, form);
    this.sessionViews.set(id, v);
    this.sessionList.append(v.card);
    this.sessionSection.hidden = false;
    v.view.open();
    // Input to it that waited for its card (a sync sends pending actions first).
    for (const request of this.cards.keys()) {
      const a = this.state.pending.get(request).event.action;
      if (a.type === "session_input" && a.session === id) this.placePending(request);
    }
  }

  renderSession(id) {
    const s = this.state.sessions.get(id);
    const v = this.sessionViews.get(id);
    v.title.textContent = sessionTitle(s);
    v.state.textContent = s.ended?.gone
      ? "ended: the host no longer has this session (it restarted, or the session stopped being shared)"
      : s.ended
        ? `ended${s.ended.exit === null || s.ended.exit === undefined ? "" : `, exit ${s.ended.exit}`}`
        : s.kind === "shell"
          ? "running (a shell: each input is asked at the host)"
          : "running (an agent: prompts go straight in)";
    v.card.classList.toggle("ended", Boolean(s.ended));
    v.form.hidden = Boolean(s.ended) || this.record.role !== "operator";
  }

  async forget() {
    const others = this.inbox.hosts.length > 1 ? " The other hosts stay." : "";
    if (!confirm(`Forget ${this.record.hostName}? This browser's key for it is deleted; to use it again, pair again.${others}`)) return;
    // No more pushes for a browser that cannot open them: the host is told (if it hears within
    // a few seconds), and the browser's subscription ends whatever the host heard.
    const told = this.unsubscribe().catch(() => {});
    await Promise.race([told, new Promise((resolve) => setTimeout(resolve, 3000))]);
    this.device.close();
    await store.forget(this.host);
    await (await this.worker)?.unregister().catch(() => {});
    location.assign("/");
  }
}

/** A service worker registration once its worker is active (a push subscription needs one). */
async function active(registration) {
  if (!registration || registration.active) return registration;
  const worker = registration.installing ?? registration.waiting;
  await new Promise((resolve) => {
    const done = () => worker.state === "activated" || worker.state === "redundant";
    if (!worker || done()) return resolve();
    worker.addEventListener("statechange", () => done() && resolve());
  });
  return registration.active ? registration : null;
}

// A result's bytes kept for Activity: its last 64 KiB.
const OUTPUT_KEPT = 64 << 10;

function sessionTitle(s) {
  return shellLine(s.command) ?? (s.command.join(" ") || "a session");
}

