// The real host for the web tests: `agent-host up` (host and embedded relay) in a fresh home
// and workspace, with the `remote` CLI beside it. Needs the workspace's binaries built (the
// project's test command builds them first).

import { spawn, spawnSync } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createServer } from "node:net";
import { createInterface } from "node:readline";

export const root = fileURLToPath(new URL("../../", import.meta.url));
// AGENT_BRIDGE_BIN_DIR names another directory of built binaries (a copy, while the workspace
// rebuilds); with AGENT_BRIDGE_WEB_DIR set (the relay reads the page from there), the page's
// files can be changed and tested without a rebuild.
const bin = process.env.AGENT_BRIDGE_BIN_DIR || join(root, "target/debug");
export const agentHost = join(bin, "agent-host");
export const remoteBin = join(bin, "remote");
export const relayBin = join(bin, "relay");

/** Why the binaries cannot be used, or false. */
export function missingBinaries() {
  return [agentHost, remoteBin, relayBin].some((b) => !existsSync(b)) && "the workspace's binaries are not built (the project's test command builds them first)";
}

/** Follows a stream's lines; the function returned waits for the first line matching `pattern`. */
export function lines(stream) {
  const rl = createInterface({ input: stream });
  const seen = [];
  const waiters = [];
  rl.on("line", (line) => {
    seen.push(line);
    for (const w of waiters.splice(0)) w();
  });
  return async (pattern, ms = 20000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = seen.find((l) => pattern.test(l));
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`no line matching ${pattern} in ${JSON.stringify(seen)}`);
      await new Promise((r) => {
        waiters.push(r);
        setTimeout(r, 200);
      });
    }
  };
}

