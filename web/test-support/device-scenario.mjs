// Run by test/device.test.js with the relay's certificate trusted (NODE_EXTRA_CA_CERTS): the browser
// device code pairs with a real host through its embedded relay, asks it to run a command, and
// approves an action asked at the host's terminal. Prints one line per step; exits non-zero on
// the first failure.

import { spawn } from "node:child_process";
import * as p from "../src/protocol.js";
import { Device, newKeyPair, pair, rawPublicKey } from "../src/device.js";
import { generateKeyPair } from "../src/noise.js";

const [link, agentHost] = process.argv.slice(2);
const parsed = p.parseLink(link);
const relayUrl = `wss://${parsed.relay}/ws`;
const binding = parsed.certSha256;
const keyPair = await newKeyPair();
if (keyPair.privateKey.extractable) throw new Error("the private key must not be extractable");

const channelKeyPair = await generateKeyPair();
const paired = await pair({ link: parsed, name: "browser test", relayUrl, binding, keyPair, channelKey: channelKeyPair.publicKey });
console.log(`paired as ${paired.role} with ${paired.hostName}`);

const device = new Device({
  relayUrl,
  binding,
  keyPair,
  publicKey: await rawPublicKey(keyPair),
  hostKey: parsed.hostKey,
  channel: { localStatic: channelKeyPair, remoteStatic: paired.hostChannelKey },
  state: paired.state,
});
const sync = Device.requestId();
await device.send("request", { type: "sync", id: sync });
const status = await device.next((m) => m.type === "status" && m.request === sync);
console.log(`status: role ${status.role}, ${status.pending} pending`);

const run = Device.requestId();
await device.send("request", { type: "action", id: run, action: { type: "run", argv: ["printf", "hi from %s", "the browser"], cwd: "." } });
const result = await device.next((m) => m.type === "action_result" && m.request === run);
console.log(`result: ${Buffer.from(p.fromBase64(result.output)).toString()} (exit ${result.exit_code})`);

// A command asked at the host's terminal, approved from this device.
const exec = spawn(agentHost, ["exec", "--", "touch", "approved-from-the-browser"], { stdio: "inherit" });
const pending = await device.next((m) => m.type === "action_pending");
if ((await p.actionHash(pending.action)) !== pending.action_hash) throw new Error("the host's hash does not match its action");
await device.send("decision", { request: pending.request, action_hash: pending.action_hash, verdict: "approve" });
const decided = await device.next((m) => m.type === "action_decided" && m.request === pending.request);
const code = await new Promise((resolve) => exec.on("exit", resolve));
console.log(`decided: ${decided.verdict}; the host's command exited ${code}`);
device.close();
process.exit(code === 0 && decided.verdict === "approve" ? 0 : 1);
