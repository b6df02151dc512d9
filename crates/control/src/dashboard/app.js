// The live service graph: polls api/graph every 2 s and draws it with SVG,
// callers on the left, the services they call and the workloads (versions)
// behind those to the right, each column one call deeper.
"use strict";

const POLL_MS = 2000;
const ERROR_RED = 0.05; // an edge with at least this share of failures is red
// Room between columns for the edges' labels.
const EDGE_GAP = 110, NODE_W = 140, SERVICE_W = 104, NODE_H = 40, GAP = 18, APP_PAD = 10, TOP = 30;
const SVG_NS = "http://www.w3.org/2000/svg";

let selected = null; // "namespace/name" of the service shown in the side panel
let lastOk = 0;

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function text(parent, x, y, str, cls) {
  const t = el("text", { x, y, class: cls || "" }, parent);
  t.textContent = str;
  return t;
}

function fmtRate(r) {
  if (r === 0) return "0";
  if (r < 0.1) return r.toFixed(2);
  if (r < 10) return r.toFixed(1);
  return Math.round(r).toString();
}

function fmtPct(x) {
  const p = x * 100;
  return (p > 0 && p < 1 ? p.toFixed(1) : Math.round(p)) + "%";
}

// Longest call depth from a node nobody calls (cycles are cut at N rounds).
function depths(nodes, edges) {
  const depth = new Map(nodes.map(n => [n.id, 0]));
  for (let round = 0; round < nodes.length; round++) {
    let changed = false;
    for (const e of edges) {
      const d = depth.get(e.source) + 1;
      if (d > depth.get(e.target) && d < nodes.length) {
        depth.set(e.target, d);
        changed = true;
      }
    }
    if (!changed) break;
  }
  return depth;
}

// Positions: columns by depth; in each column, workloads of one app are
// stacked together (its versions) inside an app box; order follows the
// callers' positions to keep lines short.
function layout(graph) {
  const byId = new Map(graph.nodes.map(n => [n.id, n]));
  const depth = depths(graph.nodes, graph.edges);
  const columns = [];
  for (const n of graph.nodes) {
    const d = depth.get(n.id);
    (columns[d] = columns[d] || []).push(n);
  }
  const pos = new Map();
  const boxes = [];
  let height = 0;
  // Each column as wide as its widest node.
  const colX = [20];
  for (let d = 0; d < columns.length; d++) {
    const w = Math.max(...(columns[d] || []).map(widthOf), SERVICE_W);
    colX.push(colX[d] + w + EDGE_GAP);
  }
  columns.forEach((col, d) => {
    if (!col) return;
    const callerY = n => {
      const ys = graph.edges.filter(e => e.target === n.id && pos.has(e.source)).map(e => pos.get(e.source).y);
      return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : 0;
    };
    // Groups: one per app (workloads), one per other node.
    const groups = new Map();
    for (const n of col) {
      const key = n.kind === "workload" && n.app ? `app:${n.namespace}/${n.app}` : n.id;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(n);
    }
    const ordered = [...groups.entries()].map(([key, members]) => {
      members.sort((a, b) => (a.version || a.name).localeCompare(b.version || b.name));
      const y = members.reduce((s, m) => s + callerY(m), 0) / members.length;
      return { key, members, y };
    }).sort((a, b) => a.y - b.y || a.key.localeCompare(b.key));
    let y = TOP;
    const x = colX[d];
    for (const g of ordered) {
      const boxed = g.key.startsWith("app:");
      if (boxed) y += 16;
      const top = y;
      for (const m of g.members) {
        pos.set(m.id, { x, y });
        y += NODE_H + (boxed ? 14 : 0);
      }
      if (boxed) {
        boxes.push({ label: g.members[0].app, x: x - APP_PAD, y: top - 18, w: NODE_W + 2 * APP_PAD, h: y - top + 18 + APP_PAD - 14 });
        y += APP_PAD;
      }
      y += GAP;
    }
    height = Math.max(height, y);
  });
  return { pos, boxes, width: colX[columns.length] - EDGE_GAP + 20, height: height + TOP, byId };
}