/** Runs a command to its end; resolves to { code, stdout, stderr }. */
export function run(command, args, options) {
  return new Promise((resolve) => {
    const child = spawn(command, args, options);
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d) => (stdout += d));
    child.stderr?.on("data", (d) => (stderr += d));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

/** A TCP port free on loopback just now. */
/** Waits until something listens on loopback `port` (10 s at most). */
async function waitPort(port) {
  const { connect } = await import("node:net");
  for (let i = 0; i < 200; i++) {
    const up = await new Promise((resolve) => {
      const socket = connect(port, "127.0.0.1", () => (socket.end(), resolve(true)));
      socket.on("error", () => resolve(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on port ${port}`);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function exited(child) {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.on("exit", resolve));
}

/**
 * Starts a host with `permissions` as its settings: by default `agent-host up` (with its
 * embedded relay) on a free port; with `separateRelay`, the `relay` binary (self-signed, serving
 * the page) and
 * `agent-host serve --relay` linked to it; with `relayOf` (a world made with `separateRelay`),
 * a host served through that world's relay (a second host behind the same page); with
 * `cluster`, two relay nodes joined through a `nats-server` and the host served through both. The result runs `agent-host` and `remote` commands
 * in that world, makes pairing offers, stops and starts the host (same home, same port), and
 * stops everything. `hostArgs` are added to the host's command line.
 */
export async function startHost(permissions, { separateRelay = false, pageElsewhere = false, hostArgs: more = [], relayOf = null, hostName = "workstation", cluster = false } = {}) {
  const base = mkdtempSync(join(tmpdir(), "web-host-"));
  const home = join(base, "home");
  const ws = join(base, "ws");
  mkdirSync(ws);
  const settings = join(base, "settings.json");
  writeFileSync(settings, JSON.stringify({ permissions }));
  const env = { ...process.env, AGENT_HOST_HOME: home, REMOTE_HOME: join(base, "devices"), RUST_LOG: process.env.RUST_LOG ?? "info" };
  const sandbox = spawnSync(agentHost, ["doctor"], { env }).status === 0 ? [] : ["--allow-unsandboxed"];
  const children = [];
  const relay = relayOf?.relay ?? `127.0.0.1:${await freePort()}`;
  let hostArgs;
  let page = null;
  let pin = null;
  const nodes = [];
  if (cluster) {
    // Two relay nodes (both serving the page) sharing routing through a nats-server, with one
    // certificate between them (made here by openssl), which the link pins.
    const natsPort = await freePort();
    const natsConfig = join(base, "nats.conf");
    writeFileSync(natsConfig, `listen: 127.0.0.1:${natsPort}\nmax_payload: 8MB\n`);
    children.push(spawn("nats-server", ["-c", natsConfig], { stdio: "ignore" }));
    const [cert, key] = [join(base, "relay.pem"), join(base, "relay.key")];
    const made = spawnSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]);
    if (made.status !== 0) throw new Error(`openssl: ${made.stderr}`);
    pin = createHash("sha256").update(new X509Certificate(readFileSync(cert)).raw).digest("hex");
    await waitPort(natsPort);
    for (const name of ["a", "b"]) {
      const addr = name === "a" ? relay : `127.0.0.1:${await freePort()}`;
      const args = ["--cert", cert, "--key", key, "--serve-web", "--listen", addr, "--cluster", `nats://127.0.0.1:${natsPort}`];
      const child = spawn(relayBin, args, { env, stdio: ["ignore", "ignore", openSync(join(base, `relay-${name}.log`), "w")] });
      children.push(child);
      nodes.push({ addr, child });
      await waitPort(Number(addr.split(":")[1]));
    }
    hostArgs = ["serve", "--relay", nodes.map((n) => n.addr).join(","), "--relay-cert", pin];
  } else if (relayOf) {
    // Another host on the relay of an earlier world (`separateRelay`): one page for both.
    hostArgs = ["serve", "--relay", relay, "--relay-cert", relayOf.pin];
  } else if (separateRelay || pageElsewhere) {
    // With `pageElsewhere`, the relay serves no page: another server (a second relay binary,
    // used only for its web UI) serves it on an origin of its own, which the links name.
    const web = pageElsewhere ? [] : ["--serve-web"];
    const server = spawn(relayBin, ["--self-signed", ...web, "--listen", relay], { env, stdio: ["ignore", "pipe", openSync(join(base, "relay.log"), "w")] });
    children.push(server);
    pin = (await lines(server.stdout)(/SHA-256 [0-9a-f]{64}/)).match(/[0-9a-f]{64}/)[0];
    hostArgs = ["serve", "--relay", relay, "--relay-cert", pin];
    if (pageElsewhere) {
      page = `127.0.0.1:${await freePort()}`;
      const pages = spawn(relayBin, ["--self-signed", "--serve-web", "--listen", page], { env, stdio: ["ignore", "pipe", "ignore"] });
      children.push(pages);
      await lines(pages.stdout)(/SHA-256 [0-9a-f]{64}/);
      hostArgs.push("--page", page);
    }
  } else {
    hostArgs = ["up", "--no-pair", "--port", relay.split(":")[1]];
  }
  hostArgs.push("--host-name", hostName, "--settings", settings, ...sandbox, ...more);
  let host = null;
  // The host's log goes beside the workspace, for a failing test to look at.
  const log = openSync(join(base, "host.log"), "a");
  const launch = async () => {
    host = spawn(agentHost, hostArgs, { cwd: ws, env, stdio: ["pipe", "pipe", log] });
    children.push(host);
    await lines(host.stdout)(/^socket: /);
  };
  await launch();
  const world = {
    base,
    home,
    ws,
    env,
    relay,
    /** The separate relay's certificate pin, for another host to join it (`relayOf`). */
    pin,
    /** The relay nodes (`cluster`): `{ addr, child }` each, the first the page's. */
    nodes,
    /** Whether commands here run in the sandbox (else the host runs them unsandboxed). */
    sandboxed: sandbox.length === 0,
    /** Where the page is when it is not at the relay (`pageElsewhere`). */
    page,
    /** Stops the host (with `up`, its relay too); `signal` SIGKILL kills it. */
    stopHost: async (signal = "SIGINT") => {
      host.kill(signal);
      await exited(host);
    },
    /** Starts the host again, as it was. */
    startHost: launch,
    /** `agent-host ARGS` in the workspace, to its end. */
    agentHost: (args) => run(agentHost, args, { cwd: ws, env }),
    /** `agent-host ARGS`, still running. */
    spawnHost: (args) => {
      const child = spawn(agentHost, args, { cwd: ws, env });
      children.push(child);
      return child;
    },
    /** `remote --profile NAME ARGS`, still running; `done` resolves when it ends. */
    remote: (profile, args) => {
      const child = spawn(remoteBin, ["--profile", profile, ...args], { cwd: ws, env, stdio: ["ignore", "pipe", "pipe"] });
      children.push(child);
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.done = new Promise((resolve) => child.on("exit", (code) => resolve({ code, stdout, stderr })));
      return child;
    },
    /** `agent-host pair ARGS`: resolves to { link, child, line } once the link is printed. */
    offer: async (args) => {
      const child = spawn(agentHost, ["pair", ...args], { cwd: ws, env, stdio: ["pipe", "pipe", "inherit"] });
      children.push(child);
      const line = lines(child.stdout);
      const link = (await line(/https:\/\/\S+\/pair#/)).match(/https:\/\/\S+?(?='|$|\s)/)[0];
      return { link, child, line };
    },
    stop: () => {
      for (const child of children) child.kill();
    },
  };
  return world;
}
