// The drift feed page: asks for a reader token (kept in this tab's session
// storage, sent only as an Authorization header), then polls the API for
// new changes and the open drift. Every text from the server is set with
// textContent, never parsed as HTML.
"use strict";

const TOKEN = "driftwarden.token";
const FEED_ROWS = 500;
const FEED_EVERY_MS = 1500;
const DRIFT_EVERY_MS = 5000;

let cursor = null;
let timers = [];

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = cell instanceof Node ? cell : el("td", cell);
    tr.appendChild(td.tagName === "TD" ? td : wrap(td));
  }
  return tr;
}

function wrap(node) {
  const td = document.createElement("td");
  td.appendChild(node);
  return td;
}

function value(v) {
  return v === undefined ? "—" : JSON.stringify(v);
}

function verdictClass(verdict) {
  if (verdict.startsWith("drift")) return "verdict-drift";
  if (verdict === "unmanaged") return "verdict-unmanaged";
  return "verdict-ok";
}

function keyText(key) {
  return typeof key === "string"
    ? key
    : [key.cluster, key.group || "core", key.kind, key.namespace, key.name].join("/");
}

function actorText(actor) {
  if (!actor) return "unknown";
  if (actor.source === "audit") return actor.user + " (audit)";
  if (actor.source === "managed_fields") return actor.manager + " (claimed manager)";
  return "unknown";
}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN);
  const response = await fetch(path, { headers: { Authorization: "Bearer " + token } });
  if (response.status === 401 || response.status === 403) {
    signOut("The token was refused (" + response.status + ").");
    throw new Error("refused");
  }
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

function objectButton(key) {
  const button = el("button", key);
  button.type = "button";
  button.addEventListener("click", () => showTimeline(key));
  const td = wrap(button);
  td.className = "object";
  return td;
}

async function pollFeed() {
  if (cursor === null) {
    const head = await api("/v1/ledger");
    cursor = Math.max(0, head.seq - 1000);
  }
  const body = document.querySelector("#feed tbody");
  for (;;) {
    const page = await api("/v1/changes?limit=500&cursor=" + cursor);
    for (const change of page.changes) {
      const verdict = el("td", change.verdict, verdictClass(change.verdict));
      const actor = change.actor
        ? change.actor + " (" + change.actor_source + ")"
        : change.actor_source;
      const tr = row([
        el("td", change.seq),
        el("td", new Date(change.at).toLocaleString()),
        verdict,
        objectButton(change.key),
        el("td", actor),
        el("td", change.paths.join(", ")),
      ]);
      tr.dataset.seq = change.seq;
      body.insertBefore(tr, body.firstChild);
      cursor = change.seq;
    }
    while (body.rows.length > FEED_ROWS) body.deleteRow(body.rows.length - 1);
    if (page.next === null || page.next === undefined) break;
    cursor = page.next;
  }
  document.getElementById("status").textContent =
    "live, updated " + new Date().toLocaleTimeString();
}

async function pollDrift() {
  const view = await api("/v1/drift");
  const body = document.querySelector("#drift tbody");
  body.replaceChildren();
  for (const drift of view.drift) {
    body.appendChild(
      row([
        objectButton(keyText(drift.key)),
        el("td", drift.class),
        el("td", drift.change.path),
        el("td", value(drift.change.from)),
        el("td", value(drift.change.to)),
        el("td", actorText(drift.actor)),
      ])
    );
  }
  document.getElementById("drift-count").textContent = "(" + view.drift.length + ")";
}

async function showTimeline(key) {
  const history = await api("/v1/history?key=" + encodeURIComponent(key));
  document.getElementById("timeline-key").textContent = history.key;
  const list = document.getElementById("timeline-records");
  list.replaceChildren();
  for (const record of history.records) {
    const item = el("li");
    const body = record.body;
    const title = el("div");
    title.appendChild(el("strong", "#" + record.seq + " " + body.type));
    title.appendChild(el("span", " " + new Date(record.at).toLocaleString()));
    item.appendChild(title);
    const judgement = body.judgement;
    if (judgement) {
      // The verdict is flattened into the judgement: `verdict`, and for a
      // drift its `drift.kind`.
      const named = judgement.verdict;
      let verdict = typeof named === "string" ? named : named.verdict;
      const drift = judgement.drift || named.drift;
      if (drift) verdict += " (" + drift.kind + ")";
      item.appendChild(el("div", "verdict: " + verdict));
      item.appendChild(el("div", "actor: " + actorText(judgement.actor)));
      const diff = el("ul");
      for (const change of judgement.diff || []) {
        diff.appendChild(el("li", change.path + ": " + value(change.from) + " → " + value(change.to)));
      }
      item.appendChild(diff);
    } else if (body.outcome) {
      item.appendChild(el("div", "enforcement: " + JSON.stringify(body.outcome)));
    }
    list.appendChild(item);
  }
  document.getElementById("timeline").hidden = false;
}

function every(ms, task) {
  const run = () => task().catch((err) => {
    document.getElementById("status").textContent = "error: " + err.message;
  });
  run();
  timers.push(setInterval(run, ms));
}

function start() {
  document.getElementById("sign-in").hidden = true;
  document.getElementById("app").hidden = false;
  document.getElementById("sign-out").hidden = false;
  every(FEED_EVERY_MS, pollFeed);
  every(DRIFT_EVERY_MS, pollDrift);
  openLinked();
}

// Alerts link to `/#history=<key>`: show that object's timeline.
function openLinked() {
  const prefix = "#history=";
  if (location.hash.startsWith(prefix)) {
    showTimeline(decodeURIComponent(location.hash.slice(prefix.length))).catch((err) => {
      document.getElementById("status").textContent = "error: " + err.message;
    });
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN);
  timers.forEach(clearInterval);
  timers = [];
  cursor = null;
  document.getElementById("app").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("sign-in").hidden = false;
  document.getElementById("status").textContent = "not signed in";
  const error = document.getElementById("sign-in-error");
  error.textContent = message || "";
  error.hidden = !message;
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN, input.value.trim());
    input.value = "";
    start();
  });
  document.getElementById("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => {
    if (sessionStorage.getItem(TOKEN)) openLinked();
  });
  if (sessionStorage.getItem(TOKEN)) start();
});