const widthOf = n => n && n.kind === "service" ? SERVICE_W : NODE_W;

// A point of the cubic curve from (x1, y1) to (x2, y2) whose control points
// are halfway across, at t (0..1).
function along(x1, y1, x2, y2, t) {
  const mx = (x1 + x2) / 2, u = 1 - t;
  const mid = 3 * u * u * t + 3 * u * t * t;
  return { x: u * u * u * x1 + mid * mx + t * t * t * x2, y: (u * u * u + 3 * u * u * t) * y1 + (3 * u * t * t + t * t * t) * y2 };
}

function edgeClass(e) {
  const cls = ["edge"];
  if (e.rps <= 0) cls.push("idle");
  else if (e.error_ratio >= ERROR_RED) cls.push("error");
  else if (e.error_ratio > 0) cls.push("degraded");
  else cls.push("ok");
  if (e.mtls !== "mutual_tls") cls.push("plain");
  return cls.join(" ");
}

function lockIcon(parent, x, y) {
  const g = el("g", { class: "lock", transform: `translate(${x},${y})` }, parent);
  el("rect", { x: 0, y: 4, width: 9, height: 7, rx: 1 }, g);
  el("path", { d: "M2 4 V2.5 a2.5 2.5 0 0 1 5 0 V4", fill: "none", stroke: "currentColor", "stroke-width": 1.4, class: "shackle" }, g);
  const t = el("title", {}, g);
  t.textContent = "mutual TLS";
  return g;
}

