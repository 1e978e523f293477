// What the host screen knows about its host: the relay link, the host's state, the actions that
// wait for an answer, the sessions, and this browser's own requests. It is plain data, changed
// only by `reduce`, so Node can test it without a browser.
//
// It must hold no DOM (no cards, no views), open no WebSocket, start no timer and read no
// global. The screen keeps its own cards and views by id, and renders the changes that
// `reduce` lists, in their order.

/**
 * The state of a page that has heard nothing yet. `host`: the host's key in hex (the relay's
 * `host_presence` names hosts so); `role`: this browser's role as stored at pairing.
 */
export function initial({ host, role }) {
  return {
    host,
    role,
    relayUp: false,
    // Whether the link was ever up: a lost link is said only after it was up once.
    wasUp: false,
    transport: null,
    hostState: "unknown", // online | offline | no-route | revoked | unknown
    // The host's last status event (workspace, sandbox, role), or null.
    status: null,
    // Counts the host's status events. A sync sends every open action and every live session
    // before its status; what was not announced since the last status is gone.
    gen: 0,
    // request -> { event, gen, outcome: verdict | null, answered: this browser's verdict | null }
    pending: new Map(),
    // session -> { command, kind, seq: the last output shown (-1: none), gen,
    //   ended: null | { exit } | { gone: true } (a sync did not announce it) }
    sessions: new Map(),
    // request -> { what, type, stage: queued | sending | sent | answered,
    //   waiting: "link" | "host" | null, error: why it was not sent, or null }
    mine: new Map(),
  };
}

/** Whether what this browser sends now goes at once (null); else why it waits: "link" or "host". */
export function waiting(state) {
  return !state.relayUp ? "link" : state.hostState === "offline" ? "host" : null;
}

/**
 * The state after `input`, and what the screen must render, in order. The state given is not
 * changed. `input` is one of:
 *
 * - `{ kind: "notice", notice }`: the device link's notice (link, transport, undeliverable,
 *   host_presence, refused, error);
 * - `{ kind: "event", event }`: an event the host signed;
 * - `{ kind: "request", request, what, type }`: this browser asks the host for an action;
 * - `{ kind: "acked", request }`: the host's side of the link has that request;
 * - `{ kind: "not_sent", request, reason }`: it was not sent (nothing was signed);
 * - `{ kind: "restored", request, what, type }`: a request of an earlier page, from Activity;
 * - `{ kind: "answer", request, verdict }`: this browser answers a pending action (verdict null:
 *   the answer was not sent);
 * - `{ kind: "dismiss", request }`: a decided action has been in view long enough.
 *
 * Each change is `{ kind, … }`:
 *
 * - `sync`: send the host a sync request (its answer is every open action, every live session,
 *   then its status);
 * - `status`: the host's state, the link or the status rows changed;
 * - `role` (`role`): the host gives this browser another role;
 * - `mine` (`request`): one of this browser's requests is queued, sending, sent or not sent;
 * - `pending_added`, `pending_dropped` (`request`): a card to build or to take away;
 * - `pending_decided` (`request`, `event`): a pending action has its outcome;
 * - `pending_refused` (`request`, `event`): the host refused this browser's answer to it;
 * - `session_added`, `session` (`session`): a session to build, or to render again;
 * - `session_size` (`session`, `size`), `session_output` (`session`, `data`, base64);
 * - `decided`, `result`, `error` (`event`), `refused` (`reason`): lines for Activity.
 */
export function reduce(state, input) {
  const d = new Draft(state);
  switch (input.kind) {
    case "notice":
      notice(d, input.notice);
      break;
    case "event":
      event(d, input.event);
      break;
    case "request": {
      const w = waiting(d.next);
      d.map("mine").set(input.request, { what: input.what, type: input.type, stage: w ? "queued" : "sending", waiting: w, error: null });
      d.changes.push({ kind: "mine", request: input.request });
      break;
    }
    case "acked": {
      const mine = d.next.mine.get(input.request);
      if (!mine || mine.stage === "answered") break;
      d.map("mine").set(input.request, { ...mine, stage: "sent" });
      d.changes.push({ kind: "mine", request: input.request });
      break;
    }
    case "not_sent": {
      const mine = d.next.mine.get(input.request);
      if (!mine) break;
      d.map("mine").set(input.request, { ...mine, stage: "answered", error: input.reason });
      d.changes.push({ kind: "mine", request: input.request });
      break;
    }
    case "restored":
      if (!d.next.mine.has(input.request)) {
        d.map("mine").set(input.request, { what: input.what, type: input.type, stage: "answered", waiting: null, error: null });
      }
      break;
    case "answer": {
      const entry = d.next.pending.get(input.request);
      if (entry) d.map("pending").set(input.request, { ...entry, answered: input.verdict });
      break;
    }
    case "dismiss":
      if (d.next.pending.has(input.request)) {
        d.map("pending").delete(input.request);
        d.changes.push({ kind: "pending_dropped", request: input.request });
      }
      break;
    default:
      throw new Error(`unknown input ${input.kind}`);
  }
  settle(state, d);
  return { state: d.next, changes: d.changes };
}

/** The next state as it is being made: its maps are copied the first time one is changed. */
class Draft {
  constructor(state) {
    this.next = { ...state };
    this.copied = new Set();
    this.changes = [];
  }

  map(name) {
    if (!this.copied.has(name)) {
      this.next[name] = new Map(this.next[name]);
      this.copied.add(name);
    }
    return this.next[name];
  }
}

