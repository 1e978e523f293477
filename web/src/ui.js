// What every screen of the page is made with: a few DOM helpers (text only: nothing from the
// host is ever parsed as HTML), how actions, errors and people are said, and the countdowns.

import * as p from "./protocol.js";

export const main = document.getElementById("main");
// `?transport=event-stream` forces the relay's event-stream fallback (for a browser whose
// WebSocket will not connect); the default tries a WebSocket first.
export const transport = new URLSearchParams(location.search).get("transport") ?? "auto";
export const banner = document.getElementById("banner");
export const linkState = document.getElementById("link-state");

// --- small DOM helpers (text only: nothing from the host is ever parsed as HTML) -------------

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function show(...children) {
  main.replaceChildren(...children);
}

export function setBanner(text) {
  banner.hidden = !text;
  banner.textContent = text ?? "";
}

export function fail(title, detail, ...extra) {
  show(h("section", {}, h("h2", {}, title), h("p", {}, detail), ...extra));
}

/** A unified diff as text, its added and removed lines marked for colour. */
export function diff(text) {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const kind = (line) => (/^\+(?!\+\+ )/.test(line) ? "add" : /^-(?!-- )/.test(line) ? "del" : null);
  return h("pre", { class: "diff" }, lines.map((line) => h("span", { class: kind(line) }, `${line}\n`)));
}

export function seconds(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** The line of a run action that is exactly `bash -c LINE` (what the page's box sends), or null. */
export function shellLine(argv) {
  return argv?.length === 3 && argv[0] === "bash" && argv[1] === "-c" ? argv[2] : null;
}

export function describe(action) {
  switch (action.type) {
    case "run":
      return `run ${shellLine(action.argv) ?? action.argv.join(" ")}`;
    case "read_file":
      return `read ${action.path}`;
    case "write_file":
      return `write ${action.path}`;
    case "edit_file":
      return `edit ${action.path}`;
    case "list_dir":
      return `list ${action.path}`;
    case "session_input":
      return action.data === "\u0003" ? "interrupt a session" : `type ${JSON.stringify(action.data)} into a session`;
    case "web_fetch":
      return `fetch ${action.url}`;
    case "tool":
      return `use the tool ${action.name}`;
    case "start_session":
      return `start ${action.command.join(" ")} as a session`;
    default:
      return action.type;
  }
}

export const ERRORS = {
  bad_request: "The host could not use the request",
  forbidden: "This browser's role does not allow that",
  revoked: "This browser was revoked at the host",
  denied_by_policy: "Denied by the host's policy",
  denied_by_approver: "Denied by an approver",
  expired: "Expired: nobody answered in time, which means no",
  not_found: "The host does not know that (any more)",
  conflict: "That answer was for another action",
  outside_workspace: "Outside the host's workspace",
  rate_limited: "Too many requests: try again in a moment",
  internal: "The host failed",
};

export function errorText(event) {
  return `${ERRORS[event.code] ?? event.code}: ${event.message}`;
}

/** A short form of a `dev1…` id, for when its device has no name. */
export function shortId(id) {
  return id.length > 16 ? `${id.slice(0, 12)}…` : id;
}

/**
 * Who an actor of the host's events is, as people say it: this browser as `self`; a device by
 * its name (else a short id); someone at the host by name.
 */
export function actorName(actor, me, self) {
  if (!actor) return "the host";
  if (actor.type === "local") return `${actor.name} (at the host)`;
  if (actor.id === me) return self;
  return actor.name || `device ${shortId(actor.id)}`;
}

/** An actor as `actorName` says it; for another device, its full id and fingerprint on demand. */
export function actorNode(actor, me, self) {
  const name = actorName(actor, me, self);
  if (actor?.type !== "device" || actor.id === me) return name;
  const fingerprint = h("dd", { class: "mono" }, "…");
  const details = h(
    "details",
    { class: "actor" },
    h("summary", {}, name),
    h("dl", {}, h("dt", {}, "Id"), h("dd", { class: "mono" }, actor.id), h("dt", {}, "Fingerprint"), fingerprint),
  );
  details.addEventListener("toggle", async () => {
    try {
      fingerprint.textContent = await p.fingerprint(p.keyOfId("dev", actor.id));
    } catch {
      fingerprint.textContent = "(not a device id)";
    }
  }, { once: true });
  return details;
}

export const ROLES = {
  viewer: "viewer: sees what happens",
  approver: "approver: answers what the host asks",
  operator: "operator: answers, and asks the host to act",
};

// --- countdowns ------------------------------------------------------------------------------

export function tick() {
  for (const el of document.querySelectorAll("[data-expires]")) {
    const left = Number(el.dataset.expires) - Date.now();
    el.textContent = left > 0 ? seconds(left) : "expired";
    if (left <= 0) {
      const card = el.closest(".pending");
      for (const button of card?.querySelectorAll("button") ?? []) button.disabled = true;
      const outcome = card?.querySelector(".outcome");
      if (outcome && !outcome.textContent) outcome.textContent = "Expired: no answer in time means no.";
    }
  }
}

