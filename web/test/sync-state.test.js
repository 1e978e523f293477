// The host screen's sync state (src/sync-state.js), fed notices, host events and this browser's
// own requests, without a browser: what it then knows, and what it asks the screen to render.

import { test } from "node:test";
import assert from "node:assert/strict";
import { initial, reduce, waiting } from "../src/sync-state.js";

const HOST = "ab".repeat(32);

/** The state after `inputs`, and every change they made, in order. */
function feed(state, ...inputs) {
  const changes = [];
  for (const input of inputs) {
    const out = reduce(state, input);
    state = out.state;
    changes.push(...out.changes);
  }
  return { state, changes };
}

const notice = (n) => ({ kind: "notice", notice: n });
const event = (e) => ({ kind: "event", event: e });
const linkUp = notice({ type: "link", up: true, transport: "websocket" });
const linkDown = notice({ type: "link", up: false });
const presence = (online, host = HOST) => notice({ type: "host_presence", host, online });
const status = event({ type: "status", role: "operator", workspace: "/w", sandbox: "none" });
const pending = (request, action = { type: "read_file", path: "a" }) => event({ type: "action_pending", request, summary: `read ${request}`, action });
const started = (session) => event({ type: "session_started", session, command: ["bash"], kind: "shell", size: { cols: 80, rows: 24 } });

/** A page whose link is up and whose host has answered one sync. */
function synced() {
  return feed(initial({ host: HOST, role: "operator" }), linkUp, status).state;
}

test("a sync's status drops the pending actions and sessions it did not announce again", () => {
  // A sync announces a, b, c, s1 and s2, then its status.
  let { state } = feed(synced(), pending("a"), pending("b"), pending("c"), started("s1"), started("s2"), status);
  ({ state } = feed(state, event({ type: "action_decided", request: "c", verdict: "deny", decided_by: null })));
  const before = state;
  // The next sync announces a and s1 only.
  const { state: after, changes } = feed(state, pending("a"), started("s1"), status);
  assert.deepEqual([...after.pending.keys()], ["a", "c"], "b is gone; c has its outcome and stays");
  assert.deepEqual(after.sessions.get("s2").ended, { gone: true });
  assert.equal(after.sessions.get("s1").ended, null);
  assert.deepEqual(
    changes.filter((c) => c.kind === "pending_dropped" || c.kind === "session"),
    [
      { kind: "session", session: "s1" },
      { kind: "pending_dropped", request: "b" },
      { kind: "session", session: "s2" },
    ],
  );
  assert.equal(after.gen, before.gen + 1);
  // The state given to reduce is not changed.
  assert.deepEqual([...before.pending.keys()], ["a", "b", "c"]);
  assert.equal(before.sessions.get("s2").ended, null);
});

test("a session's output seen again after a sync is skipped", () => {
  const output = (seq) => event({ type: "output", session: "s", seq, data: "aGk=" });
  const { state, changes } = feed(synced(), output(0), output(1), output(0), output(1), output(2));
  assert.equal(state.sessions.get("s").seq, 2);
  assert.deepEqual(
    changes.filter((c) => c.kind.startsWith("session")).map((c) => c.kind),
    ["session_added", "session_output", "session", "session_output", "session", "session_output", "session"],
  );
});

test("revoked stays: neither the relay's presence nor undeliverable undoes it", () => {
  let { state, changes } = feed(synced(), event({ type: "error", code: "revoked", message: "revoked" }));
  assert.equal(state.hostState, "revoked");
  assert.deepEqual(changes, [{ kind: "status" }]);
  ({ state, changes } = feed(state, notice({ type: "undeliverable", offline: true }), presence(false), presence(true), notice({ type: "undeliverable", offline: false })));
  assert.equal(state.hostState, "revoked");
  assert.deepEqual(changes, [], "no sync asked, nothing to render");
});

