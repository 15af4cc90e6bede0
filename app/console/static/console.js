// The Lethe console's only script (served by the API; the CSP allows no inline script).
// It localises dates, follows a job's live progress, and verifies certificates in the browser.
"use strict";

// -- dates: the viewer's time zone, with the UTC value kept on hover --------------------------
function localiseTimes(root) {
  // (dateStyle/timeStyle cannot be combined with timeZoneName, so the fields are spelled out.)
  const fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    timeZoneName: "short",
  });
  for (const el of root.querySelectorAll("time[datetime]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(at.getTime())) el.textContent = fmt.format(at);
  }
}

// -- live progress: the job's server-sent events, through the console's session ---------------
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

function followJob(box) {
  const url = box.dataset.events;
  if (!url || TERMINAL.has(box.dataset.state)) return;
  const source = new EventSource(url);
  const bar = document.getElementById("job-progress");
  const text = document.getElementById("job-progress-text");
  source.addEventListener("job", (ev) => {
    const job = JSON.parse(ev.data);
    const p = job.progress || {};
    document.getElementById("job-state").textContent = job.state;
    document.getElementById("job-phase").textContent = p.phase || "—";
    if (p.total) {
      bar.max = p.total;
      bar.value = p.step || 0;
      text.textContent = `${p.step || 0} / ${p.total}` +
        (p.eta_seconds ? ` · about ${Math.round(p.eta_seconds)} s left` : "");
    }
    box.dataset.state = job.state;
  });
  source.addEventListener("end", () => {
    source.close();
    // The verdict, the chart and the receipt exist now: show them.
    window.location.reload();
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) text.textContent = "Live updates stopped; reload the page.";
  });
}

// -- certificate verification (DSSE + Ed25519 + SHA-256), independent of the server ----------
const PAYLOAD_TYPE = "application/vnd.in-toto+json";
const enc = new TextEncoder();

function b64decode(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function hex(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

// DSSE's pre-authentication encoding: "DSSEv1 <len type> <type> <len body> <body>".
function pae(type, body) {
  const t = enc.encode(type);
  return concat(enc.encode(`DSSEv1 ${t.length} `), t, enc.encode(` ${body.length} `), body);
}

async function importPem(pem) {
  const b64 = pem.replace(/-----(BEGIN|END) PUBLIC KEY-----/g, "").replace(/\s+/g, "");
  const key = await crypto.subtle.importKey("spki", b64decode(b64), { name: "Ed25519" }, true, ["verify"]);
  // The key ID is the first 16 hex digits of SHA-256 over the raw 32-byte key.
  const raw = await crypto.subtle.exportKey("raw", key);
  const id = hex(await crypto.subtle.digest("SHA-256", raw)).slice(0, 16);
  return { key, id };
}

async function readJson(input) {
  return JSON.parse(await input.files[0].text());
}

async function verifyCertificate(envelope, keysDoc, modelBytes) {
  const checks = [];
  const check = (ok, text) => checks.push({ ok, text });
  check(envelope.payloadType === PAYLOAD_TYPE, `payload type is ${envelope.payloadType}`);
  let payload, statement;
  try {
    payload = b64decode(envelope.payload);
    statement = JSON.parse(new TextDecoder().decode(payload));
  } catch (e) {
    check(false, "the payload is not base64 JSON");
    return checks;
  }
  const keys = new Map();
  for (const k of keysDoc.items || []) {
    try {
      const { key, id } = await importPem(k.public_key_pem);
      keys.set(id, { key, claimed: k.key_id });
    } catch (e) {
      check(false, `public key ${k.key_id} is not an Ed25519 key this browser can read`);
    }
  }
  let tried = false;
  for (const sig of envelope.signatures || []) {
    const known = keys.get(sig.keyid);
    if (!known) continue;
    tried = true;
    let ok = false;
    try {
      ok = await crypto.subtle.verify({ name: "Ed25519" }, known.key, b64decode(sig.sig), pae(PAYLOAD_TYPE, payload));
    } catch (e) { ok = false; }
    check(ok, ok ? `Ed25519 signature by key ${sig.keyid} is valid`
                 : `the signature by key ${sig.keyid} does not match the payload`);
    if (ok) break;
  }
  if (!tried) check(false, "no signature by a known key");
  const subject = (statement.subject || [])[0] || {};
  const want = (subject.digest || {}).sha256;
  const got = hex(await crypto.subtle.digest("SHA-256", modelBytes));
  check(got === want, got === want
    ? `the file's SHA-256 ${got.slice(0, 16)}… is the certificate's subject`
    : `the file's SHA-256 is ${got.slice(0, 16)}… but the certificate is about ${String(want).slice(0, 16)}…`);
  const verdict = ((statement.predicate || {}).policy || {}).verdict;
  check(verdict === "pass", `the policy verdict is ${verdict}`);
  return checks;
}

function showResult(box, checks) {
  box.replaceChildren();
  const ok = checks.length > 0 && checks.every((c) => c.ok);
  const head = document.createElement("p");
  head.className = ok ? "ok" : "error";
  head.id = "verify-verdict";
  head.textContent = ok ? "Verified: the signature, the key and the file all check out."
                        : "Verification failed.";
  const list = document.createElement("ul");
  list.className = "checks";
  for (const c of checks) {
    const li = document.createElement("li");
    li.className = c.ok ? "ok" : "error";
    li.textContent = `${c.ok ? "✓" : "✗"} ${c.text}`;
    list.append(li);
  }
  box.append(head, list);
}

function setupVerify(form) {
  const box = document.getElementById("verify-result");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const model = document.getElementById("verify-model");
    const cert = document.getElementById("verify-cert");
    const keysIn = document.getElementById("verify-keys");
    if (!model.files.length) {
      showResult(box, [{ ok: false, text: "choose the model file to check" }]);
      return;
    }
    box.textContent = "Checking…";
    try {
      if (!window.crypto || !crypto.subtle) throw new Error("this browser has no WebCrypto here (it needs HTTPS)");
      const envelope = cert.files.length ? await readJson(cert)
        : JSON.parse(document.getElementById("envelope").textContent);
      const keysDoc = keysIn.files.length ? await readJson(keysIn)
        : await (await fetch("/v1/signing-keys", { credentials: "omit" })).json();
      const bytes = await model.files[0].arrayBuffer();
      showResult(box, await verifyCertificate(envelope, keysDoc, bytes));
    } catch (e) {
      showResult(box, [{ ok: false, text: `could not check: ${e.message}` }]);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localiseTimes(document);
  const job = document.getElementById("job");
  if (job) followJob(job);
  const form = document.getElementById("verify-form");
  if (form) setupVerify(form);
});