function notice(d, n) {
  const s = d.next;
  if (n.type === "link" && n.up) {
    Object.assign(s, { relayUp: true, wasUp: true, transport: n.transport });
    d.changes.push({ kind: "sync" });
  } else if (n.type === "link") {
    s.relayUp = false;
  } else if (n.type === "transport") {
    s.transport = n.transport;
  } else if (n.type === "undeliverable") {
    if (s.hostState !== "revoked") s.hostState = n.offline ? "offline" : "no-route";
  } else if (n.type === "host_presence" && n.host === s.host && s.hostState !== "revoked") {
    // The relay's word, a hint: the host's own answer to a sync says more.
    if (!n.online) {
      s.hostState = "offline";
    } else if (s.hostState === "offline" || s.hostState === "no-route") {
      s.hostState = "unknown";
      d.changes.push({ kind: "sync" });
    }
  } else if (n.type === "refused") {
    d.changes.push({ kind: "refused", reason: n.reason });
  }
}

function event(d, e) {
  const s = d.next;
  if (e.type === "error" && e.code === "revoked" && !e.request) {
    // The host's last word to this browser.
    s.hostState = "revoked";
    return;
  }
  s.hostState = "online";
  // The host has answered this request (of this browser's, if it is one): it got it.
  const mine = e.request && s.mine.get(e.request);
  if (mine) d.map("mine").set(e.request, { ...mine, stage: "answered" });
  switch (e.type) {
    case "status":
      s.status = e;
      if (e.role !== s.role) {
        s.role = e.role;
        d.changes.push({ kind: "role", role: e.role });
      }
      // A sync sends every open action and every live session before its status: what was not
      // announced since the last status is no longer open (unless decided), or no longer runs.
      for (const [id, entry] of s.pending) {
        if (entry.gen < s.gen && !entry.outcome) {
          d.map("pending").delete(id);
          d.changes.push({ kind: "pending_dropped", request: id });
        }
      }
      for (const [id, session] of s.sessions) {
        if (session.gen < s.gen && !session.ended) {
          d.map("sessions").set(id, { ...session, ended: { gone: true } });
          d.changes.push({ kind: "session", session: id });
        }
      }
      s.gen++;
      break;
    case "action_pending": {
      const known = s.pending.get(e.request);
      if (known) d.map("pending").set(e.request, { ...known, gen: s.gen });
      else {
        d.map("pending").set(e.request, { event: e, gen: s.gen, outcome: null, answered: null });
        d.changes.push({ kind: "pending_added", request: e.request });
      }
      break;
    }
    case "action_decided": {
      const entry = s.pending.get(e.request);
      if (entry && !entry.outcome) {
        d.map("pending").set(e.request, { ...entry, outcome: e.verdict });
        d.changes.push({ kind: "pending_decided", request: e.request, event: e });
      }
      d.changes.push({ kind: "decided", event: e });
      break;
    }
    case "action_result":
      d.changes.push({ kind: "result", event: e });
      break;
    case "action_progress":
      d.changes.push({ kind: "progress", request: e.request, devices: e.devices });
      break;
    case "error": {
      const entry = e.request && s.pending.get(e.request);
      if (entry && entry.answered && !entry.outcome) d.changes.push({ kind: "pending_refused", request: e.request, event: e });
      else d.changes.push({ kind: "error", event: e });
      break;
    }
    case "session_started":
    case "session_resized":
    case "output":
    case "session_ended":
      sessionEvent(d, e);
      break;
  }
}

function sessionEvent(d, e) {
  const s = d.next;
  let session = s.sessions.get(e.session);
  if (!session) {
    // `seq` counts from 0: nothing is shown yet.
    session = { command: [], kind: "agent", seq: -1, ended: null, gen: s.gen };
    d.map("sessions").set(e.session, session);
    d.changes.push({ kind: "session_added", session: e.session });
  }
  if (e.type === "session_started") {
    session = { ...session, command: e.command, kind: e.kind, ended: null, gen: s.gen };
    d.changes.push({ kind: "session_size", session: e.session, size: e.size ?? null });
  } else if (e.type === "session_resized") {
    d.changes.push({ kind: "session_size", session: e.session, size: e.size });
  } else if (e.type === "output") {
    // A sync sends the scrollback again: what was already shown is skipped.
    if (e.seq <= session.seq) return;
    session = { ...session, seq: e.seq };
    d.changes.push({ kind: "session_output", session: e.session, data: e.data });
  } else {
    session = { ...session, ended: { exit: e.exit_code } };
  }
  d.map("sessions").set(e.session, session);
  d.changes.push({ kind: "session", session: e.session });
}

/**
 * What every input ends with: the status, if what it shows changed, then each request that
 * waited or went and now does the other, in the order they were made.
 */
function settle(before, d) {
  const s = d.next;
  if (["relayUp", "wasUp", "transport", "hostState", "status", "role"].some((k) => before[k] !== s[k])) {
    d.changes.push({ kind: "status" });
  }
  const w = waiting(s);
  const stage = w ? "queued" : "sending";
  for (const [request, mine] of s.mine) {
    if (mine.stage !== "queued" && mine.stage !== "sending") continue;
    if (mine.stage === stage && mine.waiting === w) continue;
    d.map("mine").set(request, { ...mine, stage, waiting: w });
    d.changes.push({ kind: "mine", request });
  }
}