test("the host back online after offline: unknown until it answers, and a sync is asked for", () => {
  let { state, changes } = feed(synced(), presence(false));
  assert.equal(state.hostState, "offline");
  assert.deepEqual(changes, [{ kind: "status" }]);
  // Another host's presence says nothing about this one.
  ({ state, changes } = feed(state, presence(true, "cd".repeat(32))));
  assert.equal(state.hostState, "offline");
  assert.deepEqual(changes, []);
  ({ state, changes } = feed(state, presence(true)));
  assert.equal(state.hostState, "unknown");
  assert.deepEqual(changes, [{ kind: "sync" }, { kind: "status" }]);
  // Online while it is not known offline: nothing to ask.
  ({ state, changes } = feed(state, presence(true)));
  assert.deepEqual(changes, []);
  // A link that comes up asks for a sync too.
  ({ changes } = feed(state, linkDown, linkUp));
  assert.deepEqual(changes, [{ kind: "status" }, { kind: "sync" }, { kind: "status" }]);
});

test("undeliverable: offline when the host is not connected, else no route", () => {
  const offline = feed(synced(), notice({ type: "undeliverable", offline: true })).state;
  assert.equal(offline.hostState, "offline");
  assert.equal(waiting(offline), "host");
  const noRoute = feed(synced(), notice({ type: "undeliverable", offline: false })).state;
  assert.equal(noRoute.hostState, "no-route");
  assert.equal(waiting(noRoute), null);
  // After no route, the host's presence asks for a sync as after offline.
  assert.deepEqual(feed(noRoute, presence(true)).changes, [{ kind: "sync" }, { kind: "status" }]);
});

test("any event from the host makes it online", () => {
  const start = feed(synced(), presence(false)).state;
  const { state, changes } = feed(start, event({ type: "output", session: "s", seq: 0, data: "" }));
  assert.equal(state.hostState, "online");
  assert.ok(changes.some((c) => c.kind === "status"));
  assert.equal(feed(initial({ host: HOST, role: "viewer" }), status).state.hostState, "online");
});

test("this browser's requests: queued, sending, sent and answered as the link and the host come and go", () => {
  const ask = (request) => ({ kind: "request", request, what: `read ${request}`, type: "read_file" });
  const stage = (state, request) => [state.mine.get(request).stage, state.mine.get(request).waiting];
  // Before the link is up, a request waits for the link.
  let { state, changes } = feed(initial({ host: HOST, role: "operator" }), ask("r1"));
  assert.deepEqual(stage(state, "r1"), ["queued", "link"]);
  assert.deepEqual(changes, [{ kind: "mine", request: "r1" }]);
  ({ state, changes } = feed(state, linkUp));
  assert.deepEqual(stage(state, "r1"), ["sending", null]);
  assert.deepEqual(changes, [{ kind: "sync" }, { kind: "status" }, { kind: "mine", request: "r1" }]);
  // The host goes offline: it waits for the host, and a new request does too.
  ({ state, changes } = feed(state, presence(false), ask("r2")));
  assert.deepEqual(stage(state, "r1"), ["queued", "host"]);
  assert.deepEqual(stage(state, "r2"), ["queued", "host"]);
  // Still queued, but now for the link, and back to the host: each change of why is said.
  ({ state, changes } = feed(state, linkDown));
  assert.deepEqual(stage(state, "r1"), ["queued", "link"]);
  assert.deepEqual(changes, [{ kind: "status" }, { kind: "mine", request: "r1" }, { kind: "mine", request: "r2" }]);
  ({ state, changes } = feed(state, linkUp));
  assert.deepEqual(stage(state, "r2"), ["queued", "host"]);
  assert.deepEqual(changes, [{ kind: "sync" }, { kind: "status" }, { kind: "mine", request: "r1" }, { kind: "mine", request: "r2" }]);
  ({ state, changes } = feed(state, presence(true)));
  assert.deepEqual(stage(state, "r1"), ["sending", null]);
  assert.deepEqual(changes, [{ kind: "sync" }, { kind: "status" }, { kind: "mine", request: "r1" }, { kind: "mine", request: "r2" }]);
  // The host's side of the link has r1; the host answers r2 before any acknowledgement.
  ({ state, changes } = feed(state, { kind: "acked", request: "r1" }, event({ type: "action_result", request: "r2", exit_code: 0, output: "" })));
  assert.equal(state.mine.get("r1").stage, "sent");
  assert.equal(state.mine.get("r2").stage, "answered");
  assert.deepEqual(
    changes.map((c) => c.kind),
    ["mine", "result", "status"],
  );
  // What was sent or answered no longer waits for the link.
  ({ state, changes } = feed(state, linkDown, { kind: "acked", request: "r2" }));
  assert.equal(state.mine.get("r1").stage, "sent");
  assert.equal(state.mine.get("r2").stage, "answered");
  assert.deepEqual(changes, [{ kind: "status" }]);
  // One that could not be sent is answered, with why.
  ({ state, changes } = feed(state, ask("r3"), { kind: "not_sent", request: "r3", reason: "disk full" }));
  assert.deepEqual([state.mine.get("r3").stage, state.mine.get("r3").error], ["answered", "disk full"]);
  assert.deepEqual(changes, [{ kind: "mine", request: "r3" }, { kind: "mine", request: "r3" }]);
  ({ changes } = feed(state, linkUp));
  assert.ok(!changes.some((c) => c.kind === "mine"), "only queued and sending requests move");
});

