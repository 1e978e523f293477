// A push service on loopback for the tests, standing in for the browser vendor's: it takes
// RFC 8030 pushes over HTTPS (a certificate made for it with openssl, which the host is told
// to trust), checks each one's VAPID header (RFC 8292) with WebCrypto, and keeps the encrypted
// bodies. It also hands out subscriptions (an endpoint here and a P-256 key pair and secret
// made by WebCrypto, as a browser's push service would) and opens what was pushed to them as
// the browser would (RFC 8291, `aes128gcm`), so that a test can deliver the plaintext into
// Chromium's service worker through DevTools.

import { execFileSync } from "node:child_process";
import { createServer } from "node:https";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const subtle = globalThis.crypto.subtle;
const b64url = (bytes) => Buffer.from(bytes).toString("base64url");
const fromB64url = (text) => new Uint8Array(Buffer.from(text, "base64url"));
const utf8 = (text) => new TextEncoder().encode(text);
const concat = (...parts) => new Uint8Array(Buffer.concat(parts.map((x) => Buffer.from(x))));

/** A self-signed certificate for 127.0.0.1 (not a CA: it is its own trust anchor): `{ cert, key, certFile }`. */
export function loopbackCertificate() {
  const dir = mkdtempSync(join(tmpdir(), "push-service-"));
  const [certFile, keyFile] = [join(dir, "cert.pem"), join(dir, "key.pem")];
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
    "-keyout", keyFile, "-out", certFile, "-subj", "/CN=127.0.0.1",
    "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE",
    "-addext", "keyUsage=critical,digitalSignature", "-addext", "extendedKeyUsage=serverAuth",
  ], { stdio: "ignore" });
  return { cert: readFileSync(certFile), key: readFileSync(keyFile), certFile };
}

async function hkdf(salt, ikm, info, length) {
  const key = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  return new Uint8Array(await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, key, length * 8));
}

/**
 * Opens an `aes128gcm` push body (RFC 8291, section 3.4; RFC 8188) with the browser's key pair
 * (`privateKey` for ECDH, `publicKey` its 65 raw bytes) and authentication secret.
 */
export async function decryptPush(body, { privateKey, publicKey, auth }) {
  const salt = body.subarray(0, 16);
  const idlen = body[20];
  const asPublic = body.subarray(21, 21 + idlen);
  const ciphertext = body.subarray(21 + idlen);
  const their = await subtle.importKey("raw", asPublic, { name: "ECDH", namedCurve: "P-256" }, false, []);
  const shared = new Uint8Array(await subtle.deriveBits({ name: "ECDH", public: their }, privateKey, 256));
  const ikm = await hkdf(auth, shared, concat(utf8("WebPush: info\0"), publicKey, asPublic), 32);
  const cek = await hkdf(salt, ikm, utf8("Content-Encoding: aes128gcm\0"), 16);
  const nonce = await hkdf(salt, ikm, utf8("Content-Encoding: nonce\0"), 12);
  const key = await subtle.importKey("raw", cek, "AES-GCM", false, ["decrypt"]);
  const padded = new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce }, key, ciphertext));
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  if (padded[end] !== 2) throw new Error("not the last record's delimiter");
  return padded.subarray(0, end);
}

/** Checks an RFC 8292 `Authorization: vapid t=…, k=…` for `audience`; returns why not, or null. */
export async function vapidProblem(header, audience, nowS = Math.floor(Date.now() / 1000)) {
  const m = /^vapid t=([A-Za-z0-9_.-]+), k=([A-Za-z0-9_-]+)$/.exec(header ?? "");
  if (!m) return "no vapid authorization";
  const [head, claims, signature] = m[1].split(".");
  const key = await subtle.importKey("raw", fromB64url(m[2]), { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  const ok = await subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, fromB64url(signature), utf8(`${head}.${claims}`));
  if (!ok) return "the token's signature does not verify";
  const h = JSON.parse(Buffer.from(head, "base64url"));
  const c = JSON.parse(Buffer.from(claims, "base64url"));
  if (h.alg !== "ES256") return `alg ${h.alg}`;
  if (c.aud !== audience) return `aud ${c.aud}, not ${audience}`;
  if (!(c.exp > nowS && c.exp <= nowS + 24 * 3600)) return `exp ${c.exp}`;
  if (!/^(mailto|https):/.test(c.sub ?? "")) return `sub ${c.sub}`;
  return null;
}

/**
 * Starts the push service: `{ origin, subscribe(), pushes, next(endpoint), answer(status), close() }`.
 * `pushes` holds `{ endpoint, body, headers }` for every push taken; `answer(status)` makes it
 * answer the next pushes with that status instead (to refuse them).
 */
export async function startPushService() {
  const { cert, key, certFile } = loopbackCertificate();
  const pushes = [];
  const refused = [];
  const waiters = [];
  let status = 201;
  const server = createServer({ cert, key }, (req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const body = new Uint8Array(Buffer.concat(chunks));
      const problem = req.method !== "POST" ? "not a POST"
        : req.headers["content-encoding"] !== "aes128gcm" ? "not aes128gcm"
        : !req.headers.ttl ? "no TTL"
        : await vapidProblem(req.headers.authorization, service.origin);
      if (problem) {
        refused.push(problem);
        res.writeHead(401).end(problem);
        return;
      }
      if (status >= 300) {
        refused.push(`answered ${status}`);
        res.writeHead(status).end();
        return;
      }
      pushes.push({ endpoint: `${service.origin}${req.url}`, body, headers: req.headers });
      for (const w of waiters.splice(0)) w();
      res.writeHead(201).end();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  let n = 0;
  const service = {
    origin: `https://127.0.0.1:${server.address().port}`,
    certFile,
    pushes,
    refused,
    answer: (s) => (status = s),
    /** A new subscription: what a browser's `PushSubscription` holds, and its private half. */
    async subscribe() {
      const pair = await subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]);
      const publicKey = new Uint8Array(await subtle.exportKey("raw", pair.publicKey));
      const auth = crypto.getRandomValues(new Uint8Array(16));
      const endpoint = `${service.origin}/push/${++n}`;
      return { endpoint, p256dh: b64url(publicKey), auth: b64url(auth), keys: { privateKey: pair.privateKey, publicKey, auth } };
    },
    /** The next push to `endpoint` after the first `after` ones, within `ms`. */
    async next(endpoint, after, ms = 20000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const mine = pushes.filter((x) => x.endpoint === endpoint);
        if (mine.length > after) return mine[after];
        if (Date.now() > deadline) throw new Error(`no push to ${endpoint} (refused: ${JSON.stringify(refused)})`);
        await new Promise((r) => {
          waiters.push(r);
          setTimeout(r, 200);
        });
      }
    },
    close: () => server.close(),
  };
  return service;
}