function draw(graph) {
  const svg = document.getElementById("graph");
  const { pos, boxes, width, height, byId } = layout(graph);
  // Scaled down to the window's width rather than scrolled.
  const room = document.getElementById("canvas").clientWidth - 8;
  const scale = Math.min(1, room / width);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width * scale);
  svg.setAttribute("height", Math.max(height, 200) * scale);
  svg.replaceChildren();
  const defs = el("defs", {}, svg);
  for (const [name, color] of [["ok", "#3a8f4b"], ["degraded", "#e08a00"], ["error", "#d12f2f"], ["idle", "#b4bcc6"]]) {
    const m = el("marker", { id: `arrow-${name}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", fill: color }, m);
  }
  for (const b of boxes) {
    el("rect", { class: "app-box", x: b.x, y: b.y, width: b.w, height: b.h, rx: 6 }, svg);
    text(svg, b.x + 6, b.y + 12, b.label, "app-label");
  }
  // What each service passed on, to show each version's share (the
  // traffic split; requests a caller's proxy failed itself never got there).
  const passed = new Map();
  for (const e of graph.edges) passed.set(e.source, (passed.get(e.source) || 0) + e.rps);
  const outOf = new Map(), inTo = new Map();
  for (const e of graph.edges) {
    outOf.set(e.source, (outOf.get(e.source) || 0) + 1);
    inTo.set(e.target, (inTo.get(e.target) || 0) + 1);
  }
  const edgeLayer = el("g", {}, svg);
  // Drawn over the nodes (appended again at the end).
  const labelLayer = el("g", {}, svg);
  for (const e of graph.edges) {
    const a = pos.get(e.source), b = pos.get(e.target);
    if (!a || !b) continue;
    const src = byId.get(e.source);
    const x1 = a.x + widthOf(src), y1 = a.y + NODE_H / 2, x2 = b.x - 2, y2 = b.y + NODE_H / 2;
    const cls = edgeClass(e);
    const state = cls.split(" ")[1];
    const attrs = {
      class: cls, "data-source": e.source, "data-target": e.target,
      "data-rps": e.rps, "data-error-ratio": e.error_ratio, "data-mtls": e.mtls,
      "data-p99": e.p99_ms == null ? "" : e.p99_ms, "data-total": e.total,
    };
    const g = el("g", attrs, edgeLayer);
    const mx = (x1 + x2) / 2;
    el("path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "marker-end": `url(#arrow-${state})` }, g);
    const title = el("title", {}, g);
    title.textContent = `${e.source} → ${e.target}\n${e.protocol}, ${fmtRate(e.rps)} req/s, ${fmtPct(e.error_ratio)} errors, ` +
      `p99 ${e.p99_ms == null ? "–" : e.p99_ms.toFixed(1) + " ms"}, mTLS: ${e.mtls}, ${e.total} requests so far\n` +
      Object.entries(e.codes).map(([c, r]) => `${c}: ${fmtRate(r)}/s`).join(", ");
    // The label where the edge is apart from its siblings: near the
    // targets of a fan-out, near the sources of a fan-in.
    const lines = [];
    if (e.rps > 0) {
      let first = `${fmtRate(e.rps)} rps`;
      if (src && src.kind === "service" && passed.get(e.source) > 0) first += ` (${fmtPct(e.rps / passed.get(e.source))})`;
      lines.push(first);
      const second = [];
      if (e.error_ratio > 0) second.push(`${fmtPct(e.error_ratio)} err`);
      if (e.p99_ms != null) second.push(`p99 ${e.p99_ms < 10 ? e.p99_ms.toFixed(1) : Math.round(e.p99_ms)} ms`);
      if (second.length) lines.push(second.join(" · "));
    } else {
      lines.push("idle");
    }
    // Fan-out: near the targets, which are apart; fan-in: just after the
    // sources, for the same reason; else halfway.
    const fanIn = outOf.get(e.source) <= 1 && inTo.get(e.target) > 1;
    const at = along(x1, y1, x2, y2, outOf.get(e.source) > 1 ? 0.7 : fanIn ? 0.2 : 0.5);
    const label = el("g", { class: `label ${state}` }, labelLayer);
    const top = at.y - 3 - (lines.length - 1) * 6;
    const lx = fanIn ? x1 + 16 : at.x;
    lines.forEach((l, i) => text(label, lx, top + i * 12, l, i ? "sub" : "").setAttribute("text-anchor", fanIn ? "start" : "middle"));
    if (e.mtls === "mutual_tls") {
      const box = label.getBBox();
      lockIcon(label, box.x - 12, box.y + 1);
    }
    g.dataset.label = lines.join(" ");
  }
  const proxiesOf = new Map();
  for (const p of graph.proxies) {
    const id = `workload:${p.namespace}/${p.workload}`;
    (proxiesOf.get(id) || proxiesOf.set(id, []).get(id)).push(p);
  }
  for (const n of graph.nodes) {
    const p = pos.get(n.id);
    if (!p) continue;
    const busy = graph.edges.some(e => (e.source === n.id || e.target === n.id) && e.rps > 0);
    const cls = ["node", n.kind];
    if (!busy) cls.push("idle");
    const key = `${n.namespace}/${n.name}`;
    if (n.kind === "service" && selected === key) cls.push("selected");
    const g = el("g", { class: cls.join(" "), "data-id": n.id, "data-name": n.name, "data-app": n.app, "data-version": n.version, "data-namespace": n.namespace }, svg);
    if (n.kind === "service") {
      const cx = p.x + SERVICE_W / 2, cy = p.y + NODE_H / 2;
      el("polygon", { points: `${p.x},${cy} ${cx},${p.y - 6} ${p.x + SERVICE_W},${cy} ${cx},${p.y + NODE_H + 6}` }, g);
      text(g, cx, cy + 4, n.name, "").setAttribute("text-anchor", "middle");
      g.addEventListener("click", () => { selected = key; refresh(); });
    } else {
      el("rect", { x: p.x, y: p.y, width: NODE_W, height: NODE_H, rx: 5 }, g);
      text(g, p.x + 8, p.y + 16, n.name);
      const sub = n.kind === "unknown" ? "unknown caller" : [n.version, n.namespace].filter(Boolean).join(" · ");
      text(g, p.x + 8, p.y + 31, sub, "sub");
      const proxies = proxiesOf.get(n.id) || [];
      const unsynced = proxies.filter(x => !x.connected || x.sync !== "SYNCED");
      if (unsynced.length) text(g, p.x + NODE_W - 8, p.y + 14, "⚠", "badge").setAttribute("text-anchor", "end");
    }
    const title = el("title", {}, g);
    title.textContent = n.kind === "service" ? n.host : `${n.namespace}/${n.name} (app ${n.app || "–"}, version ${n.version || "–"})`;
  }
  svg.appendChild(labelLayer);
  document.getElementById("empty").hidden = graph.edges.length > 0;
}

function drawProxies(proxies) {
  const body = document.querySelector("#proxies tbody");
  body.replaceChildren();
  for (const p of proxies.slice().sort((a, b) => a.id.localeCompare(b.id))) {
    const tr = document.createElement("tr");
    const sync = p.connected ? p.sync : "DISCONNECTED";
    for (const [value, cls] of [[p.id, ""], [p.kind, ""], [sync, p.connected ? `sync-${p.sync}` : "disconnected"]]) {
      const td = document.createElement("td");
      td.textContent = value;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    tr.title = [p.nack && `NACK: ${p.nack}`, p.scrape_error && `metrics: ${p.scrape_error}`].filter(Boolean).join("\n");
    body.appendChild(tr);
  }
}

function table(headers, rows) {
  const t = document.createElement("table");
  const head = t.createTHead().insertRow();
  for (const h of headers) {
    const th = document.createElement("th");
    th.textContent = h;
    head.appendChild(th);
  }
  const body = t.createTBody();
  for (const r of rows) {
    const tr = body.insertRow();
    for (const c of r) {
      const td = tr.insertCell();
      td.textContent = c;
      if (typeof c === "string" && /^[\d.]+( ms|%)?$/.test(c)) td.className = "num";
    }
  }
  return t;
}

function section(parent, title, content) {
  const h = document.createElement("h3");
  h.textContent = title;
  parent.appendChild(h);
  if (typeof content === "string") {
    const p = document.createElement("p");
    p.className = "note";
    p.textContent = content;
    parent.appendChild(p);
  } else {
    parent.appendChild(content);
  }
}

const MTLS = { mutual_tls: "yes", none: "no", partial: "partly", unknown: "?" };
const shortId = id => id.replace(/^workload:/, "").replace(/^service:/, "");
const ms = x => x == null ? "–" : `${x < 10 ? x.toFixed(1) : Math.round(x)} ms`;

// A trace id, linked to the tracing UI when trellisd has one (--tracing-url).
function traceCell(n) {
  if (!n.trace_id) return "–";
  if (!n.trace_url) return n.trace_id;
  const a = document.createElement("a");
  a.href = n.trace_url;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  a.textContent = n.trace_id;
  return a;
}

// Single requests a proxy kept (errors, slowest): what happened on one
// line, the ids to look them up by (tracing UI, access logs) on the next.
function requestsList(list) {
  // The answering workload; the service when none answered (the caller's proxy did).
  const to = n => n.destination_workload !== "unknown" ? n.destination_workload : n.destination_service.split(".")[0];
  const ul = document.createElement("ul");
  ul.className = "requests";
  for (const n of list) {
    const li = document.createElement("li");
    const what = document.createElement("div");
    const code = String(n.response_code) + (n.grpc_status != null ? ` grpc ${n.grpc_status}` : "") +
      (n.response_flags !== "-" ? ` ${n.response_flags}` : "");
    what.textContent = `${new Date(n.end_ms).toLocaleTimeString()} · ${n.source_workload} → ${to(n)} · ` +
      `${n.method} ${code} · ${ms(n.duration_ms)}` + (n.route ? ` · route ${n.route}` : "");
    const ids = document.createElement("div");
    ids.className = "ids";
    ids.append("trace ", traceCell(n), ` · request ${n.request_id}`);
    li.append(what, ids);
    ul.appendChild(li);
  }
  return ul;
}

async function drawDetail() {
  const box = document.getElementById("detail");
  if (!selected) { box.hidden = true; return; }
  const resp = await fetch(`api/service/${selected}`);
  const d = await resp.json();
  box.hidden = false;
  box.replaceChildren();
  const h = document.createElement("h2");
  h.textContent = `Service ${d.name || selected}`;
  box.appendChild(h);
  if (d.error) { section(box, "", d.error); return; }
  const p = document.createElement("p");
  p.className = "note";
  p.textContent = `${d.host} · ports ${(d.ports || []).map(x => `${x.port}${x.name ? "/" + x.name : ""}`).join(", ")}`;
  box.appendChild(p);
  section(box, "Versions", table(["workload", "version", "pods", "rps", "errors", "p99"],
    (d.versions || []).map(v => [v.workload, v.version || "–", String(v.pods.length), fmtRate(v.rps), fmtPct(v.error_ratio), ms(v.p99_ms)])));
  section(box, "Callers", (d.callers || []).length ? table(["from", "rps", "errors", "p99", "mTLS"],
    d.callers.map(c => [shortId(c.source), fmtRate(c.rps), fmtPct(c.error_ratio), ms(c.p99_ms), MTLS[c.mtls] || c.mtls])) : "none seen");
  section(box, "Failed requests", (d.failures || []).length ? table(["from", "code", "flags", "rps", "total"],
    d.failures.map(f => [shortId(f.source), String(f.response_code), f.response_flags, fmtRate(f.rps), String(f.total)])) : "none");
  section(box, "Recent errors", (d.recent_errors || []).length ? requestsList(d.recent_errors) : "none since this page was opened");
  section(box, `Slowest requests (last ${d.slowest_window_seconds || 60} s)`, (d.slowest || []).length ? requestsList(d.slowest) : "none yet");
  for (const [title, list] of [["VirtualServices", d.virtual_services], ["DestinationRules", d.destination_rules]]) {
    if (!list || !list.length) { section(box, title, "none applies"); continue; }
    for (const r of list) {
      const pre = document.createElement("pre");
      pre.textContent = JSON.stringify(r.spec, null, 2);
      const at = r.spec.gateways && r.spec.gateways.length ? ` (gateways: ${r.spec.gateways.join(", ")})` : "";
      section(box, `${title.slice(0, -1)} ${r.namespace}/${r.name}${at}`, pre);
    }
  }
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const resp = await fetch("api/graph", { cache: "no-store" });
    if (!resp.ok) throw new Error(`${resp.status} ${resp.statusText}`);
    const graph = await resp.json();
    draw(graph);
    drawProxies(graph.proxies);
    await drawDetail();
    lastOk = Date.now();
    const synced = graph.proxies.filter(p => p.connected && p.sync === "SYNCED").length;
    const rps = graph.edges.filter(e => byKind(graph, e.target) === "service").reduce((s, e) => s + e.rps, 0);
    status.textContent = `updated ${new Date().toLocaleTimeString()} · ${fmtRate(rps)} req/s over the last ${Math.round(graph.window_seconds)} s · ` +
      `${synced}/${graph.proxies.length} proxies synced` +
      (graph.metrics_source && graph.metrics_source !== "proxies" ? ` · metrics from ${graph.metrics_source}` : "") +
      (graph.metrics_error ? ` · cannot read it: ${graph.metrics_error}` : "");
    status.className = "";
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (err) {
    status.textContent = `cannot reach the control plane (${err.message}); last update ${lastOk ? new Date(lastOk).toLocaleTimeString() : "never"}`;
    status.className = "stale";
  }
}

function byKind(graph, id) {
  const n = graph.nodes.find(x => x.id === id);
  return n && n.kind;
}

refresh();
setInterval(refresh, POLL_MS);