test("a decision on a pending action sets its outcome once; a result is said and leaves it", () => {
  let { state, changes } = feed(synced(), pending("a"));
  assert.deepEqual(changes, [{ kind: "pending_added", request: "a" }]);
  assert.equal(state.pending.get("a").outcome, null);
  const decided = { type: "action_decided", request: "a", verdict: "approve", decided_by: "dev-x" };
  ({ state, changes } = feed(state, event(decided)));
  assert.equal(state.pending.get("a").outcome, "approve");
  assert.deepEqual(changes, [
    { kind: "pending_decided", request: "a", event: decided },
    { kind: "decided", event: decided },
  ]);
  // The same decision again (a resend): said, but the outcome is not set twice.
  ({ state, changes } = feed(state, event({ ...decided, verdict: "deny" })));
  assert.equal(state.pending.get("a").outcome, "approve");
  assert.deepEqual(changes.map((c) => c.kind), ["decided"]);
  const result = { type: "action_result", request: "a", exit_code: 0, output: "" };
  ({ state, changes } = feed(state, event(result)));
  assert.deepEqual(changes, [{ kind: "result", event: result }]);
  assert.equal(state.pending.get("a").outcome, "approve");
  // Decided, it stays through a sync that does not announce it, until the screen dismisses it.
  ({ state } = feed(state, status, status));
  assert.ok(state.pending.has("a"));
  ({ state, changes } = feed(state, { kind: "dismiss", request: "a" }));
  assert.equal(state.pending.size, 0);
  assert.deepEqual(changes, [{ kind: "pending_dropped", request: "a" }]);
});

test("an error on an action this browser answered is shown at its card, else in Activity", () => {
  const refusal = { type: "error", request: "a", code: "stale", message: "no longer pending" };
  let { state } = feed(synced(), pending("a"));
  assert.deepEqual(feed(state, event(refusal)).changes, [{ kind: "error", event: refusal }]);
  ({ state } = feed(state, { kind: "answer", request: "a", verdict: "approve" }));
  assert.equal(state.pending.get("a").answered, "approve");
  assert.deepEqual(feed(state, event(refusal)).changes, [{ kind: "pending_refused", request: "a", event: refusal }]);
  // An answer that was not sent can be given again.
  ({ state } = feed(state, { kind: "answer", request: "a", verdict: null }));
  assert.deepEqual(feed(state, event(refusal)).changes, [{ kind: "error", event: refusal }]);
});

test("a status with another role says so, only when the role changes", () => {
  const viewer = event({ type: "status", role: "viewer", workspace: "/w", sandbox: "none" });
  const { state, changes } = feed(synced(), viewer, viewer, status);
  assert.equal(state.role, "operator");
  assert.deepEqual(
    changes.filter((c) => c.kind === "role"),
    [
      { kind: "role", role: "viewer" },
      { kind: "role", role: "operator" },
    ],
  );
});
