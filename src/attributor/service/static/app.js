// The browser page of `attributor serve`: one search box, POST /v1/query, the ranked
// training examples with scores and text, and the latency of each stage. Plain DOM, no
// library; every server string is shown with textContent (never parsed as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const STAGES = ["embed", "gradient", "search", "refine", "total"];

function headers() {
  const key = $("key").value.trim();
  const h = { "Content-Type": "application/json" };
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function call(method, path, body) {
  const response = await fetch(path, { method, headers: headers(), body: body ? JSON.stringify(body) : undefined });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const reason = data && data.error ? data.error : response.status + " " + response.statusText;
    if (response.status === 401 || response.status === 403) $("key-box").open = true;
    throw new Error(reason);
  }
  return data;
}

async function describe() {
  try {
    const info = await call("GET", "/v1/index");
    const kind = info.index && info.index.kind ? info.index.kind : "?";
    const fp = info.corpus && info.corpus.fingerprinter ? info.corpus.fingerprinter.kind : "?";
    $("index-info").textContent = `${info.rows.toLocaleString()} training examples · ${fp} fingerprints (${info.dim}-d) · ` +
      `${kind} index · generation ${info.generation}`;
    $("k").max = info.limits ? info.limits.max_top_k : 100;
  } catch (err) {
    $("index-info").textContent = "index description unavailable: " + err.message;
  }
}

function renderLatency(latency, serverMs) {
  const table = $("stages");
  table.replaceChildren();
  const total = Math.max(latency.total || 0, serverMs || 0, 1e-6);
  const rows = STAGES.filter((s) => s in latency).map((s) => [s, latency[s]]);
  rows.push(["server (request)", serverMs]);
  for (const [name, ms] of rows) {
    const tr = el("tr");
    tr.append(el("td", "", name), el("td", "ms", ms.toFixed(1) + " ms"));
    const barCell = el("td");
    const bar = el("div", "bar");
    bar.style.width = Math.max(2, Math.round(260 * ms / total)) + "px";
    barCell.append(bar);
    tr.append(barCell);
    table.append(tr);
  }
  $("latency").hidden = false;
}

function renderHits(hits) {
  const list = $("hits");
  list.replaceChildren();
  const top = hits.length ? Math.max(...hits.map((h) => Math.abs(h.score)), 1e-9) : 1;
  for (const hit of hits) {
    const li = el("li", "hit");
    li.dataset.id = hit.id;
    const head = el("div", "head");
    head.append(el("span", "rank", "#" + hit.rank), el("span", "score", "score " + hit.score.toFixed(4)),
                el("span", "score", "index " + hit.index_score.toFixed(4)), el("span", "id", "id " + hit.id));
    const bar = el("div", "scorebar");
    bar.style.width = Math.max(1, Math.round(100 * Math.abs(hit.score) / top)) + "%";
    const text = el("div", "text");
    if (hit.prompt) text.append(el("span", "prompt", hit.prompt));
    text.append(document.createTextNode(hit.text));
    li.append(head, bar, text);
    if (hit.meta && Object.keys(hit.meta).length) li.append(el("div", "meta", JSON.stringify(hit.meta)));
    list.append(li);
  }
  $("results-title").textContent = `Training examples (${hits.length})`;
  $("results").hidden = false;
}

async function search(event) {
  event.preventDefault();
  const text = $("q").value.trim();
  if (!text) return;
  showError("");
  $("go").disabled = true;
  document.body.dataset.state = "searching";
  try {
    const data = await call("POST", "/v1/query", { text, top_k: parseInt($("k").value, 10) || 10 });
    const result = data.results[0];
    renderLatency(result.latency_ms, data.server_ms);
    renderHits(result.hits);
    document.body.dataset.state = "done";
  } catch (err) {
    showError(err.message);
    document.body.dataset.state = "error";
  } finally {
    $("go").disabled = false;
  }
}

$("key").value = sessionStorage.getItem("attributor.key") || "";
$("key").addEventListener("change", () => { sessionStorage.setItem("attributor.key", $("key").value.trim()); describe(); });
$("search").addEventListener("submit", search);
describe();
